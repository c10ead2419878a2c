package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/rawconn"
)

// Session is one connection to one upstream, authenticated and ready for
// Send. It is not safe for concurrent use; use one Session per goroutine.
type Session struct {
	addr string
	opts Options
	up   config.Upstream

	raw  net.Conn // the TCP connection, under TLS
	c    *smtpConn
	tr   *tracer
	dead bool
	// A transaction failed: RSET before the next one.
	dirty bool
	// ahead is the next message's transaction, its commands already sent
	// behind the end of data of the message before (Message.Next): its
	// Send reads their replies.
	ahead *txn

	command, data time.Duration
	lastUsed      time.Time
	hostname      string
}

// Dial connects to up (its Password filled by config.LoadSecrets): TCP,
// TLS (STARTTLS or implicit), EHLO with opts.Hostname, AUTH. A failure is
// an *Error (returned as error) with Stage connect, tls, ehlo or auth.
//
// The defaults of up's unset fields (port, TLS mode, server name, SASL
// mechanisms) are config's: config.Load resolves them, and Dial applies
// the same config.Upstream.WithDefaults to an Upstream built by hand.
func Dial(ctx context.Context, up config.Upstream, opts Options) (*Session, error) {
	s, err := dial(ctx, up.WithDefaults(), opts)
	if err != nil {
		var re *Error
		if !errors.As(err, &re) {
			re = classify(StageConnect, err)
		}
		if re.Class == Permanent {
			// A refusal before any message (a 554 greeting, a 5xx to
			// EHLO or STARTTLS) is about the upstream or our settings,
			// never about one message: it must not bounce the queue.
			re.Class = Temporary
		}
		if ctx.Err() != nil && re.Code == 0 {
			re.Class, re.Err = Temporary, ctx.Err()
			re.Cause, re.Fix = "the delivery was cancelled (relayd is stopping)", ""
		}
		if s != nil {
			s.abort()
		}
		return nil, re
	}
	return s, nil
}

// isLoopback reports whether host names this machine: localhost or a
// loopback address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.EqualFold(host, "localhost.") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func configError(stage, cause, fix string) *Error {
	return &Error{Class: Temporary, Stage: stage, Cause: cause, Fix: fix, Err: errors.New(cause)}
}

