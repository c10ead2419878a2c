// Package relay is relayd's SMTP client: one session to one upstream
// smarthost, over verified TLS, with SASL AUTH, per-recipient results and
// classified, explained errors. It has no shared mutable state: several
// Sessions may be used at once, one goroutine each.
//
// # Using it
//
//	s, err := relay.Dial(ctx, up, opts)      // connect, TLS, EHLO, AUTH
//	if err != nil { ... err is a *relay.Error (Class, Cause, Fix) ... }
//	defer s.Close()
//	res := s.Send(ctx, msg)                   // one message; repeat while s.Alive()
//
// Choosing among several upstreams (order, failover, session reuse) is the
// queue's upstream component (package queue); this package supplies the
// rules it applies: Error.UpstreamTrouble, FailOver and DeadSession.
//
// # Session
//
// Dial connects with a timeout, then either STARTTLS (tls = "starttls", the
// default: a server that does not offer STARTTLS is refused — it may have
// been stripped by an attacker) or implicit TLS (tls = "tls"). tls = "none"
// is accepted only for a loopback upstream, and never with credentials. The
// certificate is verified against the system roots or ca_file (TLS 1.2 or
// later; an optional client certificate). After the handshake we say EHLO
// (again, for STARTTLS) with Options.Hostname, check that the TLS handshake
// has completed, and only then AUTH (PLAIN, LOGIN or
// OAUTHBEARER, in the order of config.Upstream.Auth, among those the server
// offers). Every step has a timeout (Options): connect, each command (the
// greeting and the pre-TLS exchange included), each write of message data,
// and the final reply; cancelling ctx closes the connection.
//
// Send runs one transaction: MAIL FROM (SIZE, BODY=8BITMIME, SMTPUTF8, DSN
// RET/ENVID when offered), one RCPT TO per recipient (NOTIFY when offered),
// DATA, the message through the wire transformer (wire.go), and the
// final reply, whose "queued as ID" is returned as Result.QueueID. The SMTP
// client is the package's own (client.go): when the upstream offers
// PIPELINING (RFC 2920), MAIL, every RCPT and DATA go in one write (one TLS
// record) and the replies are read in order (a message with hundreds of
// recipients takes several groups, each within the 16 KB write buffer and
// its replies read before the next goes, so that no group outgrows the TCP
// window and deadlocks with an upstream that answers as it reads); only
// after a 354 does the
// message go, dot-stuffed, its end of data in the same write as its last
// bytes: two round trips per message instead of four. A server without
// PIPELINING gets one command at a time. BDAT (CHUNKING) is never used: a
// server that refused MAIL could read a pipelined chunk as commands. After a
// failed transaction the session sends RSET (in front of the next MAIL, in
// the same write), so it can be reused; after a
// successful one the SMTP state is already reset (RFC 5321 4.1.1.4). After a
// network error or a timeout the session is dead (Alive reports false). A
// session that sat idle (Options.IdleProbe) is checked with NOOP first and
// dialed again if the upstream closed it meanwhile.
//
// # Wire safety
//
// The stored message has LF line ends and may contain bare CR, NUL, 8-bit
// bytes and lines longer than 998 octets. The wire transformer turns it into
// what may go on the wire: every line end is CRLF; no bare CR, no bare LF, no NUL
// (so nothing can form "\r\n.\r\n" except the session's own end of data — the
// SMTP-smuggling class); no line longer than 998 octets. A text or other
// identity-encoded MIME leaf part that has long lines, bare CR or NUL — or
// 8-bit bytes when the upstream does not offer 8BITMIME — is re-encoded
// quoted-printable (its Content-Transfer-Encoding header rewritten), so its
// content survives exactly, as OpenSMTPD does. Quoted-printable and base64
// parts are repaired in place (soft line breaks, escapes, re-wrapping). Long
// header lines are folded. The transformer streams: it reads the message
// twice (a scan to decide which parts to re-encode, then the rewrite), and
// buffers at most one entity header (bounded). Dot-stuffing is the
// session's (dotWriter in client.go), as the chunks go out. A message held
// in memory that is plain (7-bit, no CR, no NUL, no line over 900 octets:
// nothing the transformer would change) skips both passes: it goes out as
// it is, with CRLF line ends, dot-stuffed (renderPlain).
//
// 8-bit to a 7-bit upstream: converted as above. What cannot be converted —
// 8-bit bytes in a header — is refused with a permanent error that says so.
//
// Non-ASCII addresses to an upstream without SMTPUTF8 (idn.go): an IDN
// domain goes as its A-label (golang.org/x/net/idna, linked by relayd
// only); a recipient with a non-ASCII local part is refused alone (5.6.7),
// a sender with one refuses the message. Raw UTF-8 headers then go as
// 8-bit data without SMTPUTF8, as before SMTPUTF8 existed.
//
// # Errors
//
// Every failure is an *Error with a Class (mox's smtpclient.Error style):
// 5xx is Permanent; 4xx, network, TLS and timeouts are Temporary; an unknown
// error is Temporary; an authentication failure is AuthFailure, temporary
// but loud (a rotated password must not bounce the whole queue). Replies
// that mean our AUTH or TLS settings are wrong ("Relay access denied", 530
// authentication required, "Must issue a STARTTLS command first") are
// AuthFailure too, and a refusal before any message (greeting, EHLO,
// STARTTLS) is never Permanent. The known upstream refusals are put in
// plain words with the fix; Error.Cause and Error.Fix carry them, and
// Error.Reply the upstream's own words, for the log line and the DSN.
//
// # Protocol trace
//
// Options.Trace gets one line per protocol line ("smtp upstream=H:P C: ..."
// / "S: ..."), the clear-text part before STARTTLS included. SASL is
// redacted (the AUTH command keeps only its mechanism; every client line of
// the exchange becomes "[redacted]") and message data is summarised, never
// copied.
//
// Its Go API is not stable.
package relay

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/mailshim/mailshim/pkg/config"
)

