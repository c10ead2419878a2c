package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
)

// Real upstream replies (Postfix unless noted), the class we give them and
// words the cause and fix must contain.
func TestExplainRealReplies(t *testing.T) {
	for _, tc := range []struct {
		stage      string
		code       int
		enh, text  string
		class      Class
		cause, fix string
	}{
		// Relay access denied: not authenticated, or this sender may not relay.
		{StageRcpt, 554, "5.7.1", "<alice@example.net>: Relay access denied", AuthFailure, "refuses to relay", "password_file"},
		{StageRcpt, 550, "5.7.1", "<alice@example.net>: Relay access denied", AuthFailure, "not authenticated", `tls is not "none"`},
		{StageRcpt, 550, "5.7.1", "Unable to relay for alice@example.net", AuthFailure, "refuses to relay", "relay settings"}, // Exchange
		// TLS required.
		{StageMail, 530, "5.7.0", "Must issue a STARTTLS command first", AuthFailure, "requires TLS", `tls = "starttls"`},
		{StageMail, 530, "5.7.0", "Must issue a STARTTLS command first. d2e1a72fcca58-7d5-gsmtp", AuthFailure, "requires TLS", `tls = "starttls"`}, // Gmail
		// Authentication.
		{StageAuth, 535, "5.7.8", "Error: authentication failed: authentication failure", AuthFailure, "refused our credentials", "password_file"},
		{StageAuth, 535, "5.7.8", "Error: authentication failed: UGFzc3dvcmQ6", AuthFailure, "refused our credentials", "password_file"},
		{StageAuth, 535, "5.7.8", "Username and Password not accepted. For more information, go to https://support.google.com/mail/?p=BadCredentials", AuthFailure, "refused our credentials", "username"},
		{StageAuth, 454, "4.7.0", "Temporary authentication failure", AuthFailure, "", ""},
		{StageMail, 530, "5.7.0", "Authentication required", AuthFailure, "requires authentication", "username and password_file"},
		{StageMail, 530, "5.7.57", "Client not authenticated to send mail. [AM0PR02CA0001.eurprd02.prod.outlook.com]", AuthFailure, "requires authentication", "password_file"}, // Office 365
		{StageMail, 553, "5.7.1", "<bob@example.org>: Sender address rejected: not logged in", AuthFailure, "requires authentication", "password_file"},
		// The sender is not the authenticated user's.
		{StageMail, 553, "5.7.1", "<root@web1.example.com>: Sender address rejected: not owned by user relay@example.com", Permanent, "not owned by the authenticated user", "[senders]"},
		{StageMail, 550, "5.7.1", "<www-data@web1.example.com>: Sender address rejected: Access denied", Permanent, "envelope sender", "[senders]"},
		{StageDataEnd, 550, "5.7.60", "SMTP; Client does not have permissions to send as this sender", Permanent, "envelope sender", "[senders]"}, // Office 365
		{StageMail, 504, "5.5.2", "<www-data>: Sender address rejected: need fully-qualified address", Permanent, "no domain", "[senders]"},
		// Too large.
		{StageDataEnd, 552, "5.3.4", "Message size exceeds fixed limit", Permanent, "too large", "max_message_size"},
		{StageMail, 552, "5.3.4", "Message size exceeds fixed maximum message size", Permanent, "too large", "max_message_size"},
		{StageDataEnd, 552, "5.2.3", "Message exceeded 10485760 bytes size limit", Permanent, "too large", "max_message_size"},
		// Unknown recipient.
		{StageRcpt, 550, "5.1.1", "<nobody@example.net>: Recipient address rejected: User unknown in virtual mailbox table", Permanent, "does not exist", "recipient address"},
		{StageRcpt, 550, "5.1.1", "<nobody@example.net>: Recipient address rejected: User unknown in local recipient table", Permanent, "does not exist", "[aliases]"},
		{StageRcpt, 550, "5.1.1", "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos", Permanent, "does not exist", "recipient"}, // Gmail
		{StageRcpt, 450, "4.1.2", "<a@nxdomain.invalid>: Recipient address rejected: Domain not found", Temporary, "domain", "typo"},
		{StageRcpt, 504, "5.5.2", "<root>: Recipient address rejected: need fully-qualified address", Permanent, "no domain", "[aliases]"},
		// Limits and blocks.
		{StageConnect, 421, "4.7.0", "smtp.example.com Error: too many connections from 192.0.2.1", Temporary, "limiting us", "queue.concurrency"},
		{StageRcpt, 450, "4.2.0", "<a@example.net>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.net.html", Temporary, "limiting us", ""},
		{StageRcpt, 554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", Permanent, "IP address", "587"},
		// Unknown replies: class from the code, no invented cause.
		{StageDataEnd, 451, "4.3.0", "Error: queue file write error", Temporary, "", ""},
		{StageDataEnd, 554, "5.7.1", "Error: message content rejected", Permanent, "", ""},
	} {
		t.Run(fmt.Sprintf("%d %s %s", tc.code, tc.enh, tc.text), func(t *testing.T) {
			e := replyError(tc.stage, tc.code, tc.enh, tc.text, nil)
			if e.Class != tc.class {
				t.Errorf("class %v, want %v", e.Class, tc.class)
			}
			if tc.cause == "" && tc.class != AuthFailure && e.Cause != "" {
				t.Errorf("explained an unknown reply: %q", e.Cause)
			}
			if !strings.Contains(e.Cause, tc.cause) || !strings.Contains(e.Fix, tc.fix) {
				t.Errorf("cause %q fix %q; want %q and %q", e.Cause, e.Fix, tc.cause, tc.fix)
			}
		})
	}
}

func TestClassifyLocalFailures(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		err   error
		class Class
		cause string
	}{
		{timeout, Temporary, "did not answer in time"},
		{io.EOF, Temporary, "closed the connection"},
		{context.Canceled, Temporary, "cancelled"},
		{errors.New("something odd"), Temporary, ""},
		{&net.DNSError{Err: "no such host", Name: "smtp.invalid", IsNotFound: true}, Temporary, "could not be resolved"},
		{&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}, Permanent, "does not exist"},
		{&smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Idle timeout"}, Temporary, ""},
	} {
		e := classify(StageMail, tc.err)
		if e.Class != tc.class || !strings.Contains(e.Cause, tc.cause) {
			t.Errorf("%v: class %v cause %q", tc.err, e.Class, e.Cause)
		}
		if !errors.Is(e, tc.err) && !errors.As(e, new(*smtp.SMTPError)) {
			t.Errorf("%v: not unwrappable", tc.err)
		}
	}
	e := classify(StageRcpt, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<a@b>: Recipient address rejected:\nUser unknown"})
	if e.Reply() != "550 5.1.1 <a@b>: Recipient address rejected: User unknown" || !strings.Contains(e.Error(), "rcpt: 550 5.1.1") {
		t.Errorf("reply %q error %q", e.Reply(), e.Error())
	}
}

// Provider replies, word for word as the providers send them.
func TestExplainProviders(t *testing.T) {
	for _, tc := range []struct {
		stage      string
		code       int
		enh, text  string
		class      Class
		cause, fix string
	}{
		// Microsoft 365.
		{StageAuth, 535, "5.7.139", "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0054.namprd05.prod.outlook.com]", AuthFailure, "SMTP AUTH", "Authenticated SMTP"},
		{StageAuth, 535, "5.7.139", "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.", AuthFailure, "turned off", "SmtpClientAuthenticationDisabled"},
		{StageAuth, 535, "5.7.139", "Authentication unsuccessful, basic authentication is disabled. [BN9PR03CA0123.namprd03.prod.outlook.com]", AuthFailure, "basic authentication", "connector"},
		{StageAuth, 535, "5.7.139", "Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator.", AuthFailure, "security defaults", "connector"},
		{StageAuth, 535, "5.7.139", "Authentication unsuccessful, the user credentials were incorrect.", AuthFailure, "refused our credentials", "password_file"},
		{StageMail, 530, "5.7.57", "Client not authenticated to send mail. Error: 535 5.7.139 Authentication unsuccessful", AuthFailure, "requires authentication", "password_file"},
		// Gmail.
		{StageAuth, 534, "5.7.9", "Application-specific password required. For more information, go to https://support.google.com/mail/?p=InvalidSecondFactor d2e1a72fcca58-7d5-gsmtp", AuthFailure, "app password", "App passwords"},
		{StageMail, 530, "5.7.0", "Authentication Required. For more information, go to https://support.google.com/mail/?p=WantAuthError d2e1a72fcca58-7d5-gsmtp", AuthFailure, "requires authentication", "username and password_file"},
		// Amazon SES.
		{StageDataEnd, 554, "", "Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: root@web1.example.com", Permanent, "verified identities", "SES console"},
		{StageMail, 554, "", "Message rejected: Email address is not verified. The following identities failed the check in region EU-WEST-1: www-data@web1.example.com", Permanent, "not verified", "[senders]"},
		// Postfix.
		{StageRcpt, 554, "5.7.1", "<x@example.org>: Relay access denied", AuthFailure, "refuses to relay", "smtpd_relay_restrictions"},
		{StageRcpt, 553, "5.7.1", "<owned@example.net>: Sender address rejected: not owned by user relay@e2e.test", Permanent, "not owned", "[senders]"},
		{StageMail, 530, "5.7.0", "Must issue a STARTTLS command first", AuthFailure, "requires TLS", `tls = "starttls"`},
		{StageAuth, 535, "5.7.8", "Error: authentication failed: authentication failure", AuthFailure, "refused our credentials", "password_file"},
		{StageAuth, 503, "5.5.1", "Error: authentication not enabled", AuthFailure, "does not offer AUTH", "SASL settings"},
		// Exim.
		{StageRcpt, 550, "", "relay not permitted", AuthFailure, "refuses to relay", "password_file"},
		{StageAuth, 535, "", "Incorrect authentication data", AuthFailure, "refused our credentials", "password_file"},
		{StageRcpt, 550, "", "Verification failed for <www-data@web1> Unrouteable address Sender verify failed", Permanent, "could not verify our envelope sender", "[senders]"},
		{StageAuth, 503, "", "AUTH command used when not advertised", AuthFailure, "does not offer AUTH", "SASL"},
	} {
		t.Run(fmt.Sprintf("%d %s %s", tc.code, tc.enh, tc.text), func(t *testing.T) {
			e := replyError(tc.stage, tc.code, tc.enh, tc.text, nil)
			if e.Class != tc.class {
				t.Errorf("class %v, want %v", e.Class, tc.class)
			}
			if !strings.Contains(e.Cause, tc.cause) || !strings.Contains(e.Fix, tc.fix) {
				t.Errorf("cause %q fix %q; want %q and %q", e.Cause, e.Fix, tc.cause, tc.fix)
			}
		})
	}
}

func TestRefine(t *testing.T) {
	relayDenied := func() *Error {
		return replyError(StageRcpt, 554, "5.7.1", "<x@example.org>: Relay access denied", nil)
	}
	if e := Refine(relayDenied(), config.Upstream{Host: "127.0.0.1", TLS: "none"}); !strings.Contains(e.Cause, `tls = "none" and no username`) {
		t.Errorf("no login: %q", e.Cause)
	}
	withLogin := config.Upstream{Host: "smtp.example.com", Username: "relay@example.com"}
	if e := Refine(relayDenied(), withLogin); e.Cause != causeRelayDenied || !strings.Contains(e.Fix, "permit_sasl_authenticated before reject_unauth_destination") {
		t.Errorf("with a login: %q / %q", e.Cause, e.Fix)
	}
	other := replyError(StageRcpt, 550, "5.1.1", "User unknown", nil)
	if e := Refine(other, config.Upstream{}); e.Cause != other.Cause {
		t.Errorf("unrelated reply changed: %q", e.Cause)
	}
}

func TestClassifyConnectAndCertificates(t *testing.T) {
	dialTimeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	readTimeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		err   error
		cause string
	}{
		{dialTimeout, "connection timed out, nothing answered"},
		{readTimeout, "did not answer in time (timeout at connect)"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "refused the connection"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, "unreachable"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, "no route"},
	} {
		if e := Classify(StageConnect, tc.err); !strings.Contains(e.Cause, tc.cause) {
			t.Errorf("%v: cause %q, want %q", tc.err, e.Cause, tc.cause)
		}
	}
}

