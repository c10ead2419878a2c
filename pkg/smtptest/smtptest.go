// Package smtptest is an in-process SMTP upstream for tests (go-smtp's
// server): STARTTLS or implicit TLS with a certificate from a CA generated
// in-process, AUTH PLAIN and LOGIN, an advertised SIZE, optional
// capabilities, an error hook per stage, and a record of every delivered
// message (envelope and exact bytes). It answers the end of DATA with
// Postfix's "250 2.0.0 Ok: queued as <ID>".
//
// It is imported only by tests (and the demo): New(t, opts) starts a server
// on 127.0.0.1:0 and closes it at the end of the test; Start(opts) does the
// same without a *testing.T.
//
//	srv := smtptest.New(t, smtptest.Options{Username: "u", Password: "p"})
//	up := srv.Upstream()            // host, port, tls, ca_file, credentials
//	... deliver ...
//	msgs, err := srv.WaitFor(1, 10*time.Second)
//
// Refusals, drops and stalls come from Options.Hook:
//
//	Hook: func(ctx context.Context, stage, arg string) error {
//		switch {
//		case stage == smtptest.StageRcpt && arg == "bad@example.net":
//			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
//				Message: "<bad@example.net>: Recipient address rejected: User unknown"}
//		case stage == smtptest.StageData:
//			return smtptest.ErrDrop // hang up mid-DATA
//		case stage == smtptest.StageMail:
//			<-ctx.Done() // stall until the server closes
//		}
//		return nil
//	}
//
// DropAll closes every open connection (an upstream restarting). Stop
// closes the listener too (connections are refused) until Restart listens
// again on the same port. For benchmarks, NoStore keeps a count instead of
// the messages.
//
// Its Go API is not stable.
package smtptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
)

// Stages passed to Options.Hook.
const (
	StageEHLO    = "ehlo"     // a new session (EHLO); arg is the EHLO name
	StageAuth    = "auth"     // AUTH, before the credentials are checked; arg is the user name
	StageMail    = "mail"     // MAIL FROM; arg is the sender
	StageRcpt    = "rcpt"     // RCPT TO; arg is the recipient
	StageData    = "data"     // the message data starts (after 354)
	StageDataEnd = "data-end" // all data read, before the final reply; arg is the queue id
)

// ErrDrop, returned by a Hook, closes the connection without a reply; at
// StageData it does so after reading the first bytes of the message.
var ErrDrop = errors.New("smtptest: drop the connection")

// Options configure a Server. The zero value is a STARTTLS server without
// AUTH that accepts everything.
type Options struct {
	// Username and Password, when Username is set, enable AUTH PLAIN and
	// LOGIN (offered only over TLS), and a client that has not
	// authenticated gets Postfix's "554 5.7.1 <rcpt>: Relay access
	// denied" at RCPT.
	Username, Password string
	// BearerOK, when set with Username, also offers AUTH XOAUTH2 and
	// OAUTHBEARER (first), accepting a bearer token when it returns
	// true for the user and token; a refused token gets the providers'
	// answer (an error challenge, then 535 5.7.8).
	BearerOK func(user, token string) bool
	// NoTLS: no STARTTLS offered (a plain-text server; AUTH is then never
	// offered either).
	NoTLS bool
	// ImplicitTLS: TLS from the first byte (port-465 style).
	ImplicitTLS bool
	// MaxSize is advertised as "SIZE n" and enforced (552 5.3.4); 0
	// advertises "SIZE" without a limit.
	MaxSize int64
	// No8BITMIME hides the 8BITMIME capability. go-smtp's server always
	// offers it; hiding it works with NoTLS or ImplicitTLS only (New fails
	// otherwise).
	No8BITMIME bool
	// NoPipelining hides the PIPELINING capability (a server that
	// takes one command at a time); like No8BITMIME, with NoTLS or
	// ImplicitTLS only.
	NoPipelining bool
	// SMTPUTF8 and DSN advertise those extensions.
	SMTPUTF8, DSN bool
	// Hook, when set, is called at each stage. It may return an
	// *smtp.SMTPError (sent as the reply), ErrDrop, or nil to go on. It
	// may block to simulate a stalled server: ctx is cancelled when the
	// server closes. It is called from the server's goroutines.
	Hook func(ctx context.Context, stage, arg string) error
	// NoStore keeps only a count of delivered messages, not their bytes
	// (benchmarks).
	NoStore bool
	// BatchReplies holds the server's replies until it next reads from
	// the connection (or closes it), so that the replies to pipelined
	// commands leave together, as RFC 2920 asks of a server (Postfix
	// does this); go-smtp alone writes and flushes every reply on its own.
	BatchReplies bool
	// RequireClientCert: the TLS handshake demands a client certificate
	// signed by the test CA (Server.ClientCert, Server.ClientKey).
	RequireClientCert bool
	// Domain is the name in the greeting (default "smtptest.invalid").
	Domain string
	// ServerCert, when set, edits the template of the server's
	// certificate (its dates, its names) before it is signed.
	ServerCert func(*x509.Certificate)
	// SelfSigned: the server's certificate is signed by its own key, not
	// by the test CA (which CAFile still holds).
	SelfSigned bool
	// Debug receives go-smtp's server-side protocol trace.
	Debug io.Writer
}

