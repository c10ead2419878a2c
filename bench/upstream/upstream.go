// Package upstream is a fast, in-process SMTP smarthost for the benchmarks
// and the robustness suite: go-smtp's server with STARTTLS and SASL PLAIN
// (AUTH refused before TLS), a certificate from a throw-away CA written to a
// PEM file that relayd can be pointed at, and counters that let a test check
// the two invariants — every message that should arrive did, nothing arrived
// that should not — without storing the messages' bytes unless asked.
//
// Messages are told apart by a sequence header the test writes into each
// message (SeqHeader); the server counts how often each sequence number
// arrived, so losses and duplicates are exact.
//
// It is deliberately not pkg/smtptest: the benchmark driver is a program, and
// the robustness suite needs certificate faults (expired, self-signed, wrong
// host) that are easier to build here.
package upstream

import (
	"bytes"
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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SeqHeader is the header whose decimal value identifies a test message.
const SeqHeader = "X-Bench-Seq"

// CertKind selects the certificate the server presents.
type CertKind int

// Certificate kinds. Only CertGood verifies against CAFile for "localhost".
const (
	CertGood       CertKind = iota
	CertExpired             // signed by the CA, expired yesterday
	CertSelfSigned          // valid dates and name, but not from the CA
	CertWrongHost           // signed by the CA, for "wrong.example" only
)

// Options configure a Server. The zero value is a fast, well-behaved
// STARTTLS+AUTH smarthost.
type Options struct {
	Username, Password string // default "bench" / a random password
	Cert               CertKind
	// NoTLS makes the server advertise no STARTTLS (a stripping attack).
	NoTLS bool
	// KeepData stores every message's bytes (Messages returns them).
	KeepData bool
	// RcptErr, when set, is called for every RCPT TO; a non-nil error is
	// returned to the client.
	RcptErr func(to string) error
	// DataErr, when set, is called after a message was read whole; a
	// non-nil error refuses it (and it is not counted as delivered).
	DataErr func(seq int) error
	// ResetInData closes the connection after reading the first bytes of
	// every message (a reset mid-DATA).
	ResetInData bool
	// Dir receives the CA file; default a new temporary directory.
	Dir string
}

// Message is one stored delivery (Options.KeepData).
type Message struct {
	From string
	To   []string
	Data []byte
	Seq  int
}

// Server is a running upstream.
type Server struct {
	Addr     string // 127.0.0.1:port
	Port     int
	CAFile   string // PEM of the CA that signed the certificate
	Username string
	Password string

	srv *smtp.Server
	ln  net.Listener
	opt Options

	delivered atomic.Int64 // messages accepted
	rcpts     atomic.Int64 // recipients accepted
	sessions  atomic.Int64
	live      atomic.Int64 // sessions not logged out yet
	authFails atomic.Int64
	plainAuth atomic.Int64 // AUTH attempts on a connection without TLS
	rcptSeen  atomic.Int64 // RCPT commands seen
	resets    atomic.Int64 // connections reset in DATA

	mu   sync.Mutex
	seqs map[int]int
	msgs []Message
	auth []string // every username/password pair offered, "user\x00pass"
}

// Start listens on a free loopback port and serves until Close.
func Start(opt Options) (*Server, error) {
	if opt.Username == "" {
		opt.Username = "bench"
	}
	if opt.Password == "" {
		var b [12]byte
		rand.Read(b[:])
		opt.Password = fmt.Sprintf("pw-%x", b)
	}
	if opt.Dir == "" {
		d, err := os.MkdirTemp("", "upstream-")
		if err != nil {
			return nil, err
		}
		opt.Dir = d
	}
	s := &Server{Username: opt.Username, Password: opt.Password, opt: opt, seqs: map[int]int{}}
	tlsConf, caPEM, err := certs(opt.Cert)
	if err != nil {
		return nil, err
	}
	s.CAFile = filepath.Join(opt.Dir, "upstream-ca.pem")
	if err := os.WriteFile(s.CAFile, caPEM, 0o644); err != nil {
		return nil, err
	}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "localhost"
	srv.MaxMessageBytes = 200 << 20
	srv.MaxRecipients = 0
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = 5 * time.Minute
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.ErrorLog = discardLogger{}
	if !opt.NoTLS {
		srv.TLSConfig = tlsConf
	}
	srv.AllowInsecureAuth = opt.NoTLS
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.srv, s.ln = srv, ln
	s.Addr = ln.Addr().String()
	s.Port = ln.Addr().(*net.TCPAddr).Port
	go srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// Delivered is the number of messages accepted so far.
func (s *Server) Delivered() int64 { return s.delivered.Load() }

// Recipients is the number of recipients accepted so far.
func (s *Server) Recipients() int64 { return s.rcpts.Load() }

// Sessions is the number of connections opened so far.
func (s *Server) Sessions() int64 { return s.sessions.Load() }

// Live is the number of sessions open now: go-smtp ends a session
// (Logout) when its connection is closed, and at STARTTLS, after which
// the next command opens a new one. Zero once every client connection is
// gone and each message it sent has been counted.
func (s *Server) Live() int64 { return s.live.Load() }

// AuthFailures counts refused AUTH attempts.
func (s *Server) AuthFailures() int64 { return s.authFails.Load() }

// ClearAuth counts AUTH attempts made on a connection without TLS.
func (s *Server) ClearAuth() int64 { return s.plainAuth.Load() }

// RcptSeen counts RCPT commands, accepted or not.
func (s *Server) RcptSeen() int64 { return s.rcptSeen.Load() }

// Resets counts connections closed in DATA (Options.ResetInData).
func (s *Server) Resets() int64 { return s.resets.Load() }

// Seqs returns how many times each sequence number arrived.
func (s *Server) Seqs() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[int]int, len(s.seqs))
	for k, v := range s.seqs {
		m[k] = v
	}
	return m
}