// Message is one message to deliver.
type Message struct {
	// ID is our queue id (for logs and the trace only).
	ID string
	// From is the envelope sender; "" is the null sender <> (bounces).
	From string
	// To are the envelope recipients, fully qualified.
	To []string
	// Size is the number of stored message bytes.
	Size int64
	// Body returns a fresh reader of the stored message bytes (LF line
	// ends as stored; may contain bare CR, NUL, 8-bit bytes, long lines).
	// It is called more than once per Send (a scan, then the transfer),
	// and again for each upstream tried; readers that are io.Closers are
	// closed.
	Body func() (io.Reader, error)
	// BodyType is "8BITMIME", "7BIT" or "" (unknown: the message is
	// scanned anyway).
	BodyType string
	// SMTPUTF8 asks for SMTPUTF8 (non-ASCII addresses).
	SMTPUTF8 bool
	// DSN parameters (RFC 3461), passed only when the upstream offers DSN.
	Notify string // "NEVER" or a comma list of SUCCESS, FAILURE, DELAY
	Ret    string // "FULL" or "HDRS"
	EnvID  string
	// Waiting, when set, is called while Send waits for the upstream's
	// replies, after each write of commands or of the message: work of
	// the caller's that can overlap with the upstream's (the outcome of
	// the message sent before, on the same session). It may be called
	// several times, or not at all (a Send that fails before it writes);
	// it must not use the Session.
	Waiting func()
	// Next, when set, is the message the caller sends next on the same
	// session, read and scanned ahead (Prepare): Send may write its
	// commands behind this message's end of data (RFC 2920), and the
	// Send of Next then reads their replies. Next's attempt must be
	// recorded before this Send, as for its own.
	Next *Message

	// scanned holds what Prepare found, for the next Send.
	scanned *scanned
}

