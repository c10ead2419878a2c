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
	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/message"
)

// Session is one connection to one upstream, authenticated and ready for
// Send. It is not safe for concurrent use; use one Session per goroutine.
type Session struct {
	addr string
	opts Options
	up   config.Upstream

	raw  *clampConn // the TCP connection, under TLS
	c    *smtp.Client
	tr   *tracer
	dead bool
	// A transaction failed: RSET before the next one.
	dirty bool

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
	s := &Session{addr: addr, opts: opts, up: up, command: command, data: data, hostname: hostname}
	s.raw = &clampConn{Conn: nc, limit: command}
	if opts.Trace != nil {
		s.tr = newTracer(opts.Trace, addr)
		if mode != "tls" {
			s.raw.tr = s.tr // clear text until STARTTLS (or throughout, for "none")
		}
	}
	// Cancelling ctx aborts the dial (the handshake and commands block on
	// the connection, not on ctx).
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()

	switch mode {
	case "tls":
		tc := tls.Client(s.raw, tlsConfig)
		s.raw.SetDeadline(time.Now().Add(command))
		if err := tc.HandshakeContext(ctx); err != nil {
			return s, classify(StageTLS, err)
		}
		s.raw.SetDeadline(time.Time{})
		s.c = smtp.NewClient(tc)
	case "starttls":
		// go-smtp reads the greeting, says EHLO localhost and STARTTLS;
		// the handshake itself happens at the next write (our EHLO).
		c, err := smtp.NewClientStartTLS(s.raw, tlsConfig)
		if err != nil {
			if strings.Contains(err.Error(), "doesn't support STARTTLS") {
				e := &Error{Class: Temporary, Stage: StageTLS, Err: err,
					Cause: "STARTTLS stripped or not offered by the upstream; relayd does not send mail or credentials in clear",
					Fix:   `check that the upstream offers STARTTLS on this port (587), or use tls = "tls" on port 465`}
				return s, e
			}
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code != 454 && !strings.Contains(strings.ToUpper(se.Message), "TLS") {
				return s, classify(StageConnect, err) // the greeting or EHLO
			}
			if !s.raw.wrote {
				// Nothing sent yet: the greeting never came (or never
				// ended: a slowloris server), not a TLS problem.
				return s, classify(StageConnect, err)
			}
			return s, classify(StageTLS, err)
		}
		s.raw.tr = nil
		s.c = c
	default:
		s.c = smtp.NewClient(s.raw)
	}
	s.c.CommandTimeout = command
	s.c.SubmissionTimeout = data
	if s.tr != nil && mode != "none" {
		s.c.DebugWriter = s.tr
	}
	// EHLO with our name, after TLS; for STARTTLS this runs the handshake.
	if err := s.c.Hello(hostname); err != nil {
		stage := StageEHLO
		var se *smtp.SMTPError
		if mode == "starttls" && !errors.As(err, &se) {
			stage = StageTLS
		}
		return s, classify(stage, err)
	}
	if mode != "none" {
		if st, ok := s.c.TLSConnectionState(); !ok || !st.HandshakeComplete {
			return s, &Error{Class: Temporary, Stage: StageTLS, Err: errors.New("TLS handshake not complete"),
				Cause: "the TLS handshake with the upstream did not complete"}
		}
	}
	if up.Username != "" {
		if err := s.auth(ctx); err != nil {
			return s, err
		}
	}
	s.raw.limit = 0 // go-smtp's timeouts are ours now; data writes set their own
	s.lastUsed = time.Now()
	return s, nil
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
	// Never in clear, whatever the config says (go-smtp and go-sasl
	// would send the password on a clear connection if asked).
	if st, ok := s.c.TLSConnectionState(); !ok || !st.HandshakeComplete {
		e := configError(StageAuth, "refusing to send credentials over a connection without TLS", `set tls = "starttls" or "tls"`)
		e.Class = AuthFailure
		return e
	}
	mechs := s.up.Auth
	if ok, _ := s.c.Extension("AUTH"); !ok {
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
		_, offered := s.c.Extension("AUTH")
		e := configError(StageAuth, fmt.Sprintf("no common SASL mechanism (we allow %s, the upstream offers %s)", strings.Join(mechs, " "), offered),
			"set auth in [[upstream]] to a mechanism the upstream offers (PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER)")
		e.Class = AuthFailure
		return e
	}
	if err := s.c.Auth(client); err != nil {
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

// SASLClient chooses how to log in to the upstream c is connected to:
// the first mechanism of up.Auth (up with its defaults) that c offers,
// with the client saslFn (Options.SASL, may be nil) gives for it (an
// OAuth 2 token), else PLAIN, LOGIN or OAUTHBEARER with up's username and
// password. It returns no client when none of up.Auth is offered, and
// saslFn's error (no token to present). relayd's sessions and relayd
// doctor choose alike.
func SASLClient(ctx context.Context, c *smtp.Client, up config.Upstream, saslFn func(context.Context, config.Upstream, string) (sasl.Client, error)) (sasl.Client, string, error) {
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
	return s.c.Noop()
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
	return s.c.Extension(ext)
}

// abort closes the connection without QUIT.
func (s *Session) abort() {
	s.dead = true
	if s.c != nil {
		s.c.Close()
	} else if s.raw != nil {
		s.raw.Close()
	}
}

// Close says QUIT (bounded by the command timeout) and closes the
// connection.
func (s *Session) Close() error {
	if s.dead {
		if s.raw != nil {
			s.raw.Close()
		}
		return nil
	}
	s.dead = true
	err := s.c.Quit()
	s.c.Close()
	return err
}

var queuedAs = regexp.MustCompile(`(?i)\bqueued as ([A-Za-z0-9._@-]+)|\bid=([A-Za-z0-9._@-]+)|<([^<>@ ]+@[^<>@ ]+)> \[InternalId`)

// parseQueueID finds the upstream's queue id in the final reply: Postfix
// "queued as 4Xyz", Exim "id=1abc-...", Exchange "<...> [InternalId".
func parseQueueID(reply string) string {
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
	if time.Since(s.lastUsed) > probe {
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

	if s.dirty {
		if err := s.c.Reset(); err != nil {
			return netFail(StageMail, err)
		}
		s.dirty = false
		// go-smtp says EHLO again after RSET; do it now, so that a
		// failure is not mistaken below for missing extensions.
		if err := s.c.Hello(s.hostname); err != nil {
			return netFail(StageEHLO, err)
		}
	}

	// Scan the message: what it needs and what the upstream takes.
	p, src, err := scanBody(m.Body)
	if err != nil {
		return fail(&Error{Class: Temporary, Stage: StageMessage, Err: err, Cause: "cannot read the queued message: " + err.Error()})
	}
	defer src.release()
	eightBit, _ := s.c.Extension("8BITMIME")
	utf8Ok, _ := s.c.Extension("SMTPUTF8")
	dsn, _ := s.c.Extension("DSN")
	needUTF8 := m.SMTPUTF8 || !message.IsASCII(m.From)
	for _, to := range m.To {
		needUTF8 = needUTF8 || !message.IsASCII(to)
	}
	if needUTF8 && !utf8Ok {
		return fail(&Error{Class: Permanent, Stage: StageMessage, Err: errors.New("SMTPUTF8 not offered"),
			Cause: "the message needs SMTPUTF8 (non-ASCII addresses) and the upstream does not offer it",
			Fix:   "use ASCII addresses, or an upstream that supports SMTPUTF8"})
	}
	if !eightBit && p.stuck8bit {
		return fail(&Error{Class: Permanent, Stage: StageMessage, Err: ErrStuck8bit,
			Cause: "the message has 8-bit bytes in a header (or another part that cannot be re-encoded) and the upstream does not offer 8BITMIME",
			Fix:   "encode non-ASCII header text (RFC 2047) in the sending program, or use an upstream that offers 8BITMIME"})
	}
	size := p.wireSize()
	if limit, ok := s.c.MaxMessageSize(); ok && limit > 0 && size > int64(limit) {
		return fail(&Error{Class: Permanent, Stage: StageMessage, Err: fmt.Errorf("size %d > %d", size, limit),
			Cause: fmt.Sprintf("message too large for the upstream (%d bytes; it takes at most %d)", size, limit),
			Fix:   "lower max_message_size to the upstream's limit, or send large files another way"})
	}
	if !validAddr(m.From) {
		return fail(&Error{Class: Permanent, Stage: StageMail, Err: errors.New("invalid sender"), Cause: "the envelope sender contains control characters or angle brackets"})
	}

	// MAIL FROM. go-smtp adds BODY=8BITMIME when offered.
	mo := &smtp.MailOptions{Size: size, UTF8: needUTF8}
	if dsn {
		switch r := strings.ToUpper(m.Ret); r {
		case "FULL", "HDRS":
			mo.Return = smtp.DSNReturn(r)
		}
		if message.ValidEnvID(m.EnvID) {
			mo.EnvelopeID = m.EnvID
		}
	}
	if err := s.c.Mail(m.From, mo); err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return netFail(StageMail, err)
		}
		s.dirty = true
		return fail(s.refine(classify(StageMail, err)))
	}
	s.dirty = true

	// RCPT TO, one by one.
	var ro *smtp.RcptOptions
	if dsn && m.Notify != "" {
		if n := notifyOf(m.Notify); n != nil {
			ro = &smtp.RcptOptions{Notify: n}
		}
	}
	accepted := 0
	var lastRcptErr *Error
	for i, to := range m.To {
		if !validAddr(to) || to == "" {
			res.Rcpts[i].Err = &Error{Class: Permanent, Stage: StageRcpt, Err: errors.New("invalid recipient"), Cause: "the recipient address is empty or contains control characters or angle brackets"}
			lastRcptErr = res.Rcpts[i].Err
			continue
		}
		if err := s.c.Rcpt(to, ro); err != nil {
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				return netFail(StageRcpt, err)
			}
			res.Rcpts[i].Err = s.refine(classify(StageRcpt, err))
			lastRcptErr = res.Rcpts[i].Err
			continue
		}
		accepted++
	}
	if accepted == 0 {
		res.Err = lastRcptErr
		return res
	}

	// DATA.
	w, err := s.c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return netFail(StageData, err)
		}
		return fail(s.refine(classify(StageData, err)))
	}
	r, err := openWire(src, p, WireMode{EightBit: eightBit})
	if err != nil {
		// Mid-DATA there is no clean way back: drop the connection.
		s.abort()
		return fail(&Error{Class: Temporary, Stage: StageMessage, Err: err, Cause: "cannot read the queued message: " + err.Error()})
	}
	_, err = io.Copy(&deadlineWriter{w: w, conn: s.raw, d: s.data}, r)
	r.Close()
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			return netFail(StageData, we.err)
		}
		s.abort()
		return fail(&Error{Class: Temporary, Stage: StageMessage, Err: err, Cause: "cannot read the queued message: " + err.Error()})
	}
	s.raw.SetDeadline(time.Now().Add(s.data))
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return netFail(StageDataEnd, err)
		}
		s.dirty = false // the transaction is over either way
		return fail(s.refine(classify(StageDataEnd, err)))
	}
	s.dirty = false
	res.Reply = "250 " + resp.StatusText
	res.QueueID = parseQueueID(resp.StatusText)
	return res
}

