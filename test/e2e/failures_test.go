//go:build e2e

package e2e

import (
	"os/user"
	"strings"
	"testing"
	"time"
)

// Failure paths on the real upstream. These restart relayd with another
// configuration (or stop Postfix) and put things back when done.

// sendAs runs `sendmail -i ARGS` as u with msg on stdin.
func sendAs(t *testing.T, u *user.User, msg string, args ...string) {
	t.Helper()
	runAs(t, u, nil, []byte(msg), "/usr/sbin/sendmail", append([]string{"-i"}, args...)...)
}

// pickedUp waits for the pickup line of the message with envelope sender
// from, and returns its queue id.
func pickedUp(t *testing.T, s *System, from string) string {
	t.Helper()
	e := s.Relayd.WaitEvent(t, 30*time.Second, "pickup from="+from, func(e Event) bool {
		return e.Get("event") == "pickup" && strings.EqualFold(e.Get("from"), from)
	})
	return e.Get("id")
}

// explained reports whether a log line carries a plain-words cause and fix.
func explained(e Event) bool {
	for _, k := range []string{"cause", "hint", "explain", "explanation"} {
		if e.Get(k) != "" {
			return true
		}
	}
	return false
}

func TestFailures(t *testing.T) {
	s := setup(t)
	defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())

	t.Run("wrong-password", func(t *testing.T) {
		cfg := s.Relayd.DefaultConfig()
		cfg.Password = "not-" + s.Upstream.Password
		s.Relayd.Restart(t, cfg)
		tok := token(t)
		from := tok + "@example.com"
		sendAs(t, s.Bob, "From: "+from+"\nTo: x@example.org\nSubject: "+tok+"\n\nwrong password "+tok+"\n", "-f", from, "x@example.org")
		id := pickedUp(t, s, from)
		// Deferred (a SASL failure is temporary but loud), with the cause.
		e := s.Relayd.WaitEvent(t, 60*time.Second, "deferral after 535 for "+id, func(e Event) bool {
			return e.Get("id") == id && strings.Contains(e.Line, "535") && strings.Contains(e.Line, "deferred")
		})
		t.Logf("log: %s", e.Line)
		// Loud: some line for this message explains the cause and the fix.
		// (auth-failed is the session's event: it names no message.)
		e = s.Relayd.WaitEvent(t, 10*time.Second, "an explained (cause=, fix=) 535 line", func(e Event) bool {
			return (e.Get("id") == id || e.Get("event") == "auth-failed") && strings.Contains(e.Line, "535") && explained(e)
		})
		t.Logf("log: %s", e.Line)
		// Retried, not bounced: put the password right and it goes out.
		s.Relayd.Restart(t, s.Relayd.DefaultConfig())
		checkDelivered(t, s, tok, Want{User: s.Bob, Sender: from, Body: "wrong password " + tok + "\n"})
		for _, m := range mustMessages(t, s) {
			if isDSN(m) && strings.Contains(string(m.Raw), from) {
				t.Errorf("a bounce was sent for a wrong password:\n%s", m.Raw)
			}
		}
		if strings.Contains(s.Relayd.Log(), s.Upstream.Password) {
			t.Errorf("the upstream password appears in relayd's log %s", s.Relayd.LogPath)
		}
	})

	t.Run("no-auth-relay-denied", func(t *testing.T) {
		cfg := s.Relayd.DefaultConfig()
		cfg.Auth = false
		s.Relayd.Restart(t, cfg)
		tok := token(t)
		from := tok + "@example.com"
		sendAs(t, s.Bob, "Subject: "+tok+"\n\nno auth "+tok+"\n", "-f", from, "x@example.org")
		id := pickedUp(t, s, from)
		e := s.Relayd.WaitEvent(t, 60*time.Second, "an explained (cause=, fix=) Relay access denied line for "+id, func(e Event) bool {
			return e.Get("id") == id && strings.Contains(e.Line, "Relay access denied") && explained(e)
		})
		t.Logf("log: %s", e.Line)
		low := strings.ToLower(e.Get("cause") + " " + e.Get("fix"))
		if !strings.Contains(low, "username") && !strings.Contains(low, "authenticat") {
			t.Errorf("the explanation should point at the missing authentication: %s", e.Line)
		}
		// Relayd keeps it (a configuration problem, not the recipient's):
		// with authentication back it goes out.
		s.Relayd.Restart(t, s.Relayd.DefaultConfig())
		checkDelivered(t, s, tok, Want{User: s.Bob, Sender: from, Body: "no auth " + tok + "\n"})
	})

	t.Run("upstream-down", func(t *testing.T) {
		must(t, s.Upstream.Stop(), "stop postfix")
		restarted := false
		defer func() {
			if !restarted {
				s.Upstream.Start()
			}
		}()
		tok := token(t)
		from := tok + "@example.com"
		sendAs(t, s.Alice, "Subject: "+tok+"\n\nwhile down "+tok+"\n", "-f", from, "x@example.org")
		id := pickedUp(t, s, from)
		e := s.Relayd.WaitEvent(t, 60*time.Second, "a failed attempt for "+id, func(e Event) bool {
			return e.Get("id") == id && e.Get("event") != "pickup" &&
				(strings.Contains(strings.ToLower(e.Line), "refused") || strings.Contains(e.Line, "defer"))
		})
		t.Logf("log: %s", e.Line)
		must(t, s.Upstream.Start(), "start postfix")
		restarted = true
		c := checkDelivered(t, s, tok, Want{User: s.Alice, Sender: from, Body: "while down " + tok + "\n"})
		if c.ID != id {
			t.Errorf("delivered id %s, picked up %s", c.ID, id)
		}
	})

	t.Run("upstream-down-mailq-flush", func(t *testing.T) {
		// Retries an hour apart: only the user's flush (sendmail -q)
		// brings the message out once Postfix is back.
		cfg := s.Relayd.DefaultConfig()
		cfg.Retry = []string{"1h"}
		s.Relayd.Restart(t, cfg)
		defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())
		must(t, s.Upstream.Stop(), "stop postfix")
		restarted := false
		defer func() {
			if !restarted {
				s.Upstream.Start()
			}
		}()
		tok := token(t)
		from := tok + "@example.com"
		sendAs(t, s.Alice, "Subject: "+tok+"\n\nflushed "+tok+"\n", "-f", from, "x@example.org")
		id := pickedUp(t, s, from)
		s.Relayd.WaitEvent(t, 60*time.Second, "deferral of "+id, func(e Event) bool {
			return e.Get("id") == id && e.Get("event") == "deferred"
		})
		out := runAs(t, s.Alice, nil, nil, "mailq")
		if !strings.Contains(out, id) {
			t.Errorf("mailq (as %s) does not list the deferred %s:\n%s", alice, id, out)
		}
		must(t, s.Upstream.Start(), "start postfix")
		restarted = true
		runAs(t, s.Alice, nil, nil, "/usr/sbin/sendmail", "-q")
		checkDelivered(t, s, tok, Want{User: s.Alice, Sender: from, Body: "flushed " + tok + "\n"})
	})

	t.Run("recipient-refused-dsn", func(t *testing.T) {
		tok := token(t)
		from := tok + "@example.com"
		sendAs(t, s.Alice, "From: "+from+"\nSubject: "+tok+"\n\nfor good and bad "+tok+"\n",
			"-f", from, "good@example.org", "bad@example.net")
		checkDelivered(t, s, tok, Want{User: s.Alice, Sender: from, Recipients: []string{"good@example.org"}})
		dsn := s.Upstream.WaitMessages(t, 1, deliveryLimit, "DSN to "+from, func(d *Delivered) bool {
			return isDSN(d) && strings.EqualFold(d.Header.Get("Delivered-To"), from)
		})[0]
		raw := string(dsn.Raw)
		for _, want := range []string{"bad@example.net", "5.1.1", "Final-Recipient", "Action: failed"} {
			if !strings.Contains(raw, want) {
				t.Errorf("DSN lacks %q:\n%s", want, raw)
			}
		}
		if strings.Contains(raw, "good@example.org") && strings.Contains(raw, "Final-Recipient: rfc822; good@example.org") {
			t.Errorf("DSN reports the delivered recipient too:\n%s", raw)
		}
		if rp := strings.Trim(dsn.Header.Get("Return-Path"), "<>"); rp != "" {
			t.Errorf("DSN's envelope sender is %q, want <> (a bounce is never bounced)", rp)
		}
	})
}

func mustMessages(t *testing.T, s *System) []*Delivered {
	t.Helper()
	ms, err := s.Upstream.Messages()
	must(t, err, "Maildir")
	return ms
}
