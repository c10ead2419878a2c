package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The held queue is capped per account ([policy] max_held): once an
// account has that many held messages, one more to hold is refused at
// the door with the reason (sendmail exits 73, the spool-full code; the
// message is not stored), so that one account cannot fill the disk with
// held mail. Released, the account can be held again.
func TestPolicyMaxHeld(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "*", `
messages_per_hour = 1
action = "hold"
max_held = 2
`)
	s.start()
	var codes []int
	var refusal string
	for i := 0; i < 5; i++ {
		code, stderr := s.sendmailAs(nobodyUID, "held")
		codes = append(codes, code)
		if code != 0 {
			refusal = stderr
		}
	}
	// One within the rate, two held, two refused.
	if got := fmt.Sprint(codes); got != "[0 0 0 73 73]" {
		t.Errorf("exit codes %s, want [0 0 0 73 73]", got)
	}
	if !strings.HasPrefix(refusal, "sendmail: ") || !strings.Contains(refusal, "max_held") || strings.Count(refusal, "\n") > 2 {
		t.Errorf("the refusal's stderr: %q", refusal)
	}
	if n := len(s.queueJSON("--held")); n != 2 {
		t.Errorf("%d held, want 2", n)
	}
	if n := strings.Count(s.log(), "user=nobody action=refuse limit=max_held max=2 got=2 source=*"); n != 2 {
		t.Errorf("policy lines:\n%s", s.log())
	}
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Released, the held mail goes; the account may be held again.
	if _, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "release", "--user", "nobody"); code != 0 {
		t.Fatalf("release: %d %s", code, stderr)
	}
	waitfor.True(t, "the released messages delivered", 30*time.Second, func() bool { return len(up.Messages()) == 3 })
	if code, stderr := s.sendmailAs(nobodyUID, "held again"); code != 0 {
		t.Errorf("after the release: exit %d %q", code, stderr)
	}
	if n := len(s.queueJSON("--held")); n != 1 {
		t.Errorf("%d held after the release and one more, want 1", n)
	}
}

// A maildrop file (sendmail already told its caller it was stored) over
// the account's max_held is bounced to its envelope sender with the
// reason, never dropped silently and never held.
func TestPolicyMaxHeldMaildropBounced(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "*", `
messages_per_hour = 1
action = "hold"
max_held = 2
`)
	s.dropAs(nobodyUID, "dropped", 5)
	s.start()
	bounces := func() (n int, data string) {
		for _, m := range up.Messages() {
			if m.From == "" && len(m.To) == 1 && m.To[0] == "app@example.org" {
				n++
				data = string(m.Data)
			}
		}
		return
	}
	waitfor.True(t, "two bounces", 30*time.Second, func() bool { n, _ := bounces(); return n >= 2 })
	if n, data := bounces(); n != 2 || !strings.Contains(data, "max_held") {
		t.Errorf("%d bounces, want 2 naming max_held:\n%s", n, data)
	}
	if n := len(s.queueJSON("--held")); n != 2 {
		t.Errorf("%d held, want 2", n)
	}
	if n := strings.Count(s.log(), "action=bounced"); n != 2 {
		t.Errorf("%d rejected-and-bounced lines, want 2:\n%s", n, s.log())
	}
}