// notifyOf turns a stored NOTIFY value into go-smtp's form; nil when
// there is none or it is invalid (then no NOTIFY is sent).
func notifyOf(notify string) []smtp.DSNNotify {
	var out []smtp.DSNNotify
	for _, k := range message.NotifyKeywords(notify) {
		out = append(out, smtp.DSNNotify(k))
	}
	return out
}

// deadlineWriter gives each write of message data its own deadline: go-smtp
// sets none while the data is written.
type deadlineWriter struct {
	w    io.Writer
	conn net.Conn
	d    time.Duration
}

type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (dw *deadlineWriter) Write(b []byte) (int, error) {
	dw.conn.SetDeadline(time.Now().Add(dw.d))
	n, err := dw.w.Write(b)
	if err != nil {
		return n, &writeError{err}
	}
	return n, nil
}

// clampConn is the TCP connection under go-smtp (and TLS). While dialing it
// bounds every deadline go-smtp sets to our command timeout (go-smtp's own
// 5-minute default applies until NewClientStartTLS returns), and it traces
// the clear text before TLS.
type clampConn struct {
	net.Conn
	limit time.Duration
	tr    *tracer // non-nil while the connection is clear text
	// wrote is set once we have sent anything: before that, the only
	// thing we can be waiting for is the server's greeting.
	wrote bool
}

func (c *clampConn) SetDeadline(t time.Time) error {
	if c.limit > 0 && !t.IsZero() {
		if max := time.Now().Add(c.limit); t.After(max) {
			t = max
		}
	}
	return c.Conn.SetDeadline(t)
}

func (c *clampConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.tr != nil && n > 0 {
		c.tr.Write(b[:n])
	}
	return n, err
}

func (c *clampConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.wrote = true
	}
	if c.tr != nil && n > 0 {
		c.tr.Write(b[:n])
	}
	return n, err
}