func TestClassifySelfSignedWithoutCAFlag(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mail.example.net"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"mail.example.net"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	_, verr := c.Verify(x509.VerifyOptions{Roots: x509.NewCertPool()})
	if e := Classify(StageTLS, verr); !strings.Contains(e.Cause, "self-signed") || !strings.Contains(e.Fix, "ca_file") {
		t.Fatalf("%v: %q %q", verr, e.Cause, e.Fix)
	}
	expired := x509.CertificateInvalidError{Cert: c, Reason: x509.Expired}
	if e := Classify(StageTLS, expired); !strings.Contains(e.Cause, "has expired") {
		t.Fatalf("expired: %q", e.Cause)
	}
}

// An upstream that speaks only TLS 1.0: the handshake fails, and the cause
// names the version.
func TestClassifyOldTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	srvConf := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tls.Server(c, srvConf).Handshake()
		c.Close()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	herr := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}).Handshake()
	if e := Classify(StageTLS, herr); !strings.Contains(e.Cause, "TLS 1.0 or 1.1") {
		t.Fatalf("%v: %q", herr, e.Cause)
	}
}

// A refused OAUTHBEARER token, a refusing reply and a broken exchange are
// each an AuthFailure with relayd's words, the ones doctor prints too.
func TestClassifyAuth(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   error
		cause string
	}{
		{"oauthbearer", &sasl.OAuthBearerError{Status: "invalid_token"}, "the upstream refused the OAuth2 access token (invalid_token)"},
		{"exchange", errors.New("sasl: unexpected server challenge"), "the SASL OAUTHBEARER exchange with the upstream failed"},
		{"reply", &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication failed"}, ""},
	} {
		e := ClassifyAuth("OAUTHBEARER", c.err)
		if e.Class != AuthFailure {
			t.Errorf("%s: class %v, want AuthFailure", c.name, e.Class)
		}
		if c.cause != "" && e.Cause != c.cause {
			t.Errorf("%s: cause %q, want %q", c.name, e.Cause, c.cause)
		}
		if e.Fix == "" {
			t.Errorf("%s: no fix", c.name)
		}
	}
}