func dial(ctx context.Context, up config.Upstream, opts Options) (*Session, error) {
	mode, port := up.TLS, up.Port
	connectT, command, data := opts.timeouts()
	if up.Host == "" {
		return nil, configError(StageConnect, "the upstream has no host", "set host in [[upstream]]")
	}
	addr := net.JoinHostPort(up.Host, strconv.Itoa(port))
	switch mode {
	case "starttls", "tls":
	case "none":
		if !isLoopback(up.Host) {
			return nil, configError(StageConnect, `tls = "none" is only allowed for a loopback upstream, and `+up.Host+" is not one",
				`set tls = "starttls" (or "tls" on port 465)`)
		}
		if up.Username != "" {
			e := configError(StageAuth, `credentials are configured but tls = "none": relayd never sends credentials in clear`,
				`set tls = "starttls" (or "tls"), or remove username for a loopback upstream that needs none`)
			e.Class = AuthFailure
			return nil, e
		}
	default:
		return nil, configError(StageConnect, fmt.Sprintf("unknown tls mode %q", up.TLS), `set tls = "starttls", "tls" or "none"`)
	}
	hostname := opts.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	if hostname == "" || strings.ContainsAny(hostname, " \t\r\n") {
		return nil, configError(StageEHLO, fmt.Sprintf("no usable host name for EHLO (%q)", hostname), "set hostname in the configuration")
	}
	var tlsConfig *tls.Config
	if mode != "none" {
		var err error
		if tlsConfig, err = TLSConfig(up, opts); err != nil {
			return nil, err
		}
	}

	dctx, cancel := context.WithTimeout(ctx, connectT)
	defer cancel()
	dialFn := opts.DialContext
	if dialFn == nil {
		d := &net.Dialer{}
		dialFn = d.DialContext
	}
	nc, err := dialFn(dctx, "tcp", addr)
	if err != nil {
		return nil, classify(StageConnect, err)
	}
	// The socket is read and written with raw system calls, which spare
	// the runtime's thread wake-ups (see package rawconn).
	nc = rawconn.Wrap(nc)
	s := &Session{addr: addr, opts: opts, up: up, command: command, data: data, hostname: hostname, raw: nc}
	if opts.Trace != nil {
		s.tr = newTracer(opts.Trace, addr)
	}
	c := newSMTPConn(nc, s.tr, command)
	s.c = c
	// Cancelling ctx aborts the dial (the handshake and commands block on
	// the connection, not on ctx).
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	switch mode {
	case "tls":
		tc := tls.Client(nc, tlsConfig)
		// The handshake is part of connecting (connect_timeout).
		nc.SetDeadline(time.Now().Add(connectT))
		if err := tc.HandshakeContext(ctx); err != nil {
			return s, certError(err, tlsConfig)
		}
		c.setTransport(tc)
		if err := c.greeting(); err != nil {
			return s, classify(StageEHLO, err)
		}
	case "starttls":
		// The greeting, EHLO and STARTTLS in clear text. A refusal
		// that is not about TLS is the greeting's or EHLO's (the
		// connect stage); anything else after the greeting is TLS's.
		if err := c.greeting(); err != nil {
			return s, GreetingError(mode, err)
		}
		preTLS := func(err error) *Error {
			var re *replyErr
			if errors.As(err, &re) && re.Code != 454 && !strings.Contains(strings.ToUpper(re.Message), "TLS") {
				return classify(StageConnect, err)
			}
			return classify(StageTLS, err)
		}
		if err := c.hello(hostname); err != nil {
			return s, preTLS(err)
		}
		if !c.has("STARTTLS") {
			return s, &Error{Class: Temporary, Stage: StageTLS, Err: errors.New("STARTTLS not offered"), Cause: CauseNoSTARTTLS, Fix: FixNoSTARTTLS}
		}
		tc, err := c.startTLS(nc, tlsConfig)
		if err != nil {
			return s, preTLS(err)
		}
		nc.SetDeadline(time.Now().Add(connectT))
		if err := tc.HandshakeContext(ctx); err != nil {
			return s, certError(err, tlsConfig)
		}
		c.setTransport(tc)
	default:
		if err := c.greeting(); err != nil {
			return s, classify(StageEHLO, err)
		}
	}
	// EHLO (again, after STARTTLS) with our name.
	if err := c.hello(hostname); err != nil {
		stage := StageEHLO
		var re *replyErr
		if mode == "starttls" && !errors.As(err, &re) {
			// TLS 1.3: a server's refusal of our certificate
			// arrives after the handshake, at the first read.
			stage = StageTLS
		}
		return s, classify(stage, err)
	}
	if mode != "none" {
		if st, ok := c.tlsState(); !ok || !st.HandshakeComplete {
			return s, &Error{Class: Temporary, Stage: StageTLS, Err: errors.New("TLS handshake not complete"),
				Cause: "the TLS handshake with the upstream did not complete"}
		}
	}
	if up.Username != "" {
		if err := s.auth(ctx); err != nil {
			return s, err
		}
	}
	s.lastUsed = time.Now()
	return s, nil
}

func init() { config.TLSFilesCheck = checkTLSFiles }

// checkTLSFiles is config.TLSFilesCheck: what TLSConfig refuses at every
// delivery (its words), for check-config, relayd's start and a reload.
func checkTLSFiles(caFile, cert, key string) (caErr, pairErr error) {
	check := func(up config.Upstream) error {
		_, err := TLSConfig(up, Options{})
		var e *Error
		if errors.As(err, &e) {
			return errors.New(e.Cause + "; " + e.Fix)
		}
		return err
	}
	if caFile != "" {
		caErr = check(config.Upstream{CAFile: caFile})
	}
	if cert != "" && key != "" {
		pairErr = check(config.Upstream{ClientCert: cert, ClientKey: key})
	}
	return caErr, pairErr
}

