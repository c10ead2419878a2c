package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A user's own "sendmail -q" (any user may flush their own mail) does not
// make the messages the policy deferred due: they go out at the allowed
// rate all the same. Otherwise a compromised site's script defeats
// action = "defer" by calling sendmail -q after each burst.
func TestPolicyDeferredNotFlushedByTheUser(t *testing.T) {
	s, _ := deferredBurst(t)
	if out, stderr, code := s.runAs(nobodyUID, sendmailBin, "-q"); code != 0 {
		t.Fatalf("sendmail -q as nobody: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	waitfor.True(t, "the flush logged", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=flush uid=65534") })
	// A flush is acted on at once: give the queue a few seconds to send
	// what it would.
	time.Sleep(3 * time.Second)
	if n := s.subjectsWithPrefix("burst"); n != 2 {
		t.Errorf("%d messages delivered after the user's flush, want the 2 within the rate\n%s", n, s.log())
	}
	if l := s.queueJSON(); len(l) != 4 {
		t.Errorf("%d messages queued, want the 4 deferred", len(l))
	}
}
