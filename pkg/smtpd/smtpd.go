// Package smtpd is relayd's loopback SMTP listener: the door for
// applications that speak SMTP to 127.0.0.1, [::1] or a Unix socket
// (PHPMailer, ActionMailer, WordPress SMTP plugins, swaks, smtplib) and
// that need no password, because the kernel says who is calling.
//
// # Identity
//
// Before the greeting, every connection is identified from the kernel,
// never from anything the client says:
//
//   - TCP: the peer must be an address of this host; the connection's
//     4-tuple is looked up in the kernel's socket table
//     (NETLINK_SOCK_DIAG, package sockdiag), which gives the owner UID and
//     inode of the client's own socket. Then /proc is scanned for the
//     process that holds that inode, for the advisory origin record
//     (executable, command line, working directory, systemd unit).
//   - Unix socket: SO_PEERCRED (UID and GID of the client); the process
//     is the holder of the client's socket (its inode from unix_diag),
//     looked for first at SO_PEERCRED's PID.
//
// What is read from /proc/PID is kept only if it is of a process that
// held the client's socket: a PID may go to another process between the
// search and the reading. Either the process's pidfd, kept open since
// before the search, still answers at the reading (the PID cannot have
// changed hands meanwhile: origin.Procs.ApplyHolder), or the process
// still holds the socket after the reading.
//
// A connection whose owner cannot be established — the client's socket is
// gone (a race) or lives in another network namespace, or the peer is not
// an address of this host — gets "421" and is closed, with a log line that
// says why; it is never guessed and never attributed to relayd's own user.
// A connection made by relayd itself (an upstream pointing back at the
// listener) is refused as a mail loop.
//
// # Credentials
//
// AUTH PLAIN and LOGIN are offered (also without TLS: the connection never
// leaves the host) and every username and password is accepted: the
// username is recorded as a claim (origin "smtp-auth-user"), the password
// is neither checked, stored nor logged. A username never changes the
// UID the message is recorded under, nor what the sender policy allows.
// Applications configured with the credentials of a hosting provider's
// SMTP service therefore keep working unchanged, and so do those with
// none. STARTTLS is offered when a certificate is configured.
//
// # The message
//
// MAIL FROM goes through the sender policy (a refusal is 553 5.7.1 with
// the reason); a RCPT TO over the caller's recipient limit
// (Intake.MaxRecipients, or Options.MaxRecipients when lower) gets 452
// 4.5.3, and the message goes to the recipients accepted before it; DATA is read with go-smtp's reader (only CRLF.CRLF ends
// it: a bare LF or CR before or after the dot is data), line ends become
// LF, Bcc: and Resent-Bcc: are removed, and the message goes through the
// same pipeline as the submission socket (submit.Prepare, submit.Intake):
// the same envelope checks, size limit, header completion, trace headers
// and durable store. "250" is sent only after the message is durable in
// relayd's queue (the store's group commit: one spool.Queue.SyncIDs, the
// fdatasync of the segments written and of the journal, for the sessions
// that reached the end of their data at about the same moment).
//
// Its Go API is not stable.
package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/rawconn"
	"github.com/mailshim/mailshim/pkg/sockdiag"
	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
)

// Defaults of Options.
const (
	DefaultCommandTimeout = 5 * time.Minute  // RFC 5321 4.5.3.2.7
	DefaultDataTimeout    = 10 * time.Minute // the whole DATA section
	DefaultIdleTimeout    = 3 * time.Minute  // RFC 5321 4.5.3.2.5, between data blocks
	DefaultSessionTimeout = time.Hour
	DefaultMaxLineLength  = 64 << 10
	// identifyTimeout bounds the identification of a connection.
	identifyTimeout = 10 * time.Second
	// scanLimit bounds the /proc scan for the client's process.
	scanLimit = 2 * time.Second
	// recheckLimit bounds the check that the process found still holds
	// the client's socket when it moved to another descriptor meanwhile
	// (not found within it: the process is not recorded).
	recheckLimit = 10 * time.Millisecond
	// maxPending bounds the connections being identified at once: more
	// are refused with 421 at once (a flood of connects costs no /proc
	// scans).
	maxPending = 128
	// keptProcs bounds the client processes whose /proc files are kept
	// open between connections (origin.Procs): 5 descriptors each (4 on
	// a kernel without PIDFD_GET_INFO).
	keptProcs = 32
)

// Options configure a Server.
type Options struct {
	// Hostname is used in the greeting and EHLO reply, and for a From:
	// added to a message without one.
	Hostname string
	// MaxMessageSize is advertised (SIZE) and enforced on the data as
	// sent (CRLF line ends); 0 for no limit.
	MaxMessageSize int64
	// MaxRecipients bounds RCPT TO per message (default
	// message.MaxRecipients, as for sendmail); the caller's own limit
	// (Intake.MaxRecipients) bounds it further.
	MaxRecipients int
	// MaxLineLength bounds every line, commands and data alike (default
	// DefaultMaxLineLength); a longer line ends the connection with 500.
	MaxLineLength int
	// TLS, if set, makes STARTTLS available.
	TLS *tls.Config
	// Timeouts; zero means the defaults above. CommandTimeout is the
	// wait for each command line (and each response write), DataTimeout
	// for the whole DATA section, IdleTimeout between bytes of it, and
	// SessionTimeout for the whole connection.
	CommandTimeout, DataTimeout, IdleTimeout, SessionTimeout time.Duration
	// Limiter caps the sessions served at once, globally and per UID
	// (nil: no cap).
	Limiter *sockserve.Limiter
	// Intake is the submission pipeline (shared with the submission
	// socket).
	Intake *submit.Intake
	// Log is the mail log (nil: nothing is logged).
	Log *maillog.Logger
}