// TLSConfig is the TLS configuration of a session with up (its
// defaults applied): verified against opts.RootCAs, else up's ca_file,
// else the system roots, for up's server_name, TLS 1.2 or later, with
// up's client certificate if it has one. relayd doctor starts from it,
// so that it tests what relayd will do. Its error is an *Error naming
// the file at fault.
func TLSConfig(up config.Upstream, opts Options) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName: up.ServerName,
		MinVersion: tls.VersionTLS12,
	}
	switch {
	case opts.RootCAs != nil:
		cfg.RootCAs = opts.RootCAs
	case up.CAFile != "":
		pem, err := os.ReadFile(up.CAFile)
		if err != nil {
			return nil, configError(StageTLS, "cannot read ca_file: "+err.Error(), "check ca_file and that relayd's user can read it")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configError(StageTLS, "ca_file "+up.CAFile+" holds no PEM certificate", "point ca_file at the CA certificate (PEM)")
		}
		cfg.RootCAs = pool
	}
	if up.ClientCert != "" || up.ClientKey != "" {
		cert, err := tls.LoadX509KeyPair(up.ClientCert, up.ClientKey)
		if err != nil {
			return nil, configError(StageTLS, "cannot load the client certificate: "+err.Error(), "check client_cert and client_key")
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// auth runs SASL AUTH, only over a completed TLS handshake.
func (s *Session) auth(ctx context.Context) *Error {
	// Never in clear, whatever the config says (go-sasl's clients
	// would give the password to a clear connection if asked).
	if st, ok := s.c.tlsState(); !ok || !st.HandshakeComplete {
		e := configError(StageAuth, "refusing to send credentials over a connection without TLS", `set tls = "starttls" or "tls"`)
		e.Class = AuthFailure
		return e
	}
	mechs := s.up.Auth
	if !s.c.has("AUTH") {
		e := configError(StageAuth, "the upstream does not offer AUTH (after TLS), but credentials are configured",
			"check the upstream's port and SASL settings, or remove username if it needs none")
		e.Class = AuthFailure
		return e
	}
	client, mech, err := SASLClient(ctx, s.c, s.up, s.opts.SASL)
	if err != nil {
		return authError(err)
	}
	if client == nil {
		offered := s.c.ext["AUTH"]
		e := configError(StageAuth, fmt.Sprintf("no common SASL mechanism (we allow %s, the upstream offers %s)", strings.Join(mechs, " "), offered),
			"set auth in [[upstream]] to a mechanism the upstream offers (PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER)")
		e.Class = AuthFailure
		return e
	}
	if err := s.c.auth(client); err != nil {
		e := ClassifyAuth(mech, err)
		if e.Class == AuthFailure {
			// The upstream answered and refused the credentials.
			if r, ok := client.(Refusable); ok {
				r.Refused()
			}
		}
		return e
	}
	return nil
}

// AuthOffer is what SASLClient needs to know of a connection: whether the
// upstream offers a SASL mechanism (a Session's connection, or go-smtp's
// client in relayd doctor).
type AuthOffer interface {
	SupportsAuth(mech string) bool
}

// SASLClient chooses how to log in to the upstream c is connected to:
// the first mechanism of up.Auth (up with its defaults) that c offers,
// with the client saslFn (Options.SASL, may be nil) gives for it (an
// OAuth 2 token), else PLAIN, LOGIN or OAUTHBEARER with up's username and
// password. It returns no client when none of up.Auth is offered, and
// saslFn's error (no token to present). relayd's sessions and relayd
// doctor choose alike.
func SASLClient(ctx context.Context, c AuthOffer, up config.Upstream, saslFn func(context.Context, config.Upstream, string) (sasl.Client, error)) (sasl.Client, string, error) {
	for _, m := range up.Auth {
		m = strings.ToUpper(m)
		if !c.SupportsAuth(m) {
			continue
		}
		if saslFn != nil {
			cl, err := saslFn(ctx, up, m)
			if err != nil {
				return nil, "", err
			}
			if cl != nil {
				return cl, m, nil
			}
		}
		switch m {
		case sasl.Plain:
			return sasl.NewPlainClient("", up.Username, up.Password), m, nil
		case sasl.Login:
			return sasl.NewLoginClient(up.Username, up.Password), m, nil
		case sasl.OAuthBearer:
			return sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: up.Username, Token: up.Password, Host: up.Host, Port: up.Port}), m, nil
		}
	}
	return nil, "", nil
}

// authError is a failure of Options.SASL (no token to present): an
// AuthFailure, loud and never a bounce.
func authError(err error) *Error {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Stage: StageAuth, Err: err, Cause: "cannot prepare the SASL credentials: " + err.Error()}
	}
	e.Class, e.Stage = AuthFailure, StageAuth
	return e
}

func (s *Session) noop(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	defer stop()
	_, err := s.c.do("NOOP", 2)
	return err
}

// redial replaces a connection found closed with a new one to the same
// upstream.
func (s *Session) redial(ctx context.Context) *Error {
	s.abort()
	ns, err := Dial(ctx, s.up, s.opts)
	if err != nil {
		return err.(*Error)
	}
	*s = *ns
	return nil
}

// Upstream returns the upstream's host:port.
func (s *Session) Upstream() string { return s.addr }

