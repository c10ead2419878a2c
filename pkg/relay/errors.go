package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
)

// Class says what the queue should do with a failure.
type Class int

const (
	// Temporary: try again later (4xx, network, TLS, timeouts, anything
	// unknown).
	Temporary Class = iota
	// Permanent: do not retry; bounce (5xx, or a message the upstream can
	// never take).
	Permanent
	// AuthFailure: the upstream refused our credentials, or we refused to
	// send them, or a refusal that means our AUTH/TLS settings are wrong
	// (530 authentication required, "Must issue a STARTTLS command first",
	// "Relay access denied"). Temporary — a rotated password must not
	// bounce the whole queue — but loud: log it at error level on every
	// attempt.
	AuthFailure
)

func (c Class) String() string {
	switch c {
	case Permanent:
		return "permanent"
	case AuthFailure:
		return "auth-failure"
	default:
		return "temporary"
	}
}

// Temporary reports whether a message failing with this class stays queued.
func (c Class) Temporary() bool { return c != Permanent }

// Stages of a session, as found in Error.Stage.
const (
	StageConnect = "connect"
	StageTLS     = "tls"
	StageEHLO    = "ehlo"
	StageAuth    = "auth"
	StageMail    = "mail"
	StageRcpt    = "rcpt"
	StageData    = "data"     // the DATA command and the message transfer
	StageDataEnd = "data-end" // the reply after the final dot
	StageMessage = "message"  // our own checks (size, 8-bit) or reading the file
)

// Error is a classified delivery failure.
type Error struct {
	Class Class
	// Stage is where it happened (the Stage* constants).
	Stage string
	// Code, Enhanced and Text are the upstream's reply, when there was one
	// (Code 0 otherwise). Text has its lines joined by "; ".
	Code     int
	Enhanced string
	Text     string
	// Cause says in plain words what went wrong, Fix what to change; both
	// may be "" when nothing better than the reply is known.
	Cause string
	Fix   string
	// Err is the underlying error, if any.
	Err error
}