func (o *Options) defaults() {
	or := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	or(&o.CommandTimeout, DefaultCommandTimeout)
	or(&o.DataTimeout, DefaultDataTimeout)
	or(&o.IdleTimeout, DefaultIdleTimeout)
	or(&o.SessionTimeout, DefaultSessionTimeout)
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = message.MaxRecipients
	}
	if o.Intake == nil {
		o.Intake = &submit.Intake{}
	}
}

// Server is the listener. Create it with New, call Serve for every
// listening socket, and Shutdown at the end.
type Server struct {
	opts     Options
	smtp     *smtp.Server
	queue    *chanListener
	ctx      context.Context
	cancel   context.CancelFunc
	pending  atomic.Int32
	busy     *sockserve.RateLog
	unknown  *sockserve.RateLog // connections refused because their owner is unknown
	connErrs *sockserve.RateLog // go-smtp's errors of single connections
	noProc   *sockserve.RateLog // the client's process not found
	recent   recentHolders      // the processes that held each user's last sockets
	users    userNames          // user names by UID
	budget   scanBudget         // each user's allowance of /proc scan time
	procs    *origin.Procs      // the /proc files of the last clients' processes, kept open
	selfPID  int
	// afterFind (tests) runs between finding the client's process and
	// reading it.
	afterFind func(pid int)

	mu    sync.Mutex
	lns   map[net.Listener]bool
	conns map[*conn]bool
	wg    sync.WaitGroup
	done  chan struct{} // closed when the go-smtp server has returned
}

// New returns a Server with opts.
func New(opts Options) *Server {
	opts.defaults()
	s := &Server{opts: opts, selfPID: os.Getpid(), procs: origin.NewProcs(keptProcs),
		lns: map[net.Listener]bool{}, conns: map[*conn]bool{}, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.busy = &sockserve.RateLog{Log: func(n int, kv ...any) {
		s.opts.Log.SMTPRefusedN("busy: too many connections", n, maillog.KV(kv...)...)
	}}
	// A client can open and reset connections faster than relayd looks
	// them up: each is refused, but only the first in a minute is logged
	// (with its reason), the others counted, so that no local user can
	// flood the log (and push other users' lines out of a rate-limited
	// journal).
	s.unknown = &sockserve.RateLog{Log: func(n int, kv ...any) {
		s.opts.Log.SMTPRefusedRepeat(maillog.KV(kv...), n)
	}}
	s.connErrs = &sockserve.RateLog{Log: func(n int, kv ...any) {
		s.opts.Log.SMTPConnErrors(maillog.KV(kv...), n)
	}}
	s.noProc = &sockserve.RateLog{Log: func(n int, kv ...any) {
		s.opts.Log.Warning("the client's process was not found; mail recorded under the socket owner's UID without it", nil, append([]slog.Attr{slog.Int("connections", n)}, maillog.KV(kv...)...)...)
	}}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageSize
	// The recipient limit is each session's (Session.Rcpt): the
	// caller's [policy] max_recipients or MaxRecipients, the lower.
	// go-smtp's MaxRecipients would be one limit for every connection,
	// and advertised as such in EHLO (LIMITS RCPTMAX, RFC 9422): a
	// promise of more than most callers may give. So none is
	// advertised, as Postfix advertises none, and a recipient over the
	// caller's limit gets 452 4.5.3 (RFC 5321 4.5.3.1.8), after which
	// clients send the rest in another transaction.
	srv.MaxRecipients = 0
	srv.MaxLineLength = opts.MaxLineLength
	// The connection never leaves this host, and the credentials are a
	// claim that is not checked: refusing AUTH without TLS would only
	// break clients configured with credentials when no certificate is.
	srv.AllowInsecureAuth = true
	srv.TLSConfig = opts.TLS
	srv.ReadTimeout = opts.CommandTimeout
	srv.WriteTimeout = opts.CommandTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = errorLog{s}
	s.smtp = srv
	s.queue = &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.smtp.Serve(s.queue)
	}()
	return s
}

// errorLog passes go-smtp's internal errors (a connection error, a
// panic in a session) to the log. A connection's own error ("error
// handling 127.0.0.1:port: ... connection reset by peer") is something
// every client can cause, as often as it can connect: the first in a
// minute is logged, the others counted (connErrs), so that no local user
// can flood the log.
type errorLog struct{ s *Server }

func (e errorLog) Printf(format string, v ...any) { e.log(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.log(fmt.Sprintln(v...)) }

func (e errorLog) log(msg string) {
	msg = strings.TrimSpace(msg)
	if strings.HasPrefix(msg, "error handling ") {
		e.s.connErrs.Note("error", msg)
		return
	}
	e.s.opts.Log.SMTPError(msg)
}

// chanListener hands identified connections to go-smtp's server.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "smtpd", Net: "unix"} }

// Serve accepts connections on ln until ln is closed or Shutdown is
// called. Temporary accept errors (EMFILE) are ridden out with a backoff.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.lns[ln] = true
	s.mu.Unlock()
	acc := &sockserve.Acceptor{Ln: ln, Log: func(err error, n int) {
		s.opts.Log.Error("SMTP listener accept failed; backing off", nil, slog.Int("failures", n), slog.String("error", err.Error()))
	}}
	for {
		c, err := acc.Accept(s.ctx)
		if err != nil {
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.admit(c)
		}()
	}
}

