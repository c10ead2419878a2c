package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// dropRefused writes n maildrop files owned by uid that the policy of
// newPolicySite(..., "max_recipients = 1") refuses (two recipients each),
// from sender with NOTIFY notify, as a setgid sendmail would have stored
// them. Call it while relayd is not running (the owner is set after the
// link).
func (s *site) dropRefused(uid int, sender, notify string, n int) []string {
	s.t.Helper()
	ids := s.dropEnv(spool.Origin{UID: uid, GID: uid, Via: "maildrop", Mode: "t"},
		spool.Envelope{Sender: sender, Recipients: []string{"a@example.net", "b@example.net"}, Notify: notify}, n, func(i int) string {
			return fmt.Sprintf("From: app@example.org\nTo: a@example.net, b@example.net\nSubject: refused %d\n\nbody %d\n", i, i)
		})
	for _, id := range ids {
		if err := os.Chown(filepath.Join(s.spool, spool.DirMaildrop, id), uid, -1); err != nil {
			s.t.Fatal(err)
		}
	}
	return ids
}

// Refused maildrop files whose sender gets no notice (NOTIFY=NEVER, the
// null sender) are quarantined for the administrator up to the account's
// max_quarantined files in queue/quarantine/ (100 by default), and beyond
// it removed, each with its one event=rejected line saying so: one local
// user cannot fill the spool's disk through the quarantine. Another
// account's are still quarantined, and nothing goes to anyone. The
// quarantine used to take every one of them.
func TestQuarantineCapForUnnoticedRefusals(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "*", "\nmax_recipients = 1\n")
	const other = 4242
	s.dropRefused(nobodyUID, "app@example.org", "NEVER", 104)
	s.dropRefused(nobodyUID, "<>", "", 2)
	s.dropRefused(other, "app@example.org", "NEVER", 2)
	s.start()
	waitfor.True(t, "every refusal logged", 60*time.Second, func() bool { return strings.Count(s.log(), "event=rejected ") >= 108 })
	waitfor.True(t, "an empty maildrop", 20*time.Second, func() bool {
		ents, _ := os.ReadDir(filepath.Join(s.spool, spool.DirMaildrop))
		return len(ents) == 0
	})
	owners := map[uint32]int{}
	ents, _ := os.ReadDir(filepath.Join(s.spool, spool.DirQuarantine))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			owners[fi.Sys().(*syscall.Stat_t).Uid]++
		}
	}
	if owners[nobodyUID] != 100 || owners[other] != 2 || len(ents) != 102 {
		t.Errorf("quarantine holds %d files, by owner %v; want 100 of nobody's and 2 of uid %d", len(ents), owners, other)
	}
	var discarded []string
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "event=rejected ") && strings.Contains(l, `action="discarded (`) {
			discarded = append(discarded, l)
		}
	}
	if len(discarded) != 6 {
		t.Errorf("%d discarded lines, want 6 (nobody's refusals beyond 100)", len(discarded))
	}
	for _, l := range discarded {
		for _, want := range []string{"uid=65534", "cause=", "max_quarantined"} {
			if !strings.Contains(l, want) {
				t.Errorf("a discarded line without %s: %s", want, l)
			}
		}
	}
	if n := strings.Count(s.log(), "event=rejected "); n != 108 {
		t.Errorf("%d event=rejected lines for 108 refusals", n)
	}
	if q, err := spool.Snapshot(s.spool); err != nil || len(q) != 0 {
		t.Errorf("queued: %d (%v)", len(q), err)
	}
	time.Sleep(500 * time.Millisecond)
	if msgs := up.Messages(); len(msgs) != 0 {
		t.Errorf("%d messages went upstream (a notice despite NOTIFY=NEVER or <>?)", len(msgs))
	}
	if t.Failed() {
		t.Logf("log:\n%.3000s", s.log())
	}
}

// max_quarantined set in a table: 1 keeps one refusal of the account in
// quarantine and discards the rest; once the administrator removed it,
// the next one is quarantined again. 0 is no limit.
func TestQuarantineCapConfigured(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "*", "\nmax_recipients = 1\nmax_quarantined = 1\n[policy.\"uid:4242\"]\nmax_quarantined = 0\n")
	s.dropRefused(nobodyUID, "app@example.org", "NEVER", 3)
	s.dropRefused(4242, "<>", "", 3)
	quarantined := func() []string {
		ents, _ := os.ReadDir(filepath.Join(s.spool, spool.DirQuarantine))
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	d := s.start()
	waitfor.True(t, "every refusal logged", 30*time.Second, func() bool { return strings.Count(s.log(), "event=rejected ") >= 6 })
	if n := strings.Count(s.log(), `action="discarded (`); n != 2 {
		t.Errorf("%d discarded, want 2 (nobody's beyond max_quarantined = 1; uid 4242 has no limit)", n)
	}
	q := quarantined()
	if len(q) != 4 {
		t.Fatalf("quarantine holds %v, want 4 files", q)
	}
	d.kill()
	for _, name := range q {
		if fi, err := os.Stat(filepath.Join(s.spool, spool.DirQuarantine, name)); err == nil && fi.Sys().(*syscall.Stat_t).Uid == nobodyUID {
			os.Remove(filepath.Join(s.spool, spool.DirQuarantine, name))
		}
	}
	s.dropRefused(nobodyUID, "app@example.org", "NEVER", 1)
	s.start()
	waitfor.True(t, "the last refusal logged", 30*time.Second, func() bool { return strings.Count(s.log(), "event=rejected ") >= 7 })
	if n := strings.Count(s.log(), `action="discarded (`); n != 2 {
		t.Errorf("%d discarded after room was made, want still 2", n)
	}
	if q := quarantined(); len(q) != 4 {
		t.Errorf("quarantine holds %v, want 4 files", q)
	}
}
