package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// "delete --user U" says how many messages it would delete and
// "--confirm N" deletes them. A frozen account that keeps sending (the
// compromised script still runs) adds held messages between the two
// commands; the confirmation then deletes the N the admin counted, the
// oldest, and keeps the newer ones (a frozen account's messages leave the
// queue only by the admin's hand, so its N oldest are the ones counted),
// instead of refusing for ever while the count keeps growing.
func TestDeleteUserConfirmWhileFrozenAccountSends(t *testing.T) {
	s, up, env := frozenNobody(t)
	send := func(subject string) {
		t.Helper()
		if code, stderr := s.sendmailAs(nobodyUID, subject); code != 0 {
			t.Fatalf("sendmail as nobody: %d %s", code, stderr)
		}
	}
	for _, subj := range []string{"spam 1", "spam 2", "spam 3"} {
		send(subj)
	}
	waitfor.True(t, "3 held", 20*time.Second, func() bool { return len(s.queueJSON("--held", "--user", "nobody")) == 3 })
	counted := map[string]bool{}
	for _, e := range s.queueJSON("--held", "--user", "nobody") {
		counted[e.ID] = true
	}
	_, stderr, code := runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody")
	if code == 0 || !strings.Contains(stderr, "--confirm 3") {
		t.Fatalf("delete without --confirm: exit %d, %q", code, stderr)
	}
	// The script sends on.
	send("spam 4")
	send("spam 5")
	waitfor.True(t, "5 held", 20*time.Second, func() bool { return len(s.queueJSON("--held", "--user", "nobody")) == 5 })
	out, stderr, code := runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody", "--confirm", "3")
	if code != 0 || !strings.Contains(out, "3 message(s) of nobody deleted") {
		t.Fatalf("delete --confirm 3 with 2 newer held: exit %d, %q %q", code, out, stderr)
	}
	left := s.queueJSON("--held", "--user", "nobody")
	if len(left) != 2 {
		t.Fatalf("%d held left, want the 2 newer: %+v", len(left), left)
	}
	for _, e := range left {
		if counted[e.ID] {
			t.Errorf("%s, one of the 3 counted, was kept", e.ID)
		}
	}
	if up.Count() != 0 {
		t.Errorf("%d messages delivered from a frozen account", up.Count())
	}
}

// "delete --user U" without --confirm is a usage error (relayd(8),
// EXIT STATUS): exit 64 and one line saying how many there are and the
// --confirm to add, nothing deleted. So are an option relayd does not
// know and a --confirm that is not a number; a count that does not match
// (more than there are: a frozen account's N oldest go with fewer) is a
// refusal (1).
func TestDeleteUserWithoutConfirmIsUsage(t *testing.T) {
	s, _, env := frozenNobody(t)
	for _, subj := range []string{"spam 1", "spam 2", "spam 3"} {
		s.sendNobody(subj)
	}
	_, stderr, code := runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody")
	if code != 64 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "relayd: queue delete: nobody has 3 message(s) queued") ||
		!strings.Contains(stderr, "--confirm 3") {
		t.Errorf("delete --user without --confirm: exit %d, stderr %q; want 64 and one line \"relayd: queue delete: nobody has 3 message(s) queued ... --confirm 3\"", code, stderr)
	}
	if n := len(s.queueJSON("--user", "nobody")); n != 3 {
		t.Fatalf("%d of nobody's messages left, want 3: nothing deleted", n)
	}
	for _, args := range [][]string{
		{"queue", "delete", "--user", "nobody", "--confirm", "three"},
		{"queue", "delete", "--user", "nobody", "--bogus"},
		{"queue", "list", "--bogus"},
		{"queue", "release", "--held"},
	} {
		_, stderr, code := runCmd(t, env, relaydBin, args...)
		if code != 64 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("relayd %s: exit %d, stderr %q; want 64 and one line", strings.Join(args, " "), code, stderr)
		}
	}
	if _, stderr, code = runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody", "--confirm", "4"); code != 1 || !strings.Contains(stderr, "not 4: nothing deleted") {
		t.Errorf("delete with a wrong count: exit %d, %q; want 1", code, stderr)
	}
	if n := len(s.queueJSON("--user", "nobody")); n != 3 {
		t.Fatalf("%d of nobody's messages left, want 3: nothing deleted", n)
	}
}