// refusal is a connection turned away before the greeting.
type refusal struct {
	reply  string // the SMTP reply
	reason string // the log line's reason
}

func (r *refusal) Error() string { return r.reason }

// admit identifies a new connection, takes a slot of the limiter for its
// UID, and hands it to go-smtp; or answers 421 and closes it.
func (s *Server) admit(raw net.Conn) {
	client := clientString(raw)
	reply := func(r *refusal) {
		raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(raw, r.reply+"\r\n")
		raw.Close()
	}
	refuse := func(r *refusal, kv ...any) {
		reply(r)
		s.opts.Log.SMTPRefused(client, r.reason, maillog.KV(kv...)...)
	}
	if s.pending.Add(1) > maxPending {
		s.pending.Add(-1)
		s.busy.Note("client", client)
		raw.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(raw, "421 4.7.0 "+s.opts.Hostname+" too many connections; try again later\r\n")
		raw.Close()
		return
	}
	raw.SetDeadline(time.Now().Add(identifyTimeout))
	id, err := s.identify(raw)
	if err != nil {
		s.pending.Add(-1)
		var r *refusal
		if !errors.As(err, &r) {
			r = &refusal{reply: "421 4.7.0 " + s.opts.Hostname + " cannot establish which local user is connecting; connection refused", reason: err.Error()}
		}
		reply(r)
		s.unknown.Note("client", client, "reason", r.reason)
		return
	}
	// Identified: from here the limiter bounds this connection (per UID,
	// its waiting included), so it no longer counts as pending — else a
	// few users' waiting sessions would fill maxPending and turn every
	// other user away before they are even identified.
	s.pending.Add(-1)
	if lim := s.opts.Limiter; lim != nil {
		if err := lim.Acquire(s.ctx, id.UID); err != nil {
			s.busy.Note("client", client, "uid", id.UID)
			raw.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(raw, "421 4.7.0 "+s.opts.Hostname+" too many connections; try again later\r\n")
			raw.Close()
			return
		}
	}
	release := func() {
		if s.opts.Limiter != nil {
			s.opts.Limiter.Release(id.UID)
		}
	}
	s.describe(raw, id)
	if id.PID == s.selfPID {
		release()
		refuse(&refusal{reply: "421 4.3.5 " + s.opts.Hostname + " mail loop: relayd connected to its own listener",
			reason: "mail loop: the connection comes from relayd itself (is an upstream set to this listener?)"}, "uid", id.UID)
		return
	}
	c := newConn(raw, id, time.Now().Add(s.opts.SessionTimeout), release, s)
	raw.SetDeadline(time.Time{})
	c.SetDeadline(c.hard)
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = true
	s.mu.Unlock()
	select {
	case s.queue.ch <- c:
	case <-s.ctx.Done():
		c.Close()
	}
}

func clientString(c net.Conn) string {
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort().String()
	case *net.UnixAddr:
		return "unix"
	}
	return c.RemoteAddr().String()
}

// Identity is who is on the other end of a connection.
type Identity struct {
	UID, GID int
	User     string
	PID      int    // the client's process, 0 when unknown
	Client   string // the peer: "127.0.0.1:54321", "[::1]:54321", "unix"
	inode    uint64 // the client's socket
	peerPID  int    // Unix socket: SO_PEERCRED's PID, a hint for the holder
	fd       int    // PID's descriptor that held the socket, -1 when not seen
	peerErr  error  // Unix socket: why the client's socket was not found
	// Origin holds the advisory fields of the client's process.
	Origin spool.Origin
	gidSet bool
}

// identify establishes the owner of raw's other end from the kernel.
func (s *Server) identify(raw net.Conn) (*Identity, error) {
	id := &Identity{Client: clientString(raw)}
	switch a := raw.RemoteAddr().(type) {
	case *net.TCPAddr:
		peer := a.AddrPort()
		la, ok := raw.LocalAddr().(*net.TCPAddr)
		if !ok {
			return nil, errors.New("no local address")
		}
		if !isLocalAddr(peer.Addr()) {
			return nil, &refusal{reply: "421 4.7.0 " + s.opts.Hostname + " only local clients are served",
				reason: "the peer " + peer.Addr().String() + " is not an address of this host"}
		}
		o, err := sockdiag.TCPOwner(peer, la.AddrPort())
		if err != nil {
			return nil, fmt.Errorf("the owner of the client's socket cannot be established: %w", err)
		}
		id.UID, id.inode = int(o.UID), o.Inode
	case *net.UnixAddr:
		uc, ok := raw.(*net.UnixConn)
		if !ok {
			return nil, errors.New("not a unix connection")
		}
		cred, err := sockserve.PeerCred(uc)
		if err != nil {
			return nil, err
		}
		// The kernel's UID and GID are the connecting process's. Its PID
		// is only where the search for the socket's holder starts (the
		// process may have handed the socket on and exited, and its PID
		// gone to another user's process): describe records a process
		// only while it holds the client's socket, found by its inode.
		id.UID, id.GID, id.gidSet, id.peerPID = int(cred.Uid), int(cred.Gid), true, int(cred.Pid)
		// (A client gone already leaves no socket to find: describe
		// counts that with the other processes not found.)
		id.inode, id.peerErr = sockdiag.UnixPeer(uc)
	default:
		return nil, fmt.Errorf("unsupported connection type %T", raw)
	}
	id.User = s.users.name(id.UID)
	return id, nil
}