// Message is one delivered message.
type Message struct {
	QueueID string
	// Remote is the client's address: messages sent over one connection
	// share it.
	Remote string
	Helo   string
	User   string // authenticated user, "" if none
	Mech   string // the SASL mechanism it authenticated with
	// Secret is the password or bearer token it authenticated with
	// (which of several accounts' credentials a session carried).
	Secret   string
	TLS      bool // the session was over TLS
	From     string
	MailOpts smtp.MailOptions
	To       []string
	RcptOpts []smtp.RcptOptions
	// Data is the message exactly as received, CRLF line ends, with
	// go-smtp's dot-unstuffing done.
	Data []byte
	// Time is when the server accepted the message (before its reply).
	Time time.Time
}

// Server is a running test upstream.
type Server struct {
	// Addr is "127.0.0.1:port"; Host and Port are its parts.
	Addr string
	Host string
	Port int
	// CAPEM is the test CA's certificate, CAPool a pool holding it, and
	// CAFile a file holding it (for config.Upstream.CAFile).
	CAPEM  []byte
	CAPool *x509.CertPool
	CAFile string
	// ClientCert and ClientKey are files holding a client certificate
	// (and its key) signed by the test CA, for RequireClientCert.
	ClientCert, ClientKey string

	opts    Options
	srv     *smtp.Server
	ln      net.Listener
	ctx     context.Context
	cancel  context.CancelFunc
	tmpDir  string // removed at Close when Start made it
	nextID  atomic.Uint64
	count   atomic.Int64
	authN   atomic.Int64
	conns   atomic.Int64
	mu      sync.Mutex
	msgs    []Message
	changed chan struct{} // closed and replaced when msgs or count change
	closed  bool
	track   *trackListener
	wrap    func(net.Listener) net.Listener // TLS and filters over track
	stopped bool
}

// DropAll closes every open client connection at once, without a reply
// (an upstream restarting, or timing out idle sessions).
func (s *Server) DropAll() {
	s.mu.Lock()
	track := s.track
	s.mu.Unlock()
	track.mu.Lock()
	var conns []net.Conn
	for c := range track.conns {
		conns = append(conns, c)
	}
	track.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// trackListener remembers the open connections.
type trackListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	batch bool // Options.BatchReplies
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	if l.batch {
		return &batchConn{trackedConn: tc}, nil
	}
	return tc, nil
}

// batchConn holds what is written until the next Read or Close
// (Options.BatchReplies). DropAll closes the trackedConn beneath: what is
// held then is lost, as with a connection cut.
type batchConn struct {
	*trackedConn
	mu   sync.Mutex
	held []byte
}

func (c *batchConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = append(c.held, b...)
	if len(c.held) >= 64<<10 {
		return len(b), c.flushLocked()
	}
	return len(b), nil
}

func (c *batchConn) flushLocked() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.trackedConn.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *batchConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.trackedConn.Read(b)
}

func (c *batchConn) Close() error {
	c.mu.Lock()
	// A TLS connection's Close sets the write deadline to now once its
	// close_notify is written (held here): what is held gets its own.
	if len(c.held) > 0 {
		c.trackedConn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	}
	c.flushLocked()
	c.mu.Unlock()
	return c.trackedConn.Close()
}

