package main

import (
	"strings"
	"testing"
	"time"
)

// Root has no rate limits unless a table for root itself sets them:
// [policy."*"] limits every account but root, whose cron jobs and alerts
// must not be held during the incident the limits are for.
func TestPolicyStarDoesNotLimitRoot(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "*", `
messages_per_minute = 2
action = "hold"
`)
	s.drop("root's alert", 4) // relayd's tests run as root
	s.start()
	if _, err := up.WaitFor(4, 30*time.Second); err != nil {
		t.Fatalf("root's mail limited by [policy.\"*\"]: %v\n%s", err, s.log())
	}
	if strings.Contains(s.log(), "event=policy ") {
		t.Errorf("a policy decision on root's mail:\n%s", s.log())
	}
}