// userNames caches origin.UserName per UID while /etc/passwd is
// unchanged (the same file, size, modification and change times: one
// stat(2) per connection instead of reading and scanning the file).
type userNames struct {
	mu   sync.Mutex
	file unix.Stat_t
	m    map[int]string
	// The file and its look-up (tests): /etc/passwd, origin.UserName.
	path   string
	lookup func(uid int) string
}

func (u *userNames) name(uid int) string {
	path, lookup := u.path, u.lookup
	if path == "" {
		path, lookup = "/etc/passwd", origin.UserName
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return lookup(uid)
	}
	u.mu.Lock()
	if u.m == nil || len(u.m) >= recentUIDs || !samePasswd(&st, &u.file) {
		u.m, u.file = map[int]string{}, st
	}
	name, ok := u.m[uid]
	u.mu.Unlock()
	if ok {
		return name
	}
	name = lookup(uid)
	var after unix.Stat_t
	u.mu.Lock()
	// Kept only if the file did not change while it was read.
	if unix.Stat(path, &after) == nil && samePasswd(&after, &st) && samePasswd(&st, &u.file) {
		u.m[uid] = name
	}
	u.mu.Unlock()
	return name
}

func samePasswd(a, b *unix.Stat_t) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}

// describe finds the client's process (TCP: the holder of the socket's
// inode) and records its advisory origin fields and GID.
func (s *Server) describe(raw net.Conn, id *Identity) {
	// Other users' /proc/PID/fd and links need capabilities that relayd
	// raises only for this scan, on its locked thread
	// (sockdiag.WithScanCaps), which meanwhile reads /proc and nothing
	// else.
	var h sockdiag.Holder
	sockdiag.WithScanCaps(func() {
		if id.inode == 0 {
			return
		}
		// Where this user's last sockets were held first (one readlink
		// each), then the scan, those processes first. (The mark comes
		// before any readlink that can find the socket: ApplyHolder.)
		mark := s.procs.Mark()
		slots := s.recent.get(id.UID)
		found := false
		for _, sl := range slots {
			if sockdiag.InSlot("", sl, id.inode) {
				h.PID, h.FD, found = sl.PID, sl.FD, true
				break
			}
		}
		if !found {
			var hint []int
			if id.peerPID > 0 {
				hint = append(hint, id.peerPID)
			}
			for _, sl := range slots {
				hint = append(hint, sl.PID)
			}
			// The scan's time comes out of the UID's budget (a client
			// whose socket is hard to find costs relayd up to scanLimit
			// of CPU per connection); past it only the first descriptors
			// of the hinted processes are tried.
			limit := s.budget.take(id.UID, time.Now())
			start := time.Now()
			h = sockdiag.FindHolder("", id.inode, uint32(id.UID), max(limit, time.Nanosecond), hint...)
			s.budget.refund(id.UID, limit-time.Since(start))
		}
		if h.PID == 0 && id.peerPID > 0 && id.peerPID != s.selfPID {
			// No holder found (without the capabilities another user's
			// descriptors cannot be read): SO_PEERCRED's process is
			// recorded if it is the client's user's (one reading of its
			// status) and still the process its pidfd, opened first,
			// names once it has been read: a PID gone to another
			// process meanwhile is not recorded.
			pfd, err := unix.PidfdOpen(id.peerPID, 0)
			if err != nil {
				return
			}
			defer unix.Close(pfd)
			var o spool.Origin
			gid, ok := s.procs.ApplyProcessOf(&o, id.peerPID, id.UID)
			if ok && !exited(pfd) {
				// (Not a descriptor seen to hold the socket: no slot.)
				id.PID, h.PID, h.FD, id.Origin = id.peerPID, id.peerPID, -1, o
				if gid >= 0 && !id.gidSet {
					id.GID, id.gidSet = gid, true
				}
			}
			return
		}
		id.PID = h.PID
		if id.PID > 0 && id.PID != s.selfPID {
			if s.afterFind != nil {
				s.afterFind(id.PID)
			}
			var o spool.Origin
			gid, same := s.procs.ApplyHolder(&o, id.PID, mark)
			// Read from /proc/PID: if the holder exited meanwhile and its
			// PID went to another process, that is what was read. It
			// counts if it is certainly of the process found holding the
			// socket (same: its pidfd, open since before the search,
			// still answered), else only if the process still holds the
			// socket (in the same descriptor, else in any, looked for
			// within recheckLimit: this walk is outside the user's scan
			// budget).
			if !same && !sockdiag.InSlot("", sockdiag.Slot{PID: h.PID, FD: h.FD}, id.inode) && !sockdiag.Holds("", id.PID, id.inode, recheckLimit) {
				id.PID, h.PID = 0, 0
				return
			}
			id.Origin = o
			if gid >= 0 && !id.gidSet {
				id.GID, id.gidSet = gid, true
			}
		}
	})
	id.fd = -1
	if id.inode != 0 && h.PID > 0 && h.FD >= 0 {
		id.fd = h.FD
		s.recent.put(id.UID, sockdiag.Slot{PID: h.PID, FD: h.FD}, true)
	}
	if id.inode != 0 && h.PID == 0 || id.peerErr != nil {
		kv := []any{"client", id.Client, "uid", id.UID}
		if id.peerErr != nil {
			kv = append(kv, "error", id.peerErr.Error())
		}
		if h.Denied > 0 {
			kv = append(kv, "unreadable", h.Denied, "fix", "reading other users' /proc/PID/fd needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (the shipped relayd.service grants them)")
		}
		if h.Partial {
			kv = append(kv, "partial", "time limit")
		}
		s.noProc.Note(kv...)
	}
	if !id.gidSet {
		// No process to ask: the primary group of the user, else the
		// kernel's overflow GID.
		if g := origin.PrimaryGID(id.UID); g >= 0 {
			id.GID = g
		} else {
			id.GID = 65534
		}
	}
}

