package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The admin notice is relayd's own mail, not an account's: it is never
// held or refused by the per-account limits that relayd's own user falls
// under ("*" applies to every UID). Two accounts trip a limit of one
// message an hour; both notices reach notice_to, although relayd's user
// sends the second within the same hour as the first.
func TestPolicyNoticesNotLimited(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy]
notice_to = "abuse@example.com"
[policy."*"]
messages_per_hour = 1
action = "hold"
`)
	s.dropAs(nobodyUID, "nobody", 3)
	s.dropAs(1, "daemon", 3)
	s.start()
	waitfor.True(t, "two limit-tripped lines", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=limit-tripped ") >= 2
	})
	waitfor.True(t, "both notices delivered to notice_to", 30*time.Second, func() bool {
		return countTo(up, "abuse@example.com") >= 2
	})
	if strings.Contains(s.log(), "via=notice") && strings.Contains(s.log(), "not sent") {
		t.Errorf("a notice was not sent:\n%s", s.log())
	}
	if held := s.queueJSON("--held"); len(held) != 4 {
		t.Errorf("%d messages held, want the 4 over the accounts' limits: %+v", len(held), held)
	}
}