type scanned struct {
	p   *plan
	src *source
	err error
}

// Prepare reads and scans the message ahead of its Send (while another
// message's replies are awaited, say), so that Send writes its commands
// at once. The next Send uses what it found, once: a Send after that
// (another upstream's) reads the message again. Without Prepare, Send
// does it.
func (m *Message) Prepare() {
	if m.scanned != nil {
		return
	}
	p, src, err := scanBody(m.Body)
	m.scanned = &scanned{p: p, src: src, err: err}
}

// RcptResult is the outcome for one recipient.
type RcptResult struct {
	Rcpt string
	// Err is nil when the upstream accepted the message for Rcpt (after
	// the end of DATA); else why not (refused at RCPT, or the whole
	// message failed).
	Err *Error
}

// Result is the outcome of one Send.
type Result struct {
	// Upstream is host:port of the upstream used (or last tried).
	Upstream string
	// Rcpts has one entry per Message.To, in order.
	Rcpts []RcptResult
	// QueueID is the upstream's queue id parsed from the final 250 reply
	// (Postfix "queued as 4Xyz"), "" if none.
	QueueID string
	// Reply is the upstream's final reply text ("" if never reached).
	Reply string
	// Err is the whole-message failure, nil if the message went through
	// for at least one recipient. When set it is also in every
	// RcptResult that was not refused on its own.
	Err *Error
}

// Accepted reports how many recipients the upstream accepted.
func (r *Result) Accepted() int {
	n := 0
	for _, rr := range r.Rcpts {
		if rr.Err == nil {
			n++
		}
	}
	return n
}

// Refusable is a SASL client (from Options.SASL) that wants to know when
// the upstream refused the credentials it presented: a bearer token's
// source then forgets the token, so that the next login fetches a new one
// instead of presenting the refused one until its announced expiry.
type Refusable interface {
	Refused()
}

// Options are the local settings of a session.
type Options struct {
	// Hostname is the name we give in EHLO (config.Config.Hostname).
	Hostname string
	// Timeouts; zero means the default (30s, 5m, 10m). DataTimeout bounds
	// each write of message data and the wait for the final reply.
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	// Trace, when not nil, receives the protocol trace, one line per
	// protocol line, with AUTH payloads redacted and message data
	// summarised. It must be safe for concurrent use if shared.
	Trace io.Writer
	// DialContext replaces the TCP dialer (tests). nil: net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs, when not nil, replaces the system roots and ca_file (tests).
	RootCAs *x509.CertPool
	// SASL, when set, is asked first for the client of each mechanism
	// the upstream offers (pkg/oauth's XOAUTH2 and OAUTHBEARER with a
	// fresh token); (nil, nil) leaves the mechanism to the built-in
	// clients, an error fails AUTH as an AuthFailure. A client that is
	// a Refusable is told when the upstream refuses its credentials.
	SASL func(ctx context.Context, up config.Upstream, mech string) (sasl.Client, error)
	// IdleProbe: a session idle for longer is checked with NOOP before
	// the next message and, if the upstream has closed it meanwhile,
	// dialed again (no message is lost to an idle timeout). 0 means 10s.
	IdleProbe time.Duration
}

// OptionsFrom returns the Options for cfg.
func OptionsFrom(cfg *config.Config) Options {
	return Options{
		Hostname:       cfg.Hostname,
		ConnectTimeout: cfg.Queue.ConnectTimeout,
		CommandTimeout: cfg.Queue.CommandTimeout,
		DataTimeout:    cfg.Queue.DataTimeout,
	}
}

func (o *Options) timeouts() (connect, command, data time.Duration) {
	connect, command, data = o.ConnectTimeout, o.CommandTimeout, o.DataTimeout
	if connect <= 0 {
		connect = 30 * time.Second
	}
	if command <= 0 {
		command = 5 * time.Minute
	}
	if data <= 0 {
		data = 10 * time.Minute
	}
	return
}