// exited reports whether the process of pidfd has exited (its pidfd is
// readable then); an error counts as exited.
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err != nil || n > 0
	}
}

// scanBudget is each UID's allowance of /proc scan time, a token bucket:
// scanBurst at most, refilled at scanRefill per second. A scan takes its
// time limit out of it before it starts (so that concurrent connections
// share it) and gives back what it did not use. A client is normally
// found at once (a hint, or among its own user's processes, newest
// first); a user whose sockets are held where a scan runs to its limit
// (the oldest of many processes with many descriptors each) spends the
// budget, and then gets only the first batch of each hinted process's
// descriptors tried (sockdiag.FindHolder): its mail is recorded under
// its UID without the process, and it cannot make relayd spend a core
// per connection.
type scanBudget struct {
	mu sync.Mutex
	m  map[int]*scanBucket
}

type scanBucket struct {
	left time.Duration
	at   time.Time
}

const (
	scanBurst   = 4 * time.Second
	scanRefill  = 200 * time.Millisecond // per second
	scanBuckets = 4096
)

// take returns the time limit of a scan for uid (0: no time left) and
// takes it out of uid's budget.
func (b *scanBudget) take(uid int, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[int]*scanBucket{}
	}
	k := b.m[uid]
	if k == nil {
		if len(b.m) >= scanBuckets {
			// Forget the users whose budget is full again.
			for u, o := range b.m {
				if o.left+time.Duration(now.Sub(o.at).Seconds()*float64(scanRefill)) >= scanBurst {
					delete(b.m, u)
				}
			}
		}
		k = &scanBucket{left: scanBurst, at: now}
		b.m[uid] = k
	}
	k.left = min(scanBurst, k.left+time.Duration(now.Sub(k.at).Seconds()*float64(scanRefill)))
	k.at = now
	d := min(scanLimit, max(k.left, 0))
	k.left -= d
	return d
}

// refund gives back the part d of a scan's limit it did not use.
func (b *scanBudget) refund(uid int, d time.Duration) {
	if d <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if k := b.m[uid]; k != nil {
		k.left = min(scanBurst, k.left+d)
	}
}

// recentHolders remembers, per UID, where the last few client sockets
// were held (process and descriptor), so that a client that connects
// again (a PHP-FPM worker, a long-running app) is found with a readlink or
// two instead of a scan of /proc. A slot is only where to look first: the
// socket is always checked there.
//
// The slots whose connection has ended come first, then those of
// connections still open: the kernel gives a new socket the lowest free
// descriptor, which for a process that connects again and again is one
// its last closed connections freed. The ended slots are given process by
// process (the process of the most recently ended first), each process's
// lowest descriptor first: of the descriptors a process's ended
// connections freed, its next socket gets the lowest still free (a
// client with several connections at once, such as 8 parallel workers of
// one process, finds its next socket in the first slot or two instead of
// in any of the 16).
type recentHolders struct {
	mu   sync.Mutex
	slot map[int][]recentSlot
}

type recentSlot struct {
	sockdiag.Slot
	open bool // its connection is still being served
}

const (
	recentPerUID = 16
	recentUIDs   = 4096
)

func (r *recentHolders) get(uid int) []sockdiag.Slot {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.slot[uid]
	out := make([]sockdiag.Slot, 0, len(l))
	// The ended slots, by process in the order of each one's most
	// recently ended slot, each process's by descriptor (insertion:
	// there are at most recentPerUID).
	for _, e := range l {
		if e.open {
			break // (the ended slots come first)
		}
		i := len(out)
		for j := len(out) - 1; j >= 0; j-- {
			if out[j].PID == e.PID && out[j].FD > e.FD {
				i = j
			}
		}
		if i == len(out) {
			// After the process's other slots, if any.
			for j := len(out) - 1; j >= 0; j-- {
				if out[j].PID == e.PID {
					i = j + 1
					break
				}
			}
		}
		out = slices.Insert(out, i, e.Slot)
	}
	for _, e := range l[len(out):] {
		out = append(out, e.Slot)
	}
	return out
}

// put records sl as uid's latest slot: one whose connection is open
// (open) goes first among the open ones, one whose connection has just
// ended first of all.
func (r *recentHolders) put(uid int, sl sockdiag.Slot, open bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.slot[uid]; r.slot == nil || !ok && len(r.slot) >= recentUIDs {
		r.slot = map[int][]recentSlot{}
	}
	l := r.slot[uid]
	nl := make([]recentSlot, 0, min(len(l)+1, recentPerUID))
	added := false
	add := func() {
		if !added {
			nl = append(nl, recentSlot{Slot: sl, open: open})
			added = true
		}
	}
	if !open {
		add()
	}
	for _, e := range l {
		if e.Slot == sl {
			continue
		}
		if open && e.open {
			add()
		}
		if len(nl) < recentPerUID {
			nl = append(nl, e)
		}
	}
	if len(nl) < recentPerUID {
		add()
	} else if !added {
		// Full of closed slots: the newest open one replaces the last.
		nl[len(nl)-1] = recentSlot{Slot: sl, open: open}
	}
	r.slot[uid] = nl
}