// Error returns one line: stage, reply or error, and the cause.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Stage)
	b.WriteString(": ")
	switch {
	case e.Code != 0:
		fmt.Fprintf(&b, "%d", e.Code)
		if e.Enhanced != "" {
			b.WriteString(" " + e.Enhanced)
		}
		if e.Text != "" {
			b.WriteString(" " + e.Text)
		}
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString(e.Text)
	}
	if e.Cause != "" {
		b.WriteString(" (" + e.Cause + ")")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Reply returns the upstream reply as "550 5.1.1 text", or "" if none.
func (e *Error) Reply() string {
	if e.Code == 0 {
		return ""
	}
	s := fmt.Sprint(e.Code)
	if e.Enhanced != "" {
		s += " " + e.Enhanced
	}
	if e.Text != "" {
		s += " " + e.Text
	}
	return s
}

// Classify turns anything returned by a Session's SMTP client, go-smtp's
// (relayd doctor's), net, crypto/tls or crypto/x509 at stage into an
// *Error with its cause and fix, the way a
// Session does. An error it does not recognise is Temporary. relayd doctor
// uses it so that it explains a failure in the same words as the log.
func Classify(stage string, err error) *Error { return classify(stage, err) }

// ClassifyAuth explains a failed AUTH exchange with mechanism mech: a reply
// of the upstream's, an OAUTHBEARER error challenge, or a failure of the
// SASL exchange itself is an AuthFailure (loud, never a bounce); a network
// failure keeps its own class. relayd's sessions and relayd doctor both use
// it, so that both say the same.
func ClassifyAuth(mech string, err error) *Error {
	e := classify(StageAuth, err)
	var re *replyErr
	var se *smtp.SMTPError
	var be *sasl.OAuthBearerError
	switch {
	case errors.As(err, &re), errors.As(err, &se):
		e.Class = AuthFailure
	case errors.As(err, &be):
		// OAUTHBEARER: the upstream refused the token with an error
		// challenge (RFC 7628 section 3.2.2), which go-sasl's client
		// returns as its own error, not as a reply.
		e.Class = AuthFailure
		e.Cause = "the upstream refused the OAuth2 access token (" + be.Status + ")"
		e.Fix = "check the oauth_* keys of this upstream and that the account may use SMTP AUTH"
	case e.Cause == "":
		// Not a network failure: the SASL exchange itself failed.
		e.Class = AuthFailure
		e.Cause = "the SASL " + mech + " exchange with the upstream failed"
		e.Fix = "check username and password_file, and the mechanism (auth in [[upstream]])"
	}
	return e
}

// classify turns anything returned by the client, go-smtp, net or crypto/tls at stage
// into an *Error. An error it does not recognise is Temporary.
func classify(stage string, err error) *Error {
	if err == nil {
		return nil
	}
	var re *Error
	if errors.As(err, &re) {
		return re
	}
	var rp *replyErr
	if errors.As(err, &rp) {
		return replyError(stage, rp.Code, rp.Enhanced, rp.Message, err)
	}
	var se *smtp.SMTPError // relayd doctor's go-smtp client
	if errors.As(err, &se) {
		return replyError(stage, se.Code, enhanced(se), se.Message, err)
	}
	e := &Error{Class: Temporary, Stage: stage, Err: err}
	var (
		ne        net.Error
		certErr   *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		alert     tls.AlertError
		recErr    tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, context.Canceled):
		e.Cause = "the delivery was cancelled (relayd is stopping)"
	case isDialTimeout(err):
		e.Cause = "the upstream did not answer in time: the TCP connection timed out, nothing answered (a firewall dropping the packets, or a wrong host or port)"
		e.Fix = "check host and port, and that no firewall between here and the upstream drops outgoing connections to that port (many hosting providers block 25 and 587: try 465 with tls = \"tls\")"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		e.Cause = "the upstream did not answer in time (timeout at " + stage + ")"
		e.Fix = "check that the upstream is reachable and not overloaded; the timeouts are queue.connect_timeout, command_timeout, data_timeout"
	case errors.As(err, &hostErr):
		e.Stage = StageTLS
		e.Cause = "the upstream's TLS certificate is not valid for the name we connected to"
		if hostErr.Certificate != nil {
			e.Cause += " (" + hostErr.Host + "; it is for " + certNames(hostErr.Certificate) + ")"
		}
		e.Fix = "set host (or server_name) to a name the certificate covers"
	case errors.As(err, &invalid) && (invalid.Reason == x509.Expired):
		e.Stage = StageTLS
		e.Cause = "the upstream's TLS certificate has expired or is not valid yet"
		e.Fix = "the upstream's administrator must renew the certificate (check this host's clock too); relayd does not send over an invalid certificate"
		if c := invalid.Cert; c != nil && c.IsCA {
			// An intermediate the upstream sends, or a root: not the
			// upstream's own certificate, which may be fine.
			e.Cause = "a CA certificate of the upstream's chain (" + c.Subject.String() + ") has expired or is not valid yet"
			e.Fix = "the upstream's administrator must send a current intermediate certificate (or, for a root, this host's ca_file or trust store must hold a current one); check this host's clock too; relayd does not send over an invalid chain"
		}
		if c := invalid.Cert; c != nil {
			e.Cause += fmt.Sprintf(" (valid %s to %s)", c.NotBefore.UTC().Format("2006-01-02"), c.NotAfter.UTC().Format("2006-01-02"))
		}
	case errors.As(err, &unknownCA) && unknownCA.Cert != nil && selfSigned(unknownCA.Cert):
		e.Stage = StageTLS
		e.Cause = "the upstream's TLS certificate is self-signed (" + unknownCA.Cert.Subject.String() + ")"
		e.Fix = "have the upstream use a certificate from a CA; for a private host you control, set ca_file to that certificate"
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &certErr):
		e.Stage = StageTLS
		e.Cause = "the upstream's TLS certificate could not be verified"
		if unknownCA.Cert != nil {
			e.Cause += " (signed by an unknown authority: " + unknownCA.Cert.Issuer.String() + ")"
		}
		e.Fix = "if the upstream uses a private CA, set ca_file to its certificate; check the certificate has not expired"
	case strings.Contains(err.Error(), "unsupported protocol version"), strings.Contains(err.Error(), "protocol version not supported"):
		e.Stage = StageTLS
		e.Cause = "the upstream offers only TLS 1.0 or 1.1; relayd requires TLS 1.2 or later"
		e.Fix = "ask the upstream's administrator to enable TLS 1.2 or 1.3, or use another upstream: relayd does not send over older TLS"
	case isRemoteAlert(err):
		e.Stage = StageTLS
		e.Cause = "the upstream aborted the TLS handshake (" + err.Error() + ")"
		e.Fix = "if the upstream wants a client certificate, set client_cert and client_key; check tls (\"starttls\" on 587, \"tls\" on 465) and that it supports TLS 1.2 or later"
	case errors.As(err, &alert), errors.As(err, &recErr):
		e.Stage = StageTLS
		e.Cause = "the TLS handshake with the upstream failed"
		e.Fix = "check tls (\"starttls\" on port 587, \"tls\" on port 465) and that the upstream supports TLS 1.2 or later"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Cause = "the upstream refused the connection"
		e.Fix = "check host and port, and that the upstream is running"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		e.Cause = "the upstream is unreachable: no route to it (" + err.Error() + ")"
		e.Fix = "check host, this machine's network and routes, and firewalls that reject the connection"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		e.Cause = "the upstream closed the connection at " + stage
	case isDNS(err):
		e.Cause = "the upstream's host name could not be resolved"
		e.Fix = "check host, and the resolver"
	}
	return e
}

