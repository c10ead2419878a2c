package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The counters of messages that came through the SMTP listener (the
// same store as the submission socket) are saved with their group
// commit: relayd killed right after the 250s, before its periodic save,
// does not forget what the account sent, and after the restart the
// account has only what is left of its allowance.
func TestPolicyListenerCountsSurviveKill(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + `
[policy]
notice_to = ""
[policy.root]
messages_per_hour = 5
action = "hold"
`})
	d := s.start()
	sendOnListener(t, s, "before", 4)
	// At once after the last 250: relayd's periodic save (every second)
	// has most likely not run since.
	d.kill()
	s.start()
	sendOnListener(t, s, "after", 4)
	waitfor.True(t, "8 messages queued", 30*time.Second, func() bool { return strings.Count(s.log(), "event=pickup id=") >= 8 })
	if held := s.queueJSON("--held"); len(held) != 3 {
		t.Errorf("%d held after the restart, want 3 (the allowance was 5, 4 used before the kill)\n%s", len(held), s.log())
	}
	// Distinct subjects: a message delivered just before the kill may be
	// delivered again after it (at-least-once).
	waitfor.True(t, "5 messages delivered", 30*time.Second, func() bool { return len(s.subjects()) >= 5 })
	if got := s.subjects(); len(got) != 5 {
		t.Errorf("%d distinct messages delivered, want 5: %v", len(got), got)
	}
}

// The listener's counters are recorded in the queue journal, made
// durable by the group commit's Sync: relayd SIGKILLed at once after the
// last 250 (before any periodic save) keeps them, and creates no file
// of its own for them: queue/ holds the same files before and after (the
// stats' state file aside, written on its own schedule).
func TestPolicyListenerCountsInJournal(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + `
[policy]
notice_to = ""
[policy.root]
messages_per_hour = 3
action = "hold"
`})
	queueFiles := func() []string {
		t.Helper()
		des, err := os.ReadDir(filepath.Join(s.spool, spool.DirQueue))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, de := range des {
			if !strings.Contains(de.Name(), "stats.state") {
				names = append(names, de.Name())
			}
		}
		return names
	}
	d := s.start()
	before := queueFiles()
	sendOnListener(t, s, "before", 2)
	d.kill()
	if after := queueFiles(); !slices.Equal(before, after) {
		t.Errorf("files in queue/ before the messages %v, after them %v: the counters must go in the journal", before, after)
	}
	journal, err := os.ReadFile(filepath.Join(s.spool, spool.JournalFile))
	if err != nil || !strings.Contains(string(journal), `"op":"pol","acct":"`+strconv.Itoa(os.Getuid())+`"`) {
		t.Errorf("no policy line of the account in the journal (%v)", err)
	}
	s.start()
	sendOnListener(t, s, "after", 3)
	waitfor.True(t, "5 messages queued", 30*time.Second, func() bool { return strings.Count(s.log(), "event=pickup id=") >= 5 })
	if held := s.queueJSON("--held"); len(held) != 2 {
		t.Errorf("%d held after the restart, want 2 (the allowance was 3, 2 used before the kill)\n%s", len(held), s.log())
	}
	if _, err := os.Stat(filepath.Join(s.spool, spool.DirQueue, policy.StateFile)); !os.IsNotExist(err) {
		t.Errorf("a policy state file was written: %v", err)
	}
}

// sendOnListener sends n messages, with Subject "<tag> <i>", in one
// session on s's TCP listener, and fails the test unless each command
// gets its success reply (250, or 354 for DATA) and each message its 250.
func sendOnListener(t *testing.T, s *site, tag string, n int) {
	t.Helper()
	r := dialRaw(t, "tcp", s.listenAddrs()["tcp4"])
	defer r.c.Close()
	if got := r.reply(); !strings.HasPrefix(got, "220") {
		t.Fatalf("greeting %q\n%s", got, s.log())
	}
	if got := r.cmd("EHLO client.example"); !strings.HasPrefix(got, "250") {
		t.Fatalf("EHLO: %q\n%s", got, s.log())
	}
	for i := 0; i < n; i++ {
		for _, c := range []struct{ cmd, code string }{
			{"MAIL FROM:<app@example.org>", "250"},
			{"RCPT TO:<rcpt@example.net>", "250"},
			{"DATA", "354"},
		} {
			if got := r.cmd(c.cmd); !strings.HasPrefix(got, c.code) {
				t.Fatalf("%s: %q, want %s\n%s", c.cmd, got, c.code, s.log())
			}
		}
		r.send(fmt.Sprintf("Subject: %s %d\r\n\r\nbody\r\n.\r\n", tag, i))
		if got := r.reply(); !strings.HasPrefix(got, "250") {
			t.Fatalf("DATA of %s %d: %q\n%s", tag, i, got, s.log())
		}
	}
}
