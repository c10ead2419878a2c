package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A user's flush leaves the messages the per-account policy deferred to
// the policy's pace, and only those: once root's flush made such a
// message due and it was tried (here while the upstream refuses every
// session, which charges no attempt), it no longer waits for the
// policy's time, and the user's flush retries it.
func TestFlushPacedOnlyUntilTried(t *testing.T) {
	needRoot(t)
	var down atomic.Bool
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if (stage == smtptest.StageEHLO || stage == smtptest.StageMail) && down.Load() {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing for maintenance"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{concurrency: 1})
	s.writeConfig(`
[policy."*"]
messages_per_hour = 1
action = "defer"
`)
	ids := s.dropAs(nobodyUID, "paced", 2)
	s.start()
	waitfor.True(t, "one message deferred by the policy", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=policy ") >= 1
	})
	// The first message and the policy's notice to root.
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	// The upstream goes down; root's flush sends the paced message now,
	// and the attempt fails on the upstream (not charged).
	down.Store(true)
	if out, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "flush"); code != 0 || !strings.Contains(out, "1 deferred message(s) made due") {
		t.Fatalf("root's flush: exit %d, %q %q", code, out, stderr)
	}
	var paced string
	for _, id := range ids {
		if strings.Contains(s.log(), "event=policy id="+id) {
			paced = id
		}
	}
	if paced == "" {
		t.Fatalf("no policy line names %v:\n%s", ids, s.log())
	}
	if !waitfor.Poll(30*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred id="+paced+" ") }) {
		t.Fatalf("no failed attempt of %s within 30 s:\n%s", paced, s.log())
	}
	// (Before it was tried, nobody's flush left it to the policy's pace:
	// TestFlushAnswerSaysWhatHappens. A user may flush once a minute, so
	// this test asks only now.)
	out, _, code := s.runAs(nobodyUID, relaydBin, "queue", "flush")
	if code != 0 || !strings.Contains(out, "1 deferred message(s) made due") || strings.Contains(out, "keep their time") {
		t.Errorf("flush as nobody after root's flush and a failed attempt: exit %d, %q; want the message made due, not left to the policy's pace\n%s", code, out, s.log())
	}
}
