package main

import (
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A [policy.NAME] or [policy."group:NAME"] table for a user or group that
// does not exist (a typo: "www_data" for "www-data") applies to nobody:
// the account it was meant for has no limit. check-config says so (a
// warning: the user may be created later), and leaves existing names,
// "uid:N" and "*" alone.
func TestCheckConfigPolicyUnknownAccount(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: "\n[policy.\"*\"]\nmessages_per_minute = 10\n\n[policy.nobody]\nmessages_per_minute = 5\n\n" +
		"[policy.\"uid:4242\"]\nmessages_per_minute = 5\n\n[policy.\"group:nogroup\"]\nmessages_per_minute = 5\n\n" +
		"[policy.no-such-user-x9]\nmessages_per_minute = 5\n\n[policy.\"group:no-such-group-x9\"]\nmessages_per_minute = 5\n"})
	_, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 0 {
		t.Fatalf("check-config: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		`relayd: warning: [policy.no-such-user-x9]: no user "no-such-user-x9" on this system: the table applies to nobody`,
		`relayd: warning: [policy."group:no-such-group-x9"]: no group "no-such-group-x9" on this system: the table applies to nobody`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("check-config's stderr has no %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stderr, "applies to nobody"); n != 2 {
		t.Errorf("%d tables said to apply to nobody, want 2:\n%s", n, stderr)
	}
}
