package main

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A user's own "sendmail -q" (any user may flush their own mail) does not
// make the messages the policy deferred due: they go out at the allowed
// rate all the same. Otherwise a compromised site's script defeats
// action = "defer" by calling sendmail -q after each burst.
func TestPolicyDeferredNotFlushedByTheUser(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy."*"]
messages_per_hour = 2
action = "defer"
`)
	s.dropAs(nobodyUID, "burst", 6)
	s.start()
	waitfor.True(t, "4 messages deferred by the policy", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=policy ") >= 4
	})
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sendmailBin, "-q")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}}
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail -q as nobody: %v %s", err, out)
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
