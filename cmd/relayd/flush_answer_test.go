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

// runAs runs relayd's or sendmail's binary as uid with the site's
// configuration and returns stdout, stderr and the exit code.
func (s *site) runAs(uid int, bin string, args ...string) (string, string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Dir = "/"
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	code := 0
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			s.t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// deferredBurst starts relayd on a site whose policy defers what is over
// 2 messages an hour, with 6 of nobody's messages in the maildrop, and
// returns it and its upstream once 2 are delivered and 4 deferred by
// the policy.
func deferredBurst(t *testing.T) (*site, *smtptest.Server) {
	t.Helper()
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
	return s, up
}

// relayd queue flush says what it did: a user whose messages the
// per-account policy deferred is told that they keep their time (the
// flush sends none of them); a user's second flush within the minute is
// refused with the reason (EX_TEMPFAIL), not answered as done. sendmail
// -q, whose standard output may be a web page, stays silent either way.
func TestFlushAnswerSaysWhatHappens(t *testing.T) {
	s, up := deferredBurst(t)

	out, stderr, code := s.runAs(nobodyUID, relaydBin, "queue", "flush")
	if code != 0 || !strings.Contains(out, "no deferred message to retry") ||
		!strings.Contains(out, "4 message(s) deferred by the per-account policy keep their time") {
		t.Errorf("relayd queue flush as nobody: exit %d, stdout %q, stderr %q; want an answer saying the 4 the policy deferred keep their time", code, out, stderr)
	}

	out, stderr, code = s.runAs(nobodyUID, sendmailBin, "-q")
	if code != 0 || out != "" || stderr != "" {
		t.Errorf("sendmail -q as nobody within the minute: exit %d, stdout %q, stderr %q; want 0 and nothing", code, out, stderr)
	}

	out, stderr, code = s.runAs(nobodyUID, relaydBin, "queue", "flush")
	if code != 75 || !strings.Contains(stderr, "once a minute") {
		t.Errorf("relayd queue flush as nobody within the minute: exit %d, stdout %q, stderr %q; want 75 and the reason", code, out, stderr)
	}

	// Root flushes everything, the policy's deferrals included.
	out, stderr, code = runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "flush")
	if code != 0 || !strings.Contains(out, "4 deferred message(s) made due") {
		t.Errorf("relayd queue flush as root: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if _, err := up.WaitFor(6, 30*time.Second); err != nil {
		t.Errorf("root's flush: %v\n%s", err, s.log())
	}
}

// A user whose messages the policy held (action "hold", or a frozen
// account) is told by relayd queue flush that they stay held: a flush
// does not release them, only root does.
func TestFlushAnswerNamesHeldMessages(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "*", `
messages_per_hour = 2
action = "hold"
`)
	s.dropAs(nobodyUID, "burst", 5)
	s.start()
	waitfor.True(t, "3 messages held by the policy", 30*time.Second, func() bool {
		return len(s.queueJSON("--held")) == 3
	})
	out, stderr, code := s.runAs(nobodyUID, relaydBin, "queue", "flush")
	if code != 0 || !strings.Contains(out, "3 held message(s) stay held") {
		t.Errorf("relayd queue flush as nobody: exit %d, stdout %q, stderr %q; want an answer saying the 3 held stay held", code, out, stderr)
	}
}
