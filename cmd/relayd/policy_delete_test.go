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
