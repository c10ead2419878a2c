//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// These tests prove the harness itself: the Postfix behind upstream.sh
// behaves like the smarthost the product is written against.

func dialPlain(t *testing.T, u *Upstream) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", u.Addr(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Addr(), err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = 30 * time.Second
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.e2e.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

func dialTLS(t *testing.T, u *Upstream) *smtp.Client {
	t.Helper()
	cfg, err := u.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Addr(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Addr(), err)
	}
	c, err := smtp.NewClientStartTLS(conn, cfg)
	if err != nil {
		t.Fatalf("STARTTLS with the test CA: %v", err)
	}
	c.CommandTimeout = 30 * time.Second
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.e2e.test"); err != nil {
		t.Fatalf("EHLO after TLS: %v", err)
	}
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("no TLS after STARTTLS")
	}
	return c
}

func smtpCode(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	return 0, fmt.Sprint(err)
}

func TestUpstreamRefusesUnauthenticatedRelay(t *testing.T) {
	u := sharedUpstream(t)
	c := dialTLS(t, u)
	if err := c.Mail("someone@example.com", nil); err != nil {
		t.Fatalf("MAIL FROM: %v", err)
	}
	err := c.Rcpt("x@example.org", nil)
	code, text := smtpCode(err)
	if code != 554 || text != "554 5.7.1 <x@example.org>: Relay access denied" {
		t.Fatalf("RCPT without AUTH: got %q, want 554 5.7.1 <x@example.org>: Relay access denied", text)
	}
}

func TestUpstreamRequiresSTARTTLS(t *testing.T) {
	u := sharedUpstream(t)
	c := dialPlain(t, u)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	// go-smtp sends AUTH on a clear connection when asked (FACTS.md):
	// Postfix must refuse it (smtpd_tls_auth_only).
	err := c.Auth(sasl.NewPlainClient("", u.User, "not-the-password"))
	if code, text := smtpCode(err); code/100 != 5 {
		t.Fatalf("AUTH before STARTTLS: got %q, want a 5xx refusal", text)
	} else {
		t.Logf("AUTH before STARTTLS: %s", text)
	}
	c = dialPlain(t, u)
	err = c.Mail("someone@example.com", nil)
	if code, text := smtpCode(err); code != 530 || !strings.Contains(text, "STARTTLS") {
		t.Fatalf("MAIL before STARTTLS: got %q, want 530 ... STARTTLS", text)
	} else {
		t.Logf("MAIL before STARTTLS: %s", text)
	}
}

func TestUpstreamWrongPassword(t *testing.T) {
	u := sharedUpstream(t)
	c := dialTLS(t, u)
	err := c.Auth(sasl.NewPlainClient("", u.User, "wrong-"+u.Password))
	if code, text := smtpCode(err); code != 535 {
		t.Fatalf("AUTH with a wrong password: got %q, want 535", text)
	}
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

func TestUpstreamDeliversToMaildir(t *testing.T) {
	u := sharedUpstream(t)
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			c := dialTLS(t, u)
			var a sasl.Client
			if mech == "PLAIN" {
				a = sasl.NewPlainClient("", u.User, u.Password)
			} else {
				a = sasl.NewLoginClient(u.User, u.Password)
			}
			if err := c.Auth(a); err != nil {
				t.Fatalf("AUTH %s: %v", mech, err)
			}
			tok := token(t)
			if err := c.Mail("sender@example.com", nil); err != nil {
				t.Fatalf("MAIL: %v", err)
			}
			for _, rcpt := range []string{"x@example.org", "y@example.net"} {
				if err := c.Rcpt(rcpt, nil); err != nil {
					t.Fatalf("RCPT %s: %v", rcpt, err)
				}
			}
			// The permanently refused recipient.
			err := c.Rcpt("bad@example.net", nil)
			if code, text := smtpCode(err); code != 550 || !strings.Contains(text, "5.1.1") {
				t.Fatalf("RCPT bad@example.net: got %q, want 550 5.1.1", text)
			}
			w, err := c.Data()
			if err != nil {
				t.Fatalf("DATA: %v", err)
			}
			body := "line one\r\n.leading dot\r\n\r\nlast line " + tok + "\r\n"
			fmt.Fprintf(w, "From: sender@example.com\r\nTo: x@example.org\r\nSubject: %s\r\n\r\n%s", tok, body)
			resp, err := w.CloseWithResponse()
			if err != nil {
				t.Fatalf("end of DATA: %v", err)
			}
			m := queuedAs.FindStringSubmatch(resp.StatusText)
			if m == nil {
				t.Fatalf("DATA reply %q has no 'queued as <ID>'", resp.StatusText)
			}
			c.Quit()
			got := u.WaitMessages(t, 2, 60*time.Second, "delivery", func(d *Delivered) bool {
				return d.Header.Get("Subject") == tok
			})
			for _, d := range got {
				if !strings.Contains(string(d.Raw), "with ESMTPSA id "+m[1]) {
					t.Errorf("%s: no Received with ESMTPSA id %s:\n%s", d.Path, m[1], d.Raw)
				}
				if want := strings.ReplaceAll(body, "\r\n", "\n"); string(d.Body) != want {
					t.Errorf("%s: body %q, want %q", d.Path, d.Body, want)
				}
			}
		})
	}
}

func TestUpstreamSenderNotOwned(t *testing.T) {
	u := sharedUpstream(t)
	c := dialTLS(t, u)
	if err := c.Auth(sasl.NewPlainClient("", u.User, u.Password)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail("owned@example.net", nil); err != nil {
		// Postfix checks sender restrictions at RCPT by default
		// (smtpd_delay_reject); either place is fine.
		if code, text := smtpCode(err); code != 553 {
			t.Fatalf("MAIL FROM owned@example.net: %q", text)
		}
		return
	}
	err := c.Rcpt("x@example.org", nil)
	if code, text := smtpCode(err); code != 553 || !strings.Contains(text, "not owned by user") {
		t.Fatalf("sender owned by another login: got %q, want 553 ... not owned by user", text)
	}
}

func TestUpstreamStopStart(t *testing.T) {
	u := sharedUpstream(t)
	if err := u.Stop(); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", u.Addr(), 2*time.Second); err == nil {
		conn.Close()
		t.Fatal("port still answers after stop")
	}
	if err := u.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialTLS(t, u)
	if err := c.Auth(sasl.NewPlainClient("", u.User, u.Password)); err != nil {
		t.Fatalf("AUTH after restart: %v", err)
	}
}