// Alive reports whether the session can take another Send.
func (s *Session) Alive() bool { return !s.dead }

// Extension reports whether the upstream offers ext (after EHLO), and its
// parameters.
func (s *Session) Extension(ext string) (bool, string) {
	if s.dead {
		return false, ""
	}
	v, ok := s.c.ext[strings.ToUpper(ext)]
	return ok, v
}

// abort closes the connection without QUIT.
func (s *Session) abort() {
	s.dead = true
	if s.raw != nil {
		s.raw.Close()
	}
}

// quitWait bounds how long Close waits to send QUIT and for its reply:
// the session is over either way, and a worker that changes upstream,
// or relayd stopping, must not wait the command timeout for an upstream
// that does not answer.
const quitWait = 2 * time.Second

// Close says QUIT (within quitWait, or the command timeout if shorter)
// and closes the connection.
func (s *Session) Close() error {
	if s.dead {
		if s.raw != nil {
			s.raw.Close()
		}
		return nil
	}
	if s.ahead != nil {
		// The upstream may be reading message data (a 354 to the next
		// message's DATA): QUIT would be taken as data. Hang up; the
		// message was never ended, so the upstream has none of it.
		s.releaseAhead()
		s.abort()
		return nil
	}
	s.dead = true
	s.c.wt, s.c.rt = min(s.command, quitWait), min(s.command, quitWait)
	_, err := s.c.do("QUIT", 2)
	s.raw.Close()
	return err
}

var queuedAs = regexp.MustCompile(`(?i)\bqueued as ([A-Za-z0-9._@-]+)|\bid=([A-Za-z0-9._@-]+)|<([^<>@ ]+@[^<>@ ]+)> \[InternalId`)

// parseQueueID finds the upstream's queue id in the final reply: Postfix
// "queued as 4Xyz", Exim "id=1abc-...", Exchange "<...> [InternalId".
func parseQueueID(reply string) string {
	// Most replies name none of the three forms: found without the
	// regular expression (and its allocations), once per message. The
	// texts looked for have no k or s, whose case folding (?i) extends
	// beyond ASCII (K to U+212A, s to U+017F): what they miss, the
	// expression would not match either.
	if !containsFold(reply, "queued a") && !containsFold(reply, "id=") && !containsFold(reply, "> [internalid") {
		return ""
	}
	if !message.IsASCII(reply) {
		// (?i) folds beyond ASCII (s to U+017F, k to U+212A, in the
		// words and in the classes): the expression decides.
		m := queuedAs.FindStringSubmatch(reply)
		if m == nil {
			return ""
		}
		for _, g := range m[1:] {
			if g != "" {
				return strings.TrimRight(g, ".")
			}
		}
		return ""
	}
	// ASCII (every reply seen in practice): the expression's leftmost
	// match found by hand, without its allocations and its machine.
	for i := 0; i < len(reply); i++ {
		boundary := i == 0 || !isWordByte(reply[i-1])
		switch {
		case boundary && hasPrefixFold(reply[i:], "queued as "):
			if id := idRun(reply[i+len("queued as "):]); id != "" {
				return strings.TrimRight(id, ".")
			}
		case boundary && hasPrefixFold(reply[i:], "id="):
			if id := idRun(reply[i+len("id="):]); id != "" {
				return strings.TrimRight(id, ".")
			}
		case reply[i] == '<':
			if addr := internalID(reply[i+1:]); addr != "" {
				return strings.TrimRight(addr, ".")
			}
		}
	}
	return ""
}

// isWordByte is \b's notion of a word character (ASCII).
func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// hasPrefixFold reports whether s starts with prefix (ASCII, lower case),
// case ignored.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// idRun returns the longest prefix of s made of queue ID characters
// ([A-Za-z0-9._@-]).
func idRun(s string) string {
	i := 0
	for i < len(s) && (isWordByte(s[i]) || s[i] == '.' || s[i] == '@' || s[i] == '-') {
		i++
	}
	return s[:i]
}

// internalID returns the address of Exchange's "<addr> [InternalId" at
// the start of s (the "<" already taken), "" if s does not start so.
func internalID(s string) string {
	at := -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '@':
			if at >= 0 || i == 0 {
				return ""
			}
			at = i
		case '>':
			if at < 0 || i == at+1 || !hasPrefixFold(s[i:], "> [internalid") {
				return ""
			}
			return s[:i]
		case '<', ' ':
			return ""
		}
	}
	return ""
}

