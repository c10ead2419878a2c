package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// holdNobody is nobody's table: messages_per_hour at perHour, action
// hold (under [policy] without notices: writeConfig, reloadPolicy).
func holdNobody(perHour int) string {
	return fmt.Sprintf("\nmessages_per_hour = %d\naction = \"hold\"\n", perHour)
}

// setNobodyRate rewrites the site's configuration with nobody's
// messages_per_hour at perHour (action hold, no notices).
func (s *site) setNobodyRate(perHour int) {
	s.writeConfig("\n[policy]\nnotice_to = \"\"\n[policy.nobody]" + holdNobody(perHour))
}

// reloadWith sighups d after rewriting the configuration with nobody's
// rate at perHour, and waits for the reload's log line.
func (s *site) reloadWith(d *daemon, perHour int) {
	s.t.Helper()
	s.reloadPolicy(d, holdNobody(perHour))
}

// waitForReload waits for a reload line after the before'th.
func waitForReload(s *site, before int) {
	s.t.Helper()
	waitfor.True(s.t, "the reload", 10*time.Second, func() bool { return strings.Count(s.log(), "event=reload status=ok") > before })
}

// sendNobody sends one message as nobody through the real sendmail and
// fails the test unless it was stored.
func (s *site) sendNobody(subject string) {
	s.t.Helper()
	if code, stderr := s.sendmailAs(nobodyUID, subject); code != 0 {
		s.t.Fatalf("sendmail as nobody (%s): exit %d, %q", subject, code, stderr)
	}
}

// heldReasons returns the reasons of nobody's held messages.
func (s *site) heldReasons() []string {
	s.t.Helper()
	var r []string
	for _, e := range s.queueJSON("--held", "--user", "nobody") {
		if e.State == spool.Held {
			r = append(r, e.Reason)
		}
	}
	return r
}

// checkHeldOver checks that nobody has exactly one held message, held
// by messages_per_hour=max with the count "would be got", and that the
// policy's log line says the same.
func (s *site) checkHeldOver(max, got int) {
	s.t.Helper()
	r := s.heldReasons()
	want := fmt.Sprintf("messages_per_hour=%d reached ([policy.nobody]): messages over the last hour would be %d;", max, got)
	if len(r) != 1 || !strings.Contains(r[0], want) {
		s.t.Fatalf("nobody's held messages: %q; want one, its reason with %q\n%s", r, want, s.log())
	}
	line := fmt.Sprintf("limit=messages_per_hour max=%d got=%d ", max, got)
	if !strings.Contains(s.log(), line) {
		s.t.Errorf("no policy log line with %q:\n%s", line, s.log())
	}
}

// An admin who raises an account's rate and reloads gives it the room
// at once: 3 messages an hour used up, raised to 6, the account sends 3
// more, and the 7th is held, the count saying 7 (the messages of the
// last hour with this one), not more. Lowered again to 3, the next one
// is held at once, counted 7 against 3. (Per hour, so that the bucket
// does not drain noticeably while the test runs.)
func TestPolicyReloadRaisedRateGivesRoom(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", "")
	s.setNobodyRate(3)
	d := s.start()
	for i := 1; i <= 3; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
	}
	if r := s.heldReasons(); len(r) != 0 {
		t.Fatalf("held within the rate: %q", r)
	}
	s.reloadWith(d, 6)
	for i := 4; i <= 6; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
		if r := s.heldReasons(); len(r) != 0 {
			t.Fatalf("message %d of 6 an hour held after the rate was raised from 3 and reloaded: %q", i, r)
		}
	}
	s.sendNobody("m7")
	s.checkHeldOver(6, 7)

	// Lowered: takes effect at once, and counts what was sent.
	s.reloadWith(d, 3)
	if _, err := runCmdOK(t, s, "queue", "delete", "--user", "nobody", "--confirm", "1"); err != nil {
		t.Fatal(err)
	}
	s.sendNobody("m8")
	s.checkHeldOver(3, 7)
}

// A lowered rate takes effect at once: 3 of 6 an hour used, lowered to
// 3 and reloaded, the next message is held, counted 4.
func TestPolicyReloadLoweredRateTakesEffect(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", "")
	s.setNobodyRate(6)
	d := s.start()
	for i := 1; i <= 3; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
	}
	s.reloadWith(d, 3)
	s.sendNobody("m4")
	s.checkHeldOver(3, 4)
}

// The counters kept in the queue journal are read against the limit in
// force after a restart: 3 of 3 an hour used, relayd stopped, the rate
// raised to 6, relayd started: 3 more are sent, the 7th is held,
// counted 7.
func TestPolicyRestartWithRaisedRate(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", "")
	s.setNobodyRate(3)
	d := s.start()
	for i := 1; i <= 3; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
	}
	if code := d.term(t); code != 0 {
		t.Fatalf("relayd exit %d", code)
	}
	s.setNobodyRate(6)
	s.start()
	for i := 4; i <= 6; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
		if r := s.heldReasons(); len(r) != 0 {
			t.Fatalf("message %d of 6 an hour held after a restart with the rate raised from 3: %q", i, r)
		}
	}
	s.sendNobody("m7")
	s.checkHeldOver(6, 7)
}

// runCmdOK runs relayd with args against s and returns its output, or
// an error saying how it failed.
func runCmdOK(t *testing.T, s *site, args ...string) (string, error) {
	t.Helper()
	out, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, args...)
	if code != 0 {
		return out, fmt.Errorf("relayd %v: exit %d, %q", args, code, stderr)
	}
	return out, nil
}