// isLocalAddr reports whether a is an address of this host: loopback, or
// an address of one of its interfaces.
func isLocalAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// Shutdown stops accepting, closes the sessions that are not inside a
// DATA section at once, waits for the others until ctx is done, then
// closes whatever is left. A session cut short got no "250" for the
// message it was sending, so its client still has it.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.cancel()
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	s.queue.Close()
	s.wg.Wait() // admit goroutines
	// conns returns the sessions left, those inside DATA or not.
	conns := func(all bool) []*conn {
		s.mu.Lock()
		defer s.mu.Unlock()
		var l []*conn
		for c := range s.conns {
			if all || !c.inData.Load() {
				l = append(l, c)
			}
		}
		return l
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
wait:
	for {
		for _, c := range conns(false) {
			c.Close()
		}
		if len(conns(true)) == 0 {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			break wait
		}
	}
	for _, c := range conns(true) {
		c.Close()
	}
	s.smtp.Close()
	<-s.done
	s.procs.Close()
}

// conn is an identified connection. Its deadlines never go past the
// session's hard limit, and closing it gives back its limiter slot.
//
// What the session writes is held until it next reads, or closes, and
// then sent in one write: a server speaks only when it has read a
// command, and waits for the next one after its reply, so nothing is
// late, and a reply of many lines (EHLO's, written line by line by
// go-smtp) costs one write(2) and one wake-up of the client instead of
// one per line. (TLS records after STARTTLS are held the same way: the
// handshake also reads after it writes.)
type conn struct {
	net.Conn
	id      *Identity
	hard    time.Time
	release func()
	srv     *Server
	once    sync.Once
	inData  atomic.Bool

	wmu  sync.Mutex
	held []byte // written, not sent yet
}

// newConn wraps raw, identified as id. A socket is read and written with
// raw read(2)/write(2) (rawconn.Wrap): a raw call neither wakes the
// runtime's monitor (sysmon) nor has the calling thread's P handed to
// another thread, and those thread wake-ups are much of relayd's context
// switches under load.
func newConn(raw net.Conn, id *Identity, hard time.Time, release func(), srv *Server) *conn {
	return &conn{Conn: rawconn.Wrap(raw), id: id, hard: hard, release: release, srv: srv}
}

// Bounds of what a conn holds back: more is sent at once; and the time a
// Close gives held bytes to leave (a client that reads nothing must not
// stall a shutdown).
const (
	maxHeld      = 16 << 10
	closeFlushIn = 2 * time.Second
)

func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.held)+len(p) <= maxHeld {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if err := c.sendHeld(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// sendHeld writes what is held; c.wmu is held.
func (c *conn) sendHeld() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *conn) Read(p []byte) (int, error) {
	c.wmu.Lock()
	err := c.sendHeld()
	c.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *conn) capped(t time.Time) time.Time {
	if t.IsZero() || t.After(c.hard) {
		return c.hard
	}
	return t
}

func (c *conn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.capped(t)) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.capped(t)) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.capped(t)) }

func (c *conn) Close() error {
	// The last reply (QUIT's, a 421) leaves before the close. Another
	// goroutine's Close (Shutdown) while the session is sending does not
	// wait for it: the close ends that write.
	if c.wmu.TryLock() {
		if len(c.held) > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(closeFlushIn))
			c.sendHeld()
		}
		c.wmu.Unlock()
	}
	err := c.Conn.Close()
	c.once.Do(func() {
		if id := c.id; id != nil && id.PID > 0 && id.fd >= 0 {
			// The client's descriptor is about to be free (it closes
			// its end after our last reply): where its next socket is
			// likely to be.
			c.srv.recent.put(id.UID, sockdiag.Slot{PID: id.PID, FD: id.fd}, false)
		}
		c.release()
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
	})
	return err
}

// newSession is go-smtp's Backend: called at EHLO/HELO (again after
// STARTTLS).
func (s *Server) newSession(sc *smtp.Conn) (smtp.Session, error) {
	nc := sc.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*conn)
	if !ok {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "internal error"}
	}
	return &session{srv: s, sc: sc, c: c}, nil
}

// session is one SMTP session (from EHLO to QUIT, or to STARTTLS).
type session struct {
	srv     *Server
	sc      *smtp.Conn
	c       *conn
	tr      *submit.Transaction
	maxRcpt int // the recipients tr may have (set at MAIL)
	// rcptLogged: a refused RCPT of this transaction was logged (one
	// line per transaction: a client may send thousands).
	rcptLogged bool
	authUser   string
}

func (ss *session) Reset() { ss.tr = nil }

func (ss *session) Logout() error { return nil }

func smtpErr(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: submit.ReplyLine(msg)}
}

// replyText is e as the client reads it: "500 5.5.2 Line too long; ...",
// the enhanced status code included, for the log's reply=.
func replyText(e *smtp.SMTPError) string {
	c := e.EnhancedCode
	if c == smtp.EnhancedCodeNotSet {
		// go-smtp sends X.0.0 then (writeResponse).
		if k := e.Code / 100; k == 2 || k == 4 || k == 5 {
			c = smtp.EnhancedCode{k, 0, 0}
		}
	}
	if c == smtp.NoEnhancedCode || c == smtp.EnhancedCodeNotSet {
		return fmt.Sprintf("%d %s", e.Code, e.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, c[0], c[1], c[2], e.Message)
}

// smtpReply is the reply the submission pipeline chose (submit.SMTPReply:
// the one mapping of both SMTP servers) as go-smtp sends it.
func smtpReply(err error) *smtp.SMTPError {
	r := submit.SMTPReply(err)
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Status), Message: r.Text}
}