// containsFold reports whether s contains sub (ASCII, lower case), case
// ignored.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// validAddr reports whether a may be written into MAIL FROM or RCPT TO:
// no control character (message.HasControl, the check every door made
// before storing it) and no angle bracket.
func validAddr(a string) bool {
	return !message.HasControl(a) && !strings.ContainsAny(a, "<>")
}

// refine makes a refusal explained as "not authenticated" precise when
// this session did not authenticate at all (no username for the upstream,
// as with tls = "none"): the generic explanation cannot tell that apart
// from a sender the account may not use.
func (s *Session) refine(e *Error) *Error {
	if e == nil || s.up.Username != "" || (e.Cause != causeRelayDenied && e.Cause != causeAuthRequired) {
		return e
	}
	why := "no username is set for this upstream"
	if s.up.TLS == "none" {
		why = `tls = "none" and no username: relayd sent no credentials`
	}
	e.Cause = "the upstream refuses to relay for us because relayd did not authenticate (" + why + ")"
	e.Fix = `set username and password_file for this upstream, with tls = "starttls" (port 587) or "tls" (port 465): relayd authenticates only over TLS`
	return e
}

// Send delivers one message. It never returns a nil Result; see Result
// for the meaning of its fields. ctx cancels it (the connection is then
// closed and the session dead).
func (s *Session) Send(ctx context.Context, m *Message) *Result {
	res := &Result{Upstream: s.addr, Rcpts: make([]RcptResult, len(m.To))}
	for i, to := range m.To {
		res.Rcpts[i].Rcpt = to
	}
	fail := func(e *Error) *Result {
		if ctx.Err() != nil && e.Code == 0 {
			e.Class, e.Err = Temporary, ctx.Err()
			e.Cause, e.Fix = "the delivery was cancelled (relayd is stopping)", ""
		}
		res.Err = e
		for i := range res.Rcpts {
			if res.Rcpts[i].Err == nil {
				res.Rcpts[i].Err = e
			}
		}
		return res
	}
	// The commands of this message sent ahead (behind the previous
	// message's end of data), or of another: the session is then in a
	// state this Send cannot use, and is dropped (the message sent ahead
	// never got its data: the upstream has none of it).
	t := s.ahead
	if t != nil && (t.m != m || s.dead) {
		s.releaseAhead()
		t = nil
		s.abort()
	}
	s.ahead = nil
	if s.dead {
		return fail(&Error{Class: Temporary, Stage: StageConnect, Err: errors.New("session closed"), Cause: "the connection to the upstream is closed"})
	}
	if len(m.To) == 0 {
		return fail(&Error{Class: Permanent, Stage: StageMessage, Err: errors.New("no recipients"), Cause: "the message has no recipients"})
	}
	probe := s.opts.IdleProbe
	if probe <= 0 {
		probe = 10 * time.Second
	}
	if t == nil && time.Since(s.lastUsed) > probe {
		// The upstream may have closed an idle connection (Postfix: 300s):
		// find out now, and dial again, before the message is at stake.
		if err := s.noop(ctx); err != nil {
			if e := s.redial(ctx); e != nil {
				return fail(e)
			}
		}
	}
	defer func() { s.lastUsed = time.Now() }()
	stop := context.AfterFunc(ctx, func() { s.raw.Close() })
	defer stop()
	// netFail: the connection is unusable after this error.
	netFail := func(stage string, err error) *Result {
		s.abort()
		return fail(classify(stage, err))
	}

	c := s.c
	ahead := t != nil
	if t == nil {
		var e *Error
		if t, e = s.newTxn(m); e != nil {
			return fail(e)
		}
	}
	p, src, eightBit := t.p, t.src, t.eightBit
	defer src.release()
	for i, e := range t.refused {
		res.Rcpts[i].Err = e
	}
	lastRcptErr, rcpts := t.lastRcptErr, t.rcpts
	if len(rcpts) == 0 {
		res.Err = lastRcptErr
		return res
	}

	// With PIPELINING they go in groups and the replies are read in
	// order; without, one command, one reply. A group is as many commands
	// as fit in the write buffer — all of them but for a message with
	// hundreds of recipients — and the next group goes once every reply
	// to this one has been read: RFC 2920 section 3.1 wants each group
	// within the TCP window, or an upstream that answers each command as
	// it reads it blocks writing replies we do not read while we block
	// writing commands it does not read. next returns the reply to the
	// next command in cmds, writing the next group first when needed.
	pipelining := c.has("PIPELINING")
	c.rt = s.command
	cmds := t.cmds
	if s.dirty && !ahead {
		cmds = append([]string{"RSET"}, cmds...)
	}
	// A message held in memory (source.held) is made ready for the wire
	// (converted, dot-stuffed, ended) while the replies to the group that
	// ends with DATA are awaited, and goes in one write after the 354.
	var pre *rendered
	defer func() { pre.release() }()
	sent, answered := 0, 0
	if ahead {
		// The commands went out behind the previous message's end of
		// data: their replies are awaited now. (A Prepare since then
		// read the message again, for nothing.)
		if sc := m.scanned; sc != nil {
			m.scanned = nil
			if sc.src != nil {
				sc.src.release()
			}
		}
		sent = len(cmds)
		if m.Waiting != nil {
			m.Waiting()
		}
		pre = render(src, p, WireMode{EightBit: eightBit})
	}
	next := func() (reply, error) {
		if answered == sent {
			c.cmd(cmds[sent])
			sent++
			for pipelining && sent < len(cmds) && c.bw.Buffered()+len(cmds[sent])+2 <= writeBuf {
				c.cmd(cmds[sent])
				sent++
			}
			if err := c.flush(); err != nil {
				return reply{}, err
			}
			if m.Waiting != nil {
				m.Waiting()
			}
			if pre == nil && cmds[sent-1] == "DATA" {
				pre = render(src, p, WireMode{EightBit: eightBit})
			}
		}
		answered++
		return c.readReply()
	}
	// refused: a reply that is not what the command wants. 421: the
	// upstream closes the connection.
	refused := func(stage string, r reply) *Error {
		if r.code == 421 {
			s.abort()
		}
		return s.refine(classify(stage, r.err()))
	}
	// drain reads the replies left of the group sent when the
	// transaction failed (503 "bad sequence"; the session stays usable
	// after RSET); the commands not sent yet are not. An upstream that
	// answers DATA with 354 all the same gets an empty message ended at
	// once (RFC 2920 3.1), which it must refuse, having no recipient.
	drain := func() {
		for answered < sent && !s.dead {
			data := cmds[answered] == "DATA"
			r, err := next()
			if err == nil && r.code == 354 && data {
				c.traceData()
				c.cmd(".")
				if err = c.flush(); err == nil {
					r, err = c.readReply()
				}
			}
			if err != nil || r.code == 421 {
				s.abort()
			}
		}
	}

	if s.dirty && !ahead {
		r, err := next()
		if err == nil && r.code/100 != 2 {
			err = r.err()
			if r.code != 421 {
				// A refusal of RSET says nothing of the message (none of
				// it has gone out) and leaves the session in a state we
				// cannot know: it is dropped like a lost connection, and
				// the queue dials again at once (DeadSession). 421 is the
				// upstream going away, as at any stage.
				err = &Error{Class: Temporary, Stage: StageMail, Err: fmt.Errorf("RSET refused: %v", err),
					Cause: "the upstream refused RSET after a failed transaction; the session cannot be reused"}
			}
		}
		if err != nil {
			return netFail(StageMail, err)
		}
		s.dirty = false
	}
	r, err := next()
	if err != nil {
		return netFail(StageMail, err)
	}
	s.dirty = true
	if r.code/100 != 2 {
		e := refused(StageMail, r)
		drain()
		return fail(e)
	}
	accepted := 0
	for _, i := range rcpts {
		r, err := next()
		if err != nil {
			return netFail(StageRcpt, err)
		}
		if r.code/100 == 2 {
			accepted++
			continue
		}
		res.Rcpts[i].Err = refused(StageRcpt, r)
		lastRcptErr = res.Rcpts[i].Err
		if s.dead {
			return fail(lastRcptErr)
		}
	}
	if accepted == 0 {
		drain()
		res.Err = lastRcptErr
		return res
	}
	r, err = next()
	if err != nil {
		// Nothing of the message has gone out yet.
		return netFail(StageData, &beforeData{err})
	}
	if r.code != 354 {
		return fail(refused(StageData, r))
	}

	// The message, dot-stuffed, and the end of data in the same write as
	// its last bytes; each write within the data timeout, and so the
	// final reply.
	c.wt, c.rt = s.data, s.data
	defer func() { c.wt, c.rt = s.command, s.command }()
	var nextT *txn
	if pre != nil {
		c.traceData()
		c.bw.Write(pre.b.Bytes())
		// The next message's commands go behind the end of data, in the
		// same write (RFC 2920: the message is the first "command" of a
		// group): one round trip per message on a busy session.
		if nextT = s.nextTxn(m); nextT != nil {
			for _, cmd := range nextT.cmds {
				c.cmd(cmd)
			}
		}
		if err = c.flush(); err != nil {
			err = &writeError{err}
			if nextT != nil {
				nextT.src.release()
				nextT = nil
			}
		}
	} else {
		var wr io.ReadCloser
		wr, err = openWire(src, p, WireMode{EightBit: eightBit})
		if err != nil {
			// Mid-DATA there is no clean way back: drop the connection.
			s.abort()
			return fail(&Error{Class: Temporary, Stage: StageMessage, Err: err, Cause: "cannot read the queued message: " + err.Error()})
		}
		c.traceData()
		err = writeData(c.bw, wr)
	}
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return netFail(StageData, we.err)
		}
		s.abort()
		return fail(&Error{Class: Temporary, Stage: StageMessage, Err: err, Cause: "cannot read the queued message: " + err.Error()})
	}
	if m.Waiting != nil {
		m.Waiting()
	}
	// The next message's commands are out: its Send reads their replies
	// (should this session die first, that Send finds it dead).
	s.ahead = nextT
	r, err = c.readReply()
	if err != nil {
		return netFail(StageDataEnd, err)
	}
	s.dirty = false // the transaction is over either way
	if r.code/100 != 2 {
		return fail(refused(StageDataEnd, r))
	}
	res.Reply = strconv.Itoa(r.code) + " " + r.text
	res.QueueID = parseQueueID(r.text)
	return res
}

