package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// The policy's counters are wall-clock times in the state file. A relayd
// that ran while the clock was a year ahead (a machine that booted with a
// bad RTC before NTP set it right) wrote them a year ahead; restarted
// after the clock was corrected, it must not take the account for a year
// over its limit: what it had counted is taken back with the clock, and
// the account's next message, within its rate, is delivered, not held.
func TestPolicyStateFromAClockAhead(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy.root]
messages_per_hour = 3
action = "hold"
`)
	s.prepareSpool()
	// One message counted at "then", a year ahead of now: the hourly
	// bucket's time is then + 20 minutes (an hour / 3).
	then := time.Now().Add(365 * 24 * time.Hour).UTC()
	st := map[string]any{"version": 1, "accounts": map[string]any{
		strconv.Itoa(os.Getuid()): map[string]any{"name": "root", "tat": map[string]time.Time{
			"messages_per_hour": then.Add(20 * time.Minute),
		}},
	}}
	b, _ := json.Marshal(st)
	path := filepath.Join(s.spool, spool.DirQueue, policy.StateFile)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, then, then); err != nil {
		t.Fatal(err)
	}
	s.start()
	s.drop("after the clock was corrected", 1)
	if _, err := up.WaitFor(1, 20*time.Second); err != nil {
		t.Fatalf("the message was not delivered: %v\n%s", err, s.log())
	}
	if strings.Contains(s.log(), "event=policy ") {
		t.Errorf("a policy decision on the first message after the restart:\n%s", s.log())
	}
	// The counters still count: the bucket holds the message before and
	// this one, so one more fits and the next is held.
	s.drop("within", 1)
	s.drop("over", 1)
	waitFor(t, "the fourth message held", 20*time.Second, func() bool { return strings.Contains(s.log(), "action=hold") })
	if _, err := up.WaitFor(2, 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
}
