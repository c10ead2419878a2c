package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
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
	send := func(tag string, n int) {
		t.Helper()
		r := dialRaw(t, "tcp", s.listenAddrs()["tcp4"])
		if got := r.reply(); !strings.HasPrefix(got, "220") {
			t.Fatalf("greeting %q\n%s", got, s.log())
		}
		r.cmd("EHLO client.example")
		for i := 0; i < n; i++ {
			for _, c := range []string{"MAIL FROM:<app@example.org>", "RCPT TO:<rcpt@example.net>", "DATA"} {
				if got := r.cmd(c); !strings.HasPrefix(got, "250") && !strings.HasPrefix(got, "354") {
					t.Fatalf("%s: %q\n%s", c, got, s.log())
				}
			}
			r.send(fmt.Sprintf("Subject: %s %d\r\n\r\nbody\r\n.\r\n", tag, i))
			if got := r.reply(); !strings.HasPrefix(got, "250") {
				t.Fatalf("DATA of %s %d: %q\n%s", tag, i, got, s.log())
			}
		}
		r.c.Close()
	}
	d := s.start()
	send("before", 4)
	// At once after the last 250: relayd's periodic save (every second)
	// has most likely not run since.
	d.kill()
	s.start()
	send("after", 4)
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