// txn is one message's transaction as Send writes it: the message
// scanned, the recipients that go out, and its commands (MAIL, one RCPT
// per recipient, DATA; RSET is Send's to add).
type txn struct {
	m        *Message
	p        *plan
	src      *source
	eightBit bool
	// rcpts indexes the recipients of m.To that go out; refused holds,
	// by index, those refused here (invalid addresses), lastRcptErr the
	// last of them.
	rcpts       []int
	refused     map[int]*Error
	lastRcptErr *Error
	cmds        []string
}

// newTxn scans m (or takes what Prepare found) and checks it against what
// the upstream offers. Its error is the message's failure: nothing is to
// be sent. A txn without rcpts has every recipient refused here.
func (s *Session) newTxn(m *Message) (*txn, *Error) {
	c := s.c
	// Scan the message: what it needs and what the upstream takes.
	var p *plan
	var src *source
	var err error
	if sc := m.scanned; sc != nil {
		m.scanned = nil
		p, src, err = sc.p, sc.src, sc.err
	} else {
		p, src, err = scanBody(m.Body)
	}
	if err != nil {
		return nil, &Error{Class: Temporary, Stage: StageMessage, Err: err, Cause: "cannot read the queued message: " + err.Error()}
	}
	t := &txn{m: m, p: p, src: src}
	fail := func(e *Error) (*txn, *Error) {
		src.release()
		return nil, e
	}
	eightBit, utf8Ok, dsn := c.has("8BITMIME"), c.has("SMTPUTF8"), c.has("DSN")
	t.eightBit = eightBit
	// With SMTPUTF8 offered, the addresses go as they are, and SMTPUTF8
	// is asked for when the message needs it. Without, each address is
	// made ASCII (idn.go): an IDN domain becomes its A-label, and an
	// address with a non-ASCII local part fails alone (5.6.7); headers
	// in raw UTF-8 go as 8-bit data, as they did before SMTPUTF8 (and as
	// Postfix sends them with smtputf8_enable = no), not bounced.
	from, to, copied := m.From, m.To, false
	needUTF8 := false
	if utf8Ok {
		needUTF8 = m.SMTPUTF8 || !message.IsASCII(m.From)
		for _, to := range m.To {
			needUTF8 = needUTF8 || !message.IsASCII(to)
		}
	} else if validAddr(from) {
		var e *Error
		if from, e = asciiAddr(StageMail, from); e != nil {
			return fail(e)
		}
	}
	if !eightBit && p.stuck8bit {
		return fail(&Error{Class: Permanent, Stage: StageMessage, Err: ErrStuck8bit,
			Cause: "the message has 8-bit bytes in a header (or another part that cannot be re-encoded) and the upstream does not offer 8BITMIME",
			Fix:   "encode non-ASCII header text (RFC 2047) in the sending program, or use an upstream that offers 8BITMIME"})
	}
	size := p.wireSize()
	if limit, ok := c.maxSize(); ok && size > limit {
		return fail(&Error{Class: Permanent, Stage: StageMessage, Err: fmt.Errorf("size %d > %d", size, limit),
			Cause: fmt.Sprintf("message too large for the upstream (%d bytes; it takes at most %d)", size, limit),
			Fix:   "lower max_message_size to the upstream's limit, or send large files another way"})
	}
	if !validAddr(m.From) {
		return fail(&Error{Class: Permanent, Stage: StageMail, Err: errors.New("invalid sender"), Cause: "the envelope sender contains control characters or angle brackets"})
	}
	// The recipients that go out; the others are refused here.
	t.rcpts = make([]int, 0, len(m.To))
	refuse := func(i int, e *Error) {
		if t.refused == nil {
			t.refused = map[int]*Error{}
		}
		t.lastRcptErr = e
		t.refused[i] = e
	}
	for i, rcpt := range m.To {
		if !validAddr(rcpt) || rcpt == "" {
			refuse(i, &Error{Class: Permanent, Stage: StageRcpt, Err: errors.New("invalid recipient"), Cause: "the recipient address is empty or contains control characters or angle brackets"})
			continue
		}
		if !utf8Ok && !message.IsASCII(rcpt) {
			a, e := asciiAddr(StageRcpt, rcpt)
			if e != nil {
				refuse(i, e)
				continue
			}
			if !copied {
				to, copied = append([]string(nil), m.To...), true
			}
			to[i] = a
		}
		t.rcpts = append(t.rcpts, i)
	}

	// The commands: MAIL FROM (BODY=8BITMIME whenever offered, SIZE,
	// SMTPUTF8, DSN's RET and ENVID), one RCPT TO per recipient (DSN's
	// NOTIFY), DATA.
	var buf [256]byte // on the stack: only the command's string is allocated
	mail := append(buf[:0], "MAIL FROM:<"...)
	mail = append(mail, from...)
	mail = append(mail, '>')
	if eightBit {
		mail = append(mail, " BODY=8BITMIME"...)
	}
	if c.has("SIZE") {
		mail = append(mail, " SIZE="...)
		mail = strconv.AppendInt(mail, size, 10)
	}
	if needUTF8 {
		mail = append(mail, " SMTPUTF8"...)
	}
	var notify string
	if dsn {
		switch r := strings.ToUpper(m.Ret); r {
		case "FULL", "HDRS":
			mail = append(mail, " RET="+r...)
		}
		if message.ValidEnvID(m.EnvID) {
			mail = append(mail, " ENVID="+xtext(m.EnvID)...)
		}
		if k := message.NotifyKeywords(m.Notify); len(k) > 0 {
			notify = " NOTIFY=" + strings.Join(k, ",")
		}
	}
	t.cmds = make([]string, 0, len(t.rcpts)+2)
	t.cmds = append(t.cmds, string(mail))
	for _, i := range t.rcpts {
		t.cmds = append(t.cmds, "RCPT TO:<"+to[i]+">"+notify)
	}
	t.cmds = append(t.cmds, "DATA")
	return t, nil
}