// isRemoteAlert reports a TLS alert sent by the peer (crypto/tls wraps it
// in a net.OpError "remote error").
func isRemoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// isDialTimeout reports a TCP connect that timed out (nothing answered
// the SYN), as opposed to a reply that did not come in time.
func isDialTimeout(err error) bool {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT)
}

// selfSigned reports a certificate that signed itself.
func selfSigned(c *x509.Certificate) bool {
	// CheckSignature, not CheckSignatureFrom: a self-signed server
	// certificate often lacks the CA flag that the latter demands.
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// certNames lists the names a certificate is valid for.
func certNames(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 && c.Subject.CommonName != "" {
		n = append(n, "CN="+c.Subject.CommonName)
	}
	if len(n) == 0 {
		return "no name"
	}
	return strings.Join(n, ", ")
}

func isDNS(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de)
}

func enhanced(se *smtp.SMTPError) string {
	if se.EnhancedCode == smtp.NoEnhancedCode || se.EnhancedCode == (smtp.EnhancedCode{}) {
		return ""
	}
	c := se.EnhancedCode
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// replyError classifies an upstream reply at stage.
func replyError(stage string, code int, enh, text string, err error) *Error {
	text = strings.Join(strings.Fields(text), " ")
	e := &Error{Stage: stage, Code: code, Enhanced: enh, Text: text, Err: err}
	switch {
	case code >= 500 && code < 600:
		e.Class = Permanent
	default:
		e.Class = Temporary
	}
	if stage == StageAuth && code != 0 {
		// RFC 4954: 535 bad credentials, 534 mechanism too weak, 454
		// temporary failure, 530 required: all are ours to fix, none a
		// reason to bounce.
		e.Class = AuthFailure
	}
	var x *explanation
	e.Cause, e.Fix, x = explain(code, enh, text, stage)
	if x != nil && x.auth && e.Class == Permanent {
		// The upstream wants (other) credentials or TLS: a configuration
		// problem of ours, to fix without bouncing the queue.
		e.Class = AuthFailure
	}
	return e
}

type explanation struct {
	match func(code int, enh, t, stage string) bool
	cause string
	fix   string
	// auth: the refusal means our credentials or TLS settings are wrong;
	// a permanent reply of this kind is classed AuthFailure.
	auth bool
}

func has(t string, subs ...string) bool {
	for _, s := range subs {
		if strings.Contains(t, s) {
			return true
		}
	}
	return false
}

// Causes that Session.refine makes precise for a session that did not
// authenticate.
const (
	causeAuthRequired = "the upstream requires authentication"
	causeRelayDenied  = "the upstream refuses to relay for us: we are not authenticated, or this sender is not allowed to relay"
)

// Causes and fixes that relayd doctor also gives when it finds the same
// problem before any reply (the words must be the same in both places).
const (
	CauseNoSTARTTLS = "STARTTLS stripped or not offered by the upstream; relayd does not send mail or credentials in clear"
	FixNoSTARTTLS   = `check that the upstream offers STARTTLS on this port (587), or use tls = "tls" on port 465`
	CauseNoAUTH     = "the upstream does not offer AUTH (after TLS), but credentials are configured"
	FixNoAUTH       = "check the upstream's port and SASL settings, or remove username if it needs none"
)

// GreetingError explains a failure to read the upstream's greeting
// (stage connect). With tls = "starttls", an upstream that says nothing
// and then closes the connection or lets the wait run out is most often a
// port that expects TLS from the first byte (465): it waits for our
// ClientHello. relayd's log and relayd doctor say so in the same words.
func GreetingError(mode string, err error) *Error {
	e := classify(StageConnect, err)
	if mode != "starttls" || e.Code != 0 || errors.Is(err, context.Canceled) {
		return e
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		e.Cause = "the upstream did not answer in time: no SMTP greeting"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		e.Cause = "the upstream closed the connection at connect: no SMTP greeting"
	default:
		return e
	}
	e.Cause += `; a port that expects TLS from the first byte (465) waits for the client to start TLS`
	e.Fix = `if this port expects TLS at once (465), set tls = "tls"; otherwise check host and port (an SMTP server there?) and that the upstream is not overloaded`
	return e
}

// explanations, first match wins. t is the lower-cased reply text. The
// provider-specific replies come first: their generic words (535, "not
// verified") would otherwise match a less precise entry.
var explanations = []explanation{
	// Microsoft 365 / Exchange Online.
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "smtpclientauthentication is disabled", "smtp_auth_disabled")
		},
		cause: "Microsoft 365 has SMTP AUTH (authenticated client submission) turned off for this tenant or mailbox",
		fix:   "turn on Authenticated SMTP for the mailbox (Microsoft 365 admin center: Users > Active users > Mail > Manage email apps) or the tenant (Set-TransportConfig -SmtpClientAuthenticationDisabled $false); mail stays queued meanwhile",
		auth:  true,
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "basic authentication is disabled", "basic auth is disabled", "basic authentication has been disabled", "basicauthblocked") ||
				(enh == "5.7.139" && has(t, "security defaults", "did not meet the criteria", "conditional access"))
		},
		cause: "Microsoft 365 refuses basic authentication (a user name and password) for SMTP: it is retiring it, or security defaults / conditional access block it",
		fix:   "relay through a Microsoft 365 connector (port 25 to the tenant's MX, allowed by this host's IP) or another smarthost; a password in password_file no longer works for this account",
		auth:  true,
	},
	// Gmail / Google Workspace.
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "application-specific password required", "invalidsecondfactor")
		},
		cause: "the Google account uses 2-step verification: its normal password is refused for SMTP, an app password is required",
		fix:   "create an app password (Google Account > Security > 2-Step Verification > App passwords) and put it in password_file",
		auth:  true,
	},
	// Amazon SES.
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "email address is not verified", "identities failed the check", "domain is not verified")
		},
		cause: "Amazon SES sends only from verified identities: this envelope sender (or, in the SES sandbox, the recipient) is not verified in the SMTP credentials' region",
		fix:   "verify the sender's address or domain in the SES console for that region and map local users to it in [senders]; in the sandbox verify the recipients too, or request production access",
	},
	// Postfix with smtpd_sasl_auth_enable = no (or Exim without an
	// authenticator) answering AUTH.
	{
		match: func(code int, enh, t, stage string) bool {
			return stage == StageAuth && has(t, "authentication not enabled", "auth command used when not advertised", "auth not available")
		},
		cause: CauseNoAUTH,
		fix:   FixNoAUTH,
		auth:  true,
	},
	// Postfix's reject_unknown_sender_domain: our sender's domain is not
	// in the DNS (a host name like web1.localdomain).
	{
		match: func(code int, enh, t, stage string) bool {
			return enh == "4.1.8" || enh == "5.1.8" || (has(t, "sender address rejected") && has(t, "domain not found"))
		},
		cause: "the upstream cannot find our envelope sender's domain in the DNS (an unqualified or private host name, such as web1.localdomain)",
		fix:   "send from an address in a real, resolvable domain: set hostname to a FQDN with DNS records and map local users to real addresses in [senders]",
	},
	// Exim's sender verification (callout) failing, and Postfix's
	// reject_unverified_sender.
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "sender verify failed", "sender verification failed", "verification failed for <") ||
				(has(t, "sender address rejected") && has(t, "undeliverable address"))
		},
		cause: "the upstream could not verify our envelope sender (its domain has no MX or A record, or the address does not exist there)",
		fix:   "send from an address in a real, resolvable domain: set hostname to a FQDN and map local users to real addresses in [senders]",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "must issue a starttls", "starttls first", "encryption required", "tls required", "must use tls", "requires tls")
		},
		cause: "the upstream requires TLS before this command",
		fix:   `set tls = "starttls" for this upstream (or tls = "tls" on port 465)`,
		auth:  true,
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return code == 535 || enh == "5.7.8" || has(t, "authentication failed", "authentication credentials invalid", "invalid credentials", "bad username or password", "username and password not accepted")
		},
		cause: "the upstream refused our credentials",
		fix:   "check username and the password in password_file for this upstream (a rotated password?); mail stays queued meanwhile",
		auth:  true,
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return code == 530 || enh == "5.7.57" || has(t, "authentication required", "please authenticate", "must authenticate", "authentication is required", "not authenticated", "not logged in")
		},
		cause: causeAuthRequired,
		fix:   `set username and password_file for this upstream (and keep tls = "starttls" or "tls": relayd never authenticates in clear)`,
		auth:  true,
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "relay access denied", "relaying denied", "relay not permitted", "relaying not allowed", "not permitted to relay", "unable to relay", "relay denied")
		},
		cause: causeRelayDenied,
		fix:   `check username and password_file, that tls is not "none" (no AUTH without TLS), and the upstream's relay settings (Postfix: smtpd_relay_restrictions must have permit_sasl_authenticated before reject_unauth_destination; permit_mynetworks alone does not cover this host)`,
		auth:  true,
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "need fully-qualified", "fully qualified", "domain name required")
		},
		cause: "an address has no domain (an unqualified local name)",
		fix:   "qualify local names: set hostname, map local users to real addresses in [senders] (senders) and [aliases] (recipients)",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "not owned by", "sender address rejected", "not allowed to send as", "permissions to send as", "sender not allowed", "sender address not allowed", "sender mismatch", "from address not verified", "sender rejected") ||
				(stage == StageMail && enh == "5.7.1")
		},
		cause: "the upstream does not let us use this envelope sender (not owned by the authenticated user, or not allowed)",
		fix:   "map the local user to an address the upstream account may send as, in [senders] (or pass -f with such an address)",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return code == 552 || enh == "5.3.4" || enh == "5.2.3" || enh == "4.3.4" || has(t, "too large", "size exceeds", "exceeds size limit", "message size", "too big")
		},
		cause: "the message is too large for the upstream",
		fix:   "lower max_message_size to the upstream's limit, or send large files another way",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return enh == "5.1.1" || has(t, "user unknown", "unknown user", "no such user", "mailbox unavailable", "does not exist", "mailbox not found", "recipient not found", "invalid recipient", "unknown recipient")
		},
		cause: "the recipient address does not exist at its destination",
		fix:   "check the recipient address (local names go through [aliases] and /etc/aliases)",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return enh == "5.1.2" || enh == "4.1.2" || has(t, "host or domain name not found", "domain not found")
		},
		cause: "the domain of an address could not be found",
		fix:   "check the address's domain (a typo, or an unqualified name: set hostname and [aliases])",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "blocked using", "listed at", "blocklist", "blacklist", "client host rejected")
		},
		cause: "the upstream refuses our IP address (a block list, or a host check)",
		fix:   "use an upstream that accepts this host: authenticated submission (port 587) is usually exempt from such checks",
	},
	{
		match: func(code int, enh, t, stage string) bool {
			return has(t, "too many connections", "too many concurrent", "rate limit", "too many messages", "try again later", "greylist")
		},
		cause: "the upstream is limiting us for now",
		fix:   "nothing, the message stays queued; if it repeats, lower queue.concurrency or ask the upstream for a higher limit",
	},
}

func explain(code int, enhanced, text string, stage string) (cause, fix string, x *explanation) {
	t := strings.ToLower(text)
	for i := range explanations {
		if x := &explanations[i]; x.match(code, enhanced, t, stage) {
			return x.cause, x.fix, x
		}
	}
	return "", "", nil
}

// Refine makes a refusal explained as "not authenticated" or "relay
// denied" precise for an upstream relayd does not log in to (no username,
// as with tls = "none"): relayd then sent no credentials at all. Other
// errors are returned unchanged. A Session does the same (Session.refine),
// so that relayd doctor and the log say the same words.
func Refine(e *Error, up config.Upstream) *Error {
	if e == nil || up.Username != "" || (e.Cause != causeRelayDenied && e.Cause != causeAuthRequired) {
		return e
	}
	why := "no username is set for this upstream"
	if up.WithDefaults().TLS == "none" {
		why = `tls = "none" and no username: relayd sent no credentials`
	}
	e.Cause = "the upstream refuses to relay for us because relayd did not authenticate (" + why + ")"
	e.Fix = `set username and password_file for this upstream, with tls = "starttls" (port 587) or "tls" (port 465): relayd authenticates only over TLS`
	return e
}