// origin is the origin record of a message of this session.
func (ss *session) origin() spool.Origin {
	id := ss.c.id
	o := id.Origin
	o.UID, o.GID, o.User = id.UID, id.GID, id.User
	o.Via = "smtp"
	o.Client = id.Client
	o.Helo = ss.sc.Hostname()
	o.AuthUser = ss.authUser
	o.Ignored = nil
	return o
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.tr != nil {
		// RFC 5321 4.1.4: a transaction ends with DATA, RSET, EHLO or
		// QUIT. go-smtp would keep the recipients it has counted (and
		// take DATA) while a new transaction here had none.
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "Error: nested MAIL command")
	}
	tr, err := submit.Mail(from)
	if err != nil {
		return smtpReply(err)
	}
	env := &tr.Env
	if opts != nil {
		switch opts.Body {
		case smtp.Body7Bit:
			env.BodyType = "7BIT"
		case smtp.Body8BitMIME:
			env.BodyType = "8BITMIME"
		case "":
		default:
			return smtpErr(555, smtp.EnhancedCode{5, 5, 4}, "Unsupported BODY parameter")
		}
		if opts.UTF8 {
			env.SMTPUTF8 = true
		}
		switch opts.Return {
		case smtp.DSNReturnFull:
			env.Ret = "FULL"
		case smtp.DSNReturnHeaders:
			env.Ret = "HDRS"
		}
		if opts.EnvelopeID != "" {
			if !message.ValidEnvID(opts.EnvelopeID) {
				return smtpErr(501, smtp.EnhancedCode{5, 5, 4}, "Bad ENVID parameter")
			}
			env.EnvID = opts.EnvelopeID
		}
	}
	o := ss.origin()
	if err := ss.srv.opts.Intake.CheckSender(&o, env.Sender); err != nil {
		ss.srv.opts.Log.SMTPSessionError(ss.c.id.Client, o.UID, o.User, ss.srv.opts.Intake.SentSender(&o, env.Sender), err.Error())
		return smtpReply(err)
	}
	ss.tr = tr
	ss.rcptLogged = false
	// The caller's own limit, resolved once per transaction (a reload
	// applies from the next).
	ss.maxRcpt = ss.srv.opts.MaxRecipients
	if n := ss.srv.opts.Intake.MaxRecipients(&o); n > 0 && n < ss.maxRcpt {
		ss.maxRcpt = n
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.tr == nil {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "Need MAIL command")
	}
	notify := ""
	if opts != nil && len(opts.Notify) > 0 {
		n := make([]string, len(opts.Notify))
		for i, v := range opts.Notify {
			n[i] = string(v)
		}
		// go-smtp checked the keywords; the stored form is package message's.
		notify, _ = message.ParseNotify(strings.Join(n, ","))
	}
	if err := ss.tr.Rcpt(to, notify, ss.maxRcpt); err != nil {
		if !ss.rcptLogged {
			ss.rcptLogged = true
			why := fmt.Sprintf("recipient refused: %s; later refusals of this transaction are not logged", submit.ReplyLine(err.Error()))
			if errors.Is(err, submit.ReplyTooManyRecipients) {
				limit := fmt.Sprintf("the limit of %d recipients per message", ss.maxRcpt)
				if len(ss.tr.Env.Recipients) < ss.maxRcpt {
					limit = fmt.Sprintf("the limit of %d bytes of recipient addresses per message", message.MaxRecipientBytes)
				}
				why = "recipient over " + limit + " refused (452 4.5.3), the message goes to those accepted; later refusals of this transaction are not logged"
			}
			o := ss.origin()
			ss.srv.opts.Log.SMTPSessionError(ss.c.id.Client, o.UID, o.User, ss.srv.opts.Intake.SentSender(&o, ss.tr.Env.Sender), why, slog.String("to", to))
		}
		return smtpReply(err)
	}
	return nil
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

// Auth accepts every username and password: the username is recorded as
// a claim, the password is dropped unseen.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			ss.authUser = claim(username)
			return nil
		}), nil
	case sasl.Login:
		return &loginServer{done: func(username string) { ss.authUser = claim(username) }}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// claim bounds a claimed username for the record.
func claim(u string) string {
	if len(u) > 256 {
		u = u[:256]
	}
	return u
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login): "Username:", then "Password:".
type loginServer struct {
	step     int
	username string
	done     func(username string)
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if len(response) > 0 {
			// An initial response is the username.
			l.username = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		l.username = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		l.done(l.username)
		return nil, true, nil
	}
	return nil, false, errors.New("unexpected response")
}

// dataReader sets the connection's read deadline before every read of the
// DATA section: IdleTimeout from now, never past the section's hard limit.
type dataReader struct {
	r    io.Reader
	c    net.Conn
	idle time.Duration
	hard time.Time
	err  error
}

func (d *dataReader) Read(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	if d.hard.Before(dl) {
		dl = d.hard
	}
	d.c.SetReadDeadline(dl)
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.err = err
	}
	return n, err
}

