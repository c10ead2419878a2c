package smtptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func dial(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{RootCAs: s.CAPool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDeliverWithAuth(t *testing.T) {
	s := New(t, Options{Username: "u", Password: "p"})
	for _, mech := range []sasl.Client{sasl.NewPlainClient("", "u", "p"), sasl.NewLoginClient("u", "p")} {
		c := dial(t, s)
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(mech); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("b@example.org", nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("Subject: x\r\n\r\n..dot\r\nbody\r\n"))
		resp, err := w.CloseWithResponse()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(resp.StatusText, "2.0.0 Ok: queued as 4T") {
			t.Fatalf("reply %q", resp.StatusText)
		}
	}
	msgs, err := s.WaitFor(2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.User != "u" || !m.TLS || m.Helo != "client.example" || m.From != "a@example.org" || len(m.To) != 1 {
		t.Fatalf("recorded %+v", m)
	}
	if !bytes.Equal(m.Data, []byte("Subject: x\r\n\r\n..dot\r\nbody\r\n")) {
		t.Fatalf("data %q", m.Data)
	}
	if s.AuthAttempts() != 2 {
		t.Fatalf("auth attempts %d", s.AuthAttempts())
	}
}

func TestRelayDeniedWithoutAuthAndBadPassword(t *testing.T) {
	s := New(t, Options{Username: "u", Password: "p"})
	c := dial(t, s)
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("b@example.org", nil); !errors.As(err, &se) || se.Code != 554 || !strings.Contains(se.Message, "Relay access denied") {
		t.Fatalf("rcpt without auth: %v", err)
	}
	c2 := dial(t, s)
	if err := c2.Auth(sasl.NewPlainClient("", "u", "wrong")); !errors.As(err, &se) || se.Code != 535 {
		t.Fatalf("bad password: %v", err)
	}
}

func TestHookAndNo8BITMIME(t *testing.T) {
	s := New(t, Options{NoTLS: true, No8BITMIME: true, MaxSize: 1000, Hook: func(ctx context.Context, stage, arg string) error {
		if stage == StageRcpt && arg == "bad@example.org" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<bad@example.org>: Recipient address rejected: User unknown"}
		}
		return nil
	}})
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("8BITMIME"); ok {
		t.Fatal("8BITMIME offered")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered")
	}
	if n, ok := c.MaxMessageSize(); !ok || n != 1000 {
		t.Fatalf("SIZE %d %v", n, ok)
	}
	c.Mail("a@example.org", nil)
	var se *smtp.SMTPError
	if err := c.Rcpt("bad@example.org", nil); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("hook: %v", err)
	}
}

func TestImplicitTLSNo8BITMIME(t *testing.T) {
	s := New(t, Options{ImplicitTLS: true, No8BITMIME: true, Username: "u", Password: "p"})
	conn, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: s.CAPool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if ok, _ := c.Extension("8BITMIME"); ok {
		t.Fatal("8BITMIME offered")
	}
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
}
