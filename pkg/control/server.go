package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mailshim/mailshim/pkg/sockserve"
)

// RequestTimeout is how long a client has, once it has a slot, to send its
// whole request.
const RequestTimeout = 5 * time.Second

// maxRequest bounds a request (a verb and queue IDs).
const maxRequest = 1 << 20

// Peer is the process at the other end of a control connection, as the
// kernel reports it (SO_PEERCRED).
type Peer struct {
	PID, UID, GID int
	// Admin is true for root and the daemon's own user: they may use every
	// verb and see every message.
	Admin bool
}

// Handler answers one request, writing its output to out. An error is
// reported to the client.
type Handler func(p Peer, verb string, args []string, out io.Writer) error

// AdminOnly reports whether verb needs an admin peer.
func AdminOnly(verb string) bool {
	switch verb {
	case VerbMailq, VerbFlush:
		return false
	}
	return true
}

// peerOf returns the credentials of c's peer, as the control socket's Peer.
func peerOf(c *net.UnixConn) (Peer, error) {
	cred, err := sockserve.PeerCred(c)
	if err != nil {
		return Peer{}, err
	}
	uid := int(cred.Uid)
	return Peer{PID: int(cred.Pid), UID: uid, GID: int(cred.Gid), Admin: sockserve.Admin(uid)}, nil
}

// Server is the control socket's server.
type Server struct {
	Handler Handler
	// Limiter caps the requests served at once (sockserve.ControlLimiter
	// when nil).
	Limiter *sockserve.Limiter
	// Log reports accept errors, refused peers (at most one line a minute
	// of each) and throttled flushes. Nil: not logged.
	Log Reporter
}

// Reporter is what the control socket logs: relayd's *maillog.Logger has
// these methods (this package is linked into sendmail, which must not link
// the mail log, so it names only the methods).
type Reporter interface {
	// ControlAcceptFailed: accept(2) failed (EMFILE...) failures times
	// since the last report; the socket backs off.
	ControlAcceptFailed(err error, failures int)
	// ControlBusy: refused peers over the limits since the last report,
	// with the last one's key/value pairs (uid, pid).
	ControlBusy(refused int, peer ...any)
	// FlushThrottled: uid's flushes that came within FlushEvery of its
	// last and did nothing, refused of them since the last report (at
	// most one a minute per UID).
	FlushThrottled(uid, refused int)
}

// Serve accepts connections on ln until ctx is done or ln is closed. Accept
// errors (EMFILE...) are ridden out with a backoff; a peer over the limits
// is answered with an error. It returns nil after ctx is done, once every
// connection has been answered.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	lim := s.Limiter
	if lim == nil {
		lim = sockserve.ControlLimiter()
	}
	busy := &sockserve.RateLog{Log: func(n int, kv ...any) {
		if s.Log != nil {
			s.Log.ControlBusy(n, kv...)
		}
	}}
	gate := &flushGate{every: FlushEvery, log: s.Log}
	acceptFailed := func(err error, n int) {
		if s.Log != nil {
			s.Log.ControlAcceptFailed(err, n)
		}
	}
	sockserve.Serve(ctx, ln, acceptFailed, func(c *net.UnixConn) {
		defer c.Close()
		serveConn(ctx, c, s.Handler, lim, busy, gate)
	})
	return nil
}

// FlushEvery is how often a user who is neither root nor the daemon user
// may flush (their own mail): a flush sooner than that after the last one
// does nothing and is answered so (ErrThrottled; the messages the last
// one made due are being tried already), so that no user can make relayd
// retry their mail in a loop and hammer the upstream, to everyone's cost.
const FlushEvery = time.Minute

// flushGate remembers each non-admin UID's last flush, and its refused
// flushes for the log.
type flushGate struct {
	every time.Duration
	log   Reporter
	mu    sync.Mutex
	last  map[int]time.Time
	// refusals of each UID, logged at most once a minute (a flush in a
	// loop must not flood the log): when the last line was, and how many
	// refusals since.
	logged  map[int]time.Time
	refused map[int]int
}

// allow reports whether uid may flush now, and if so records it. A
// refusal is reported to the log (the first one of a UID at once, then
// at most one line a minute with the count since the last).
func (g *flushGate) allow(uid int, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[int]time.Time{}
		g.logged = map[int]time.Time{}
		g.refused = map[int]int{}
	}
	if t, ok := g.last[uid]; ok && now.Sub(t) < g.every {
		g.refused[uid]++
		if t, ok := g.logged[uid]; (!ok || now.Sub(t) >= time.Minute) && g.log != nil {
			g.log.FlushThrottled(uid, g.refused[uid])
			g.logged[uid], g.refused[uid] = now, 0
		}
		return false
	}
	if len(g.last) >= 4096 {
		for u, t := range g.last {
			if now.Sub(t) >= g.every && g.refused[u] == 0 {
				delete(g.last, u)
				delete(g.logged, u)
				delete(g.refused, u)
			}
		}
	}
	g.last[uid] = now
	return true
}

func serveConn(ctx context.Context, c *net.UnixConn, h Handler, lim *sockserve.Limiter, busy *sockserve.RateLog, gate *flushGate) {
	c.SetDeadline(time.Now().Add(Timeout))
	var a answer
	defer func() {
		b, _ := json.Marshal(a)
		c.Write(append(b, '\n'))
	}()
	p, err := peerOf(c)
	if err != nil {
		a.Error = err.Error()
		return
	}
	if err := lim.Acquire(ctx, p.UID); err != nil {
		busy.Note("uid", p.UID, "pid", p.PID)
		a.Error = "relayd is busy: " + err.Error()
		return
	}
	defer lim.Release(p.UID)
	// The request is one short line sent at once: a client that sends
	// nothing (or dribbles) is dropped after RequestTimeout, so that idle
	// connections do not hold the slots.
	c.SetReadDeadline(time.Now().Add(RequestTimeout))
	var req request
	if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
		a.Error = "bad request: " + err.Error()
		return
	}
	if AdminOnly(req.Verb) && !p.Admin {
		a.Denied = true
		a.Error = fmt.Sprintf("only root and the mailshim user may use %q (you are uid %d)", req.Verb, p.UID)
		return
	}
	if req.Verb == VerbFlush && !p.Admin && !gate.allow(p.UID, time.Now()) {
		a.Throttled = true
		// FlushEvery is a minute.
		a.Error = "not done: a user may flush once a minute, and your last flush was less than a minute ago; what it made due is being tried, the rest of your deferred mail at its scheduled time"
		return
	}
	var out bytes.Buffer
	if err := h(p, req.Verb, req.Args, &out); err != nil {
		a.Error = err.Error()
		var ue *UsageError
		a.Usage = errors.As(err, &ue)
	}
	a.Output = out.String()
}