// Messages returns the stored messages (Options.KeepData).
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Check compares the arrivals with the sequence numbers 0..n-1 that were
// accepted by the spool: it returns how many are missing, how many extra
// copies arrived, and how many arrivals had a sequence number outside the
// range (messages that should never have been delivered).
func (s *Server) Check(n int) (missing, dups, unknown int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < n; i++ {
		c := s.seqs[i]
		if c == 0 {
			missing++
		} else {
			dups += c - 1
		}
	}
	for k, c := range s.seqs {
		if k < 0 || k >= n {
			unknown += c
		}
	}
	return
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...interface{}) {}
func (discardLogger) Println(...interface{})        {}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.sessions.Add(1)
	b.s.live.Add(1)
	return &session{s: b.s, c: c}, nil
}

type session struct {
	s      *Server
	c      *smtp.Conn
	authed bool
	from   string
	to     []string
}

func (x *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *session) Auth(mech string) (sasl.Server, error) {
	if _, ok := x.c.TLSConnectionState(); !ok {
		x.s.plainAuth.Add(1)
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		x.s.mu.Lock()
		x.s.auth = append(x.s.auth, user+"\x00"+pass)
		x.s.mu.Unlock()
		if user != x.s.Username || pass != x.s.Password {
			x.s.authFails.Add(1)
			return smtp.ErrAuthFailed
		}
		x.authed = true
		return nil
	}), nil
}

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	if !x.authed {
		return smtp.ErrAuthRequired
	}
	x.from, x.to = from, x.to[:0]
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.rcptSeen.Add(1)
	if x.s.opt.RcptErr != nil {
		if err := x.s.opt.RcptErr(to); err != nil {
			return err
		}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	if x.s.opt.ResetInData {
		io.ReadFull(r, make([]byte, 1024))
		x.s.resets.Add(1)
		x.c.Conn().Close()
		return errors.New("upstream: connection reset in DATA")
	}
	sc := seqScanner{}
	var buf *bytes.Buffer
	var w io.Writer = &sc
	if x.s.opt.KeepData {
		buf = &bytes.Buffer{}
		w = io.MultiWriter(&sc, buf)
	}
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	seq := sc.seq()
	if x.s.opt.DataErr != nil {
		if err := x.s.opt.DataErr(seq); err != nil {
			return err
		}
	}
	x.s.mu.Lock()
	x.s.seqs[seq]++
	if buf != nil {
		x.s.msgs = append(x.s.msgs, Message{From: x.from, To: append([]string(nil), x.to...), Data: buf.Bytes(), Seq: seq})
	}
	x.s.mu.Unlock()
	x.s.rcpts.Add(int64(len(x.to)))
	x.s.delivered.Add(1)
	return nil
}

func (x *session) Reset() { x.from, x.to = "", x.to[:0] }
func (x *session) Logout() error {
	x.s.live.Add(-1)
	return nil
}

// seqScanner finds "X-Bench-Seq: N" in the header part of a message as it
// streams past, keeping only a small window.
type seqScanner struct {
	line  []byte
	inHdr int // 0 header, 1 body
	val   int
	found bool
}

var seqPrefix = []byte(SeqHeader + ":")

func (s *seqScanner) Write(p []byte) (int, error) {
	if s.inHdr == 1 {
		return len(p), nil
	}
	for i, c := range p {
		if c != '\n' {
			if len(s.line) < 256 {
				s.line = append(s.line, c)
			}
			continue
		}
		l := bytes.TrimRight(s.line, "\r")
		if len(l) == 0 {
			s.inHdr = 1
			_ = i
			return len(p), nil
		}
		if !s.found && len(l) > len(seqPrefix) && bytes.EqualFold(l[:len(seqPrefix)], seqPrefix) {
			if n, err := strconv.Atoi(string(bytes.TrimSpace(l[len(seqPrefix):]))); err == nil {
				s.val, s.found = n, true
			}
		}
		s.line = s.line[:0]
	}
	return len(p), nil
}

func (s *seqScanner) seq() int {
	if !s.found {
		return -1
	}
	return s.val
}

// OfferedPasswords returns every password offered in AUTH, in order.
func (s *Server) OfferedPasswords() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, a := range s.auth {
		if _, p, ok := bytes.Cut([]byte(a), []byte{0}); ok {
			out = append(out, string(p))
		}
	}
	return out
}

func certs(kind CertKind) (*tls.Config, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailshim bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := caCert, caKey
	switch kind {
	case CertExpired:
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	case CertWrongHost:
		tmpl.Subject.CommonName = "wrong.example"
		tmpl.DNSNames, tmpl.IPAddresses = []string{"wrong.example"}, nil
	case CertSelfSigned:
		parent, signer = tmpl, key
	case CertGood:
	default:
		return nil, nil, errors.New("upstream: unknown certificate kind")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, err
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
	return conf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}