// aheadMax bounds the commands of the next message sent behind an end of
// data: they must fit in the write with it, well within the TCP window.
const aheadMax = 4 << 10

// nextTxn returns the transaction of the message to send after m on this
// session (m.Next), to send its commands behind m's end of data: only to
// an upstream that offers PIPELINING, for a message read and scanned
// ahead (Message.Prepare) that has recipients to send to and commands
// that fit in aheadMax. Otherwise nil, and m.Next is sent on its own.
func (s *Session) nextTxn(m *Message) *txn {
	n := m.Next
	if n == nil || n == m || n.scanned == nil || n.scanned.err != nil || len(n.To) == 0 || !s.c.has("PIPELINING") {
		return nil
	}
	sc := n.scanned
	t, e := s.newTxn(n)
	if e != nil {
		// The message's own failure: its Send finds it again.
		return nil
	}
	size := 0
	for _, cmd := range t.cmds {
		size += len(cmd) + 2
	}
	if len(t.rcpts) == 0 || size > aheadMax {
		// Sent on its own; what Prepare found is kept for that.
		n.scanned = sc
		return nil
	}
	return t
}

// releaseAhead drops the transaction sent ahead, if any.
func (s *Session) releaseAhead() {
	if s.ahead != nil {
		s.ahead.src.release()
		s.ahead = nil
	}
}