type trackedConn struct {
	net.Conn
	l    *trackListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// New starts a server for the test t and closes it when t ends. It fails
// the test if the server cannot start.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := start(opts, t.TempDir())
	if err != nil {
		t.Fatalf("smtptest: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Start starts a server outside a test (the demo). Close it when done.
func Start(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "smtptest-")
	if err != nil {
		return nil, err
	}
	s, err := start(opts, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.tmpDir = dir
	return s, nil
}

func start(opts Options, dir string) (*Server, error) {
	if opts.No8BITMIME && !opts.NoTLS && !opts.ImplicitTLS {
		return nil, errors.New("No8BITMIME needs NoTLS or ImplicitTLS (go-smtp always offers 8BITMIME after STARTTLS)")
	}
	if opts.NoPipelining && !opts.NoTLS && !opts.ImplicitTLS {
		return nil, errors.New("NoPipelining needs NoTLS or ImplicitTLS (go-smtp always offers PIPELINING after STARTTLS)")
	}
	var hide []string
	if opts.No8BITMIME {
		hide = append(hide, "250-8BITMIME\r\n")
	}
	if opts.NoPipelining {
		hide = append(hide, "250-PIPELINING\r\n")
	}
	if opts.Domain == "" {
		opts.Domain = "smtptest.invalid"
	}
	pki, err := makeCerts(opts.ServerCert, opts.SelfSigned)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	caPEM := pki.caPEM
	clientCert := filepath.Join(dir, "smtptest-client.pem")
	clientKey := filepath.Join(dir, "smtptest-client-key.pem")
	if err := os.WriteFile(clientCert, pki.clientPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(clientKey, pki.keyPEM, 0o600); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	caFile := filepath.Join(dir, "smtptest-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}
	if opts.RequireClientCert {
		tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
		tlsConfig.ClientCAs = pool
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().(*net.TCPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		Addr: addr.String(), Host: "127.0.0.1", Port: addr.Port,
		CAPEM: caPEM, CAPool: pool, CAFile: caFile,
		ClientCert: clientCert, ClientKey: clientKey,
		opts: opts, ln: ln, ctx: ctx, cancel: cancel,
		changed: make(chan struct{}),
	}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Domain
	srv.MaxMessageBytes = opts.MaxSize
	srv.MaxRecipients = 0
	srv.EnableSMTPUTF8 = opts.SMTPUTF8
	srv.EnableDSN = opts.DSN
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.Debug != nil {
		srv.Debug = opts.Debug
	}
	// Every connection is tracked (DropAll) under TLS; the 8BITMIME
	// filter sits above TLS.
	switch {
	case opts.ImplicitTLS && hide != nil:
		// TLS below go-smtp, so that the capability filter sees clear
		// text; go-smtp then cannot tell the session is encrypted, so
		// allow AUTH explicitly (it is encrypted).
		s.wrap = func(l net.Listener) net.Listener {
			return &filterListener{Listener: tls.NewListener(l, tlsConfig), hide: hide}
		}
		srv.AllowInsecureAuth = true
	case opts.ImplicitTLS:
		s.wrap = func(l net.Listener) net.Listener { return tls.NewListener(l, tlsConfig) }
	case opts.NoTLS && hide != nil:
		s.wrap = func(l net.Listener) net.Listener { return &filterListener{Listener: l, hide: hide} }
	case opts.NoTLS:
	default:
		srv.TLSConfig = tlsConfig
	}
	if s.wrap == nil {
		s.wrap = func(l net.Listener) net.Listener { return l }
	}
	s.srv = srv
	s.serve(ln)
	return s, nil
}

// serve accepts connections on ln (tracked for DropAll).
func (s *Server) serve(ln net.Listener) {
	track := &trackListener{Listener: ln, conns: map[net.Conn]struct{}{}, batch: s.opts.BatchReplies}
	s.mu.Lock()
	s.ln, s.track = ln, track
	s.mu.Unlock()
	go s.srv.Serve(s.wrap(track))
}

// Stop makes the server unreachable, as a stopped upstream is: it stops
// listening (new connections are refused) and closes every open
// connection. Restart brings it back on the same port.
func (s *Server) Stop() {
	s.mu.Lock()
	ln, stopped := s.ln, s.stopped
	s.stopped = true
	s.mu.Unlock()
	if !stopped {
		ln.Close()
	}
	s.DropAll()
}

// Restart listens again on the server's port after Stop (an upstream
// started again). It retries briefly while the port is still in use.
func (s *Server) Restart() error {
	s.mu.Lock()
	if !s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", s.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.stopped = false
	s.mu.Unlock()
	s.serve(ln)
	return nil
}

// Close stops the server, cancels blocked hooks and drops open sessions.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	err := s.srv.Close()
	if s.tmpDir != "" {
		os.RemoveAll(s.tmpDir)
	}
	return err
}

// Upstream returns a config.Upstream pointing at the server: host, port,
// TLS mode, the CA file, and the credentials (Password filled in, as
// LoadSecrets would), with config's defaults resolved as Load does.
func (s *Server) Upstream() config.Upstream {
	up := config.Upstream{
		Host:     s.Host,
		Port:     s.Port,
		TLS:      "starttls",
		CAFile:   s.CAFile,
		Username: s.opts.Username,
		Password: s.opts.Password,
	}
	switch {
	case s.opts.ImplicitTLS:
		up.TLS = "tls"
	case s.opts.NoTLS:
		up.TLS = "none"
		up.CAFile = ""
	}
	return up.WithDefaults()
}

// Count returns the number of messages delivered so far.
func (s *Server) Count() int { return int(s.count.Load()) }

// AuthAttempts returns how many AUTH commands the server has seen.
func (s *Server) AuthAttempts() int { return int(s.authN.Load()) }

// Connections returns how many sessions (EHLOs) the server has seen.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// Messages returns a copy of the delivered messages, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until at least n messages have been delivered, or until
// timeout; it returns the messages (all of them) and an error on timeout.
func (s *Server) WaitFor(n int, timeout time.Duration) ([]Message, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if s.Count() >= n {
			return s.Messages(), nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return s.Messages(), fmt.Errorf("smtptest: %d messages after %v, want %d", s.Count(), timeout, n)
		}
	}
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	if !s.opts.NoStore {
		s.msgs = append(s.msgs, m)
	}
	s.count.Add(1)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) hook(stage, arg string) error {
	if s.opts.Hook == nil {
		return nil
	}
	return s.opts.Hook(s.ctx, stage, arg)
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.conns.Add(1)
	if err := s.hook(StageEHLO, c.Hostname()); err != nil {
		if errors.Is(err, ErrDrop) {
			c.Conn().Close()
		}
		return nil, err
	}
	_, isTLS := c.TLSConnectionState()
	if s.opts.ImplicitTLS && (s.opts.No8BITMIME || s.opts.NoPipelining) {
		isTLS = true
	}
	return &session{s: s, c: c, helo: c.Hostname(), tls: isTLS, remote: c.Conn().RemoteAddr().String()}, nil
}

type session struct {
	remote string
	s      *Server
	c      *smtp.Conn
	helo   string
	tls    bool
	user   string
	mech   string
	secret string
	msg    Message
}

func (ss *session) Reset() { ss.msg = Message{} }

func (ss *session) Logout() error { return nil }

func (ss *session) check(stage, arg string) error {
	err := ss.s.hook(stage, arg)
	if errors.Is(err, ErrDrop) {
		ss.c.Conn().Close()
	}
	return err
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Username == "" {
		return nil
	}
	if ss.s.opts.BearerOK != nil {
		return []string{xoauth2, sasl.OAuthBearer, sasl.Plain, sasl.Login}
	}
	return []string{sasl.Plain, sasl.Login}
}

const xoauth2 = "XOAUTH2"

// bearerRefused is the final reply to a refused bearer token (Gmail's).
var bearerRefused = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"}

// xoauth2Server is the server side of XOAUTH2: the initial response
// "user=U^Aauth=Bearer T^A^A"; a refused token gets an error challenge
// (base64 JSON), and after the client's empty answer, 535.
type xoauth2Server struct {
	verify func(user, token string) error
	failed bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		return nil, true, bearerRefused
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	var user, token string
	for _, f := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(f, "user="); ok {
			user = v
		} else if v, ok := strings.CutPrefix(f, "auth=Bearer "); ok {
			token = v
		}
	}
	if err := x.verify(user, token); err != nil {
		x.failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	return nil, true, nil
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	ss.s.authN.Add(1)
	verify := func(user, pass string) error {
		if err := ss.check(StageAuth, user); err != nil {
			return err
		}
		if user != ss.s.opts.Username || pass != ss.s.opts.Password {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed: authentication failure"}
		}
		ss.user, ss.mech, ss.secret = user, mech, pass
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed: identity mismatch"}
			}
			return verify(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{verify: verify}, nil
	}
	if ok := ss.s.opts.BearerOK; ok != nil {
		bearer := func(user, token string) error {
			if err := ss.check(StageAuth, user); err != nil {
				return err
			}
			if !ok(user, token) {
				return bearerRefused
			}
			ss.user, ss.mech, ss.secret = user, mech, token
			return nil
		}
		switch mech {
		case xoauth2:
			return &xoauth2Server{verify: bearer}, nil
		case sasl.OAuthBearer:
			return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
				if bearer(o.Username, o.Token) != nil {
					return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
				}
				return nil
			}), nil
		}
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if err := ss.check(StageMail, from); err != nil {
		return err
	}
	ss.msg = Message{From: from}
	if opts != nil {
		ss.msg.MailOpts = *opts
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := ss.check(StageRcpt, to); err != nil {
		return err
	}
	if ss.s.opts.Username != "" && ss.user == "" {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}
	ss.msg.To = append(ss.msg.To, to)
	var o smtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	ss.msg.RcptOpts = append(ss.msg.RcptOpts, o)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	if err := ss.s.hook(StageData, ""); err != nil {
		if errors.Is(err, ErrDrop) {
			// Read a little first, so the client is mid-transfer.
			io.ReadFull(r, make([]byte, 16))
			ss.c.Conn().Close()
		}
		return err
	}
	var data []byte
	var err error
	if ss.s.opts.NoStore {
		_, err = io.Copy(io.Discard, r)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return err
	}
	id := strconv.FormatUint(ss.s.nextID.Add(1), 16)
	id = fmt.Sprintf("4T%08s", id)
	if err := ss.check(StageDataEnd, id); err != nil {
		return err
	}
	m := ss.msg
	m.QueueID = id
	m.Remote = ss.remote
	m.Helo = ss.helo
	m.User = ss.user
	m.Mech = ss.mech
	m.Secret = ss.secret
	m.TLS = ss.tls
	m.Data = data
	m.Time = time.Now()
	ss.s.record(m)
	ss.msg = Message{}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// loginServer is the server side of SASL LOGIN (go-sasl has only the
// client): "Username:" (unless sent as the initial response), then
// "Password:".
type loginServer struct {
	verify func(user, pass string) error
	state  int
	user   string
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.state {
	case 0:
		l.state = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.user = string(resp)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.verify(l.user, string(resp))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}

// filterListener hides capabilities (8BITMIME, PIPELINING): go-smtp writes
// each reply line with one Write, so the line "250-8BITMIME" is simply not
// passed on.
type filterListener struct {
	net.Listener
	hide []string
}

func (l *filterListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &filterConn{Conn: c, hide: l.hide}, nil
}

type filterConn struct {
	net.Conn
	hide []string
}

func (c *filterConn) Write(b []byte) (int, error) {
	for _, h := range c.hide {
		if string(b) == h {
			return len(b), nil
		}
	}
	return c.Conn.Write(b)
}

// certs is the test PKI: a CA, the server's certificate (127.0.0.1, ::1,
// localhost) and a client certificate, all signed by the CA.
type certs struct {
	caPEM             []byte
	server            tls.Certificate
	clientPEM, keyPEM []byte
}

func makeCerts(edit func(*x509.Certificate), selfSigned bool) (*certs, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smtptest CA"},
		NotBefore:             now.Add(-30 * 24 * time.Hour), // older than any leaf a test makes
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, server bool) ([]byte, *ecdsa.PrivateKey, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		parent, signer := caCert, caKey
		if server {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
			if edit != nil {
				edit(tmpl)
			}
			if selfSigned {
				parent, signer = tmpl, key
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
		return der, key, err
	}
	c := &certs{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	der, key, err := leaf(2, "localhost", x509.ExtKeyUsageServerAuth, true)
	if err != nil {
		return nil, err
	}
	c.server = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	der, key, err = leaf(3, "smtptest client", x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	c.clientPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	c.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	return c, nil
}

// ServerTLS returns a server TLS configuration with a fresh certificate for
// localhost, 127.0.0.1 and ::1, and a pool holding the CA that signed it:
// for a scripted upstream that says what go-smtp's server never would.
func ServerTLS() (*tls.Config, *x509.CertPool, error) {
	pki, err := makeCerts(nil, false)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pki.server}, MinVersion: tls.VersionTLS12}, pool, nil
}
