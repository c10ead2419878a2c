package main

import (
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A user who flushes in a loop is refused (once a minute), and the
// refusals are logged at most once a minute per user, with their count:
// a loop of sendmail -q must not flood the log.
func TestFlushRefusalsRateLimitedInLog(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	for i := 0; i < 6; i++ {
		_, stderr, code := s.runAs(nobodyUID, relaydBin, "queue", "flush")
		if want := map[bool]int{true: 0, false: 75}[i == 0]; code != want {
			t.Fatalf("flush %d as nobody: exit %d (%q), want %d", i, code, stderr, want)
		}
	}
	// Another user's first refusal has a line of its own.
	other := nobodyUID - 1
	for i := 0; i < 2; i++ {
		s.runAs(other, relaydBin, "queue", "flush")
	}
	lines := func(uid string) []string {
		var out []string
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "event=flush uid="+uid+" ") && strings.Contains(l, "throttled=") {
				out = append(out, l)
			}
		}
		return out
	}
	if l := lines("65534"); len(l) != 1 || !strings.Contains(l[0], "refused=1") {
		t.Errorf("throttled flush lines for uid 65534: %q; want one, refused=1 (the 4 after it counted for the next line)", l)
	}
	if l := lines("65533"); len(l) != 1 {
		t.Errorf("throttled flush lines for uid 65533: %q; want one", l)
	}
}