func (ss *session) Data(r io.Reader) error {
	if ss.tr == nil {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "Need MAIL command")
	}
	growStack()
	ss.c.inData.Store(true)
	defer ss.c.inData.Store(false)
	opts := &ss.srv.opts
	dr := &dataReader{r: r, c: ss.sc.Conn(), idle: opts.IdleTimeout, hard: time.Now().Add(opts.DataTimeout)}
	// CRLF becomes LF (the spool's line end); a bare CR or LF is kept as
	// data. go-smtp's reader has already ended the section at CRLF.CRLF
	// only and removed the dot-stuffing.
	rd := dataReaders.Get().(*dataReaderBufs)
	defer rd.put()
	rd.mr.Reset(dr, true)
	rd.br.Reset(rd.mr)
	br := rd.br
	env := ss.tr.Env
	env.Recipients = append([]string(nil), ss.tr.Env.Recipients...)
	o := ss.origin()
	fail := func(err error) error {
		e := reply(err, dr.err, opts.MaxMessageSize)
		if errors.Is(dr.err, smtp.ErrDataReset) {
			// go-smtp ended a BDAT transfer before BDAT LAST: RSET,
			// EHLO or STARTTLS, the connection closed, or a chunk over
			// max_message_size, which go-smtp answers 552 itself. It
			// answers (or not) what ended it, never this reply, and
			// does not say which it was.
			ss.srv.opts.Log.SMTPSessionError(ss.c.id.Client, o.UID, o.User, opts.Intake.SentSender(&o, env.Sender),
				"the BDAT transfer ended before BDAT LAST (RSET or EHLO, the connection closed, or a chunk over max_message_size, answered 552); not stored",
				slog.Int("nrcpt", len(env.Recipients)))
			return e
		}
		ss.srv.opts.Log.SMTPSessionError(ss.c.id.Client, o.UID, o.User, opts.Intake.SentSender(&o, env.Sender), submit.ReplyLine(err.Error()),
			slog.Int("nrcpt", len(env.Recipients)), slog.String("reply", replyText(e)))
		return e
	}
	limit := message.MaxHeader
	if opts.MaxMessageSize > 0 && opts.MaxMessageSize < int64(limit) {
		limit = int(opts.MaxMessageSize)
	}
	h, err := message.ReadHeader(br, limit)
	if err != nil {
		return fail(err)
	}
	// Recipients are the envelope's: a Bcc: left in the header would show
	// them to everyone.
	message.RemoveBcc(h)
	hdr, err := submit.Prepare(&env, &o, h, br, opts.Hostname)
	if err != nil {
		return fail(err)
	}
	m := &spool.Meta{Version: spool.Version, Env: env, Origin: o}
	id, err := opts.Intake.Submit(m, &headerBody{hdr: hdr, body: br})
	if err == nil && dr.err != nil {
		// Cannot be: a store reads its body to the end. Never answer 250
		// for a message whose end was not seen.
		err = dr.err
	}
	if err != nil {
		return fail(err)
	}
	// From here on the message is durable in relayd's queue. go-smtp
	// answers a Data error that is an *SMTPError with its code: this is
	// how the reply names the queue ID.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// dataReaderBufs are the buffers a session reads a message's data
// through: the line-end normalisation's and the header reader's. They are
// reused from message to message (dataReaders) instead of allocated
// (128 KB) for each.
type dataReaderBufs struct {
	mr *message.Reader
	br *bufio.Reader
}

var dataReaders = sync.Pool{New: func() any {
	return &dataReaderBufs{mr: message.NewReader(nil, true), br: bufio.NewReaderSize(nil, 64<<10)}
}}

// put returns d to the pool, holding nothing of the session.
func (d *dataReaderBufs) put() {
	d.br.Reset(nil)
	d.mr.Reset(nil, true)
	dataReaders.Put(d)
}

// headerBody is the message as it is stored: the prepared header, then
// the rest of the data. (io.MultiReader's WriteTo would allocate a 32 KB
// buffer per message; the readers here write from their own.)
type headerBody struct {
	hdr  []byte
	body *bufio.Reader
}

func (h *headerBody) Read(p []byte) (int, error) {
	if len(h.hdr) > 0 {
		n := copy(p, h.hdr)
		h.hdr = h.hdr[n:]
		return n, nil
	}
	return h.body.Read(p)
}

func (h *headerBody) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(h.hdr) > 0 {
		n, err := w.Write(h.hdr)
		total += int64(n)
		h.hdr = h.hdr[n:]
		if err != nil {
			return total, err
		}
	}
	n, err := h.body.WriteTo(w)
	return total + n, err
}

// reply is the SMTP reply for a message that was not stored: err from
// the pipeline, readErr the error reading the client's data, if any,
// maxSize the size limit. A failure to read the data is this door's own;
// a refusal of the pipeline is answered as every SMTP door answers it
// (submit.SMTPReply). Data over the limit as sent (go-smtp's reader) is
// answered as over the limit as stored: 552 5.3.4 naming the limit.
func reply(err, readErr error, maxSize int64) *smtp.SMTPError {
	if errors.Is(err, smtp.ErrDataTooLarge) || errors.Is(readErr, smtp.ErrDataTooLarge) {
		return smtpReply(&submit.SizeError{Limit: maxSize})
	}
	if readErr != nil {
		var ne net.Error
		if errors.As(readErr, &ne) && ne.Timeout() {
			return smtpErr(451, smtp.EnhancedCode{4, 4, 2}, "Timeout reading the message; not stored")
		}
		if errors.Is(readErr, smtp.ErrTooLongLine) {
			return smtpErr(500, smtp.EnhancedCode{5, 5, 2}, "Line too long; message not stored")
		}
		return smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Error reading the message; not stored")
	}
	return smtpReply(err)
}
