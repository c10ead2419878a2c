package main

import (
	"context"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// reasonsOf returns "relayd queue list --user nobody --json"'s reason of
// each message, by ID, with its state.
func (s *site) reasonsOf(t *testing.T) map[string][2]string {
	t.Helper()
	m := map[string][2]string{}
	for _, e := range s.queueJSON("--user", "nobody") {
		m[e.ID] = [2]string{e.State, e.Reason}
	}
	return m
}

// A queued message's reason says why it is in its state now (mailq(1):
// "why it waits"). A message the policy held, released by root and then
// deferred by the upstream no longer says "held by policy".
func TestReleasedPolicyHeldMessageLosesHeldReason(t *testing.T) {
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
action = "hold"
`)
	ids := s.dropAs(nobodyUID, "held", 2)
	s.start()
	waitfor.True(t, "one message held by the policy", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=policy ")
	})
	// The first message and the policy's notice to root.
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	var held string
	for _, id := range ids {
		if strings.Contains(s.log(), "event=policy id="+id) {
			held = id
		}
	}
	if r := s.reasonsOf(t)[held]; r[0] != "held" || !strings.HasPrefix(r[1], "held by policy") {
		t.Fatalf("%s before release: %q; want held by policy", held, r)
	}
	down.Store(true)
	if out, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "release", "--user", "nobody"); code != 0 {
		t.Fatalf("release --user nobody: exit %d, %q %q", code, out, stderr)
	}
	if !waitfor.Poll(30*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred id="+held+" ") }) {
		t.Fatalf("no failed attempt of %s within 30 s:\n%s", held, s.log())
	}
	if r := s.reasonsOf(t)[held]; r[0] != "deferred" || strings.Contains(r[1], "held by policy") {
		t.Errorf("%s released, then deferred by the upstream: state and reason %q; want deferred, not \"held by policy\"", held, r)
	}
}

// A message the policy deferred (action "defer") that root then holds
// says nothing of the policy's pace: it waits for a release, not a time.
func TestAdminHeldPacedMessageLosesDeferredReason(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	s.writeConfig(`
[policy."*"]
messages_per_hour = 1
action = "defer"
`)
	ids := s.dropAs(nobodyUID, "paced", 2)
	s.start()
	waitfor.True(t, "one message deferred by the policy", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=policy ")
	})
	// The first message and the policy's notice to root are sent: the
	// paced one is all nobody has waiting.
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	var paced string
	for _, id := range ids {
		if strings.Contains(s.log(), "event=policy id="+id) {
			paced = id
		}
	}
	waitfor.True(t, "the first message removed", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=removed ") >= 2
	})
	if out, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "hold", "--user", "nobody"); code != 0 || !strings.Contains(out, "1 message(s) of nobody held") {
		t.Fatalf("hold --user nobody: exit %d, %q %q", code, out, stderr)
	}
	if r := s.reasonsOf(t)[paced]; r[0] != "held" || strings.Contains(r[1], "deferred by policy") {
		t.Errorf("%s held by root: state and reason %q; want held, not \"deferred by policy until ...\"", paced, r)
	}
}

// rfc3339 matches a time as the reasons give it.
var rfc3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

// A message the policy deferred says when it goes once: "deferred by
// policy until T: rate limit ... would be 2", not again at the end
// ("within the limit again at T", which is the same time), in queue
// list --json and queue show.
func TestPolicyDeferredReasonGivesTimeOnce(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", "\nmessages_per_hour = 1\naction = \"defer\"\n")
	s.start()
	s.sendNobody("first")
	s.sendNobody("deferred")
	var e *queue.ListEntry
	for _, x := range s.queueJSON("--user", "nobody") {
		if x.State == spool.Deferred {
			e = &x
		}
	}
	if e == nil {
		t.Fatalf("no deferred message of nobody: %+v\n%s", s.queueJSON("--user", "nobody"), s.log())
	}
	want := "deferred by policy until " + e.Next.UTC().Format(time.RFC3339) + ": rate limit messages_per_hour=1 reached"
	if !strings.HasPrefix(e.Reason, want) || len(rfc3339.FindAllString(e.Reason, -1)) != 1 {
		t.Errorf("deferred reason %q; want it to start %q and give a time once", e.Reason, want)
	}
	show, _, _ := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "show", e.ID)
	for _, l := range strings.Split(show, "\n") {
		if strings.HasPrefix(l, "reason:") && len(rfc3339.FindAllString(l, -1)) != 1 {
			t.Errorf("queue show's reason gives %d times: %q", len(rfc3339.FindAllString(l, -1)), l)
		}
	}
}

// A message the policy deferred (action "defer") that is then tried and
// deferred by the upstream waits for the retry schedule, not for the
// policy: its reason no longer says "deferred by policy until T" (queue
// list --json, queue show), T being a time that has passed.
func TestTriedPacedMessageLosesDeferredReason(t *testing.T) {
	needRoot(t)
	var down atomic.Bool
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail && down.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{concurrency: 1})
	s.writeConfig(`
[policy]
notice_to = ""
[policy."*"]
messages_per_hour = 1
action = "defer"
`)
	ids := s.dropAs(nobodyUID, "paced", 2)
	s.start()
	waitfor.True(t, "one message deferred by the policy", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=policy ")
	})
	waitfor.True(t, "the first message removed", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=removed ")
	})
	var paced string
	for _, id := range ids {
		if strings.Contains(s.log(), "event=policy id="+id) {
			paced = id
		}
	}
	if r := s.reasonsOf(t)[paced]; r[0] != "deferred" || !strings.HasPrefix(r[1], "deferred by policy until ") {
		t.Fatalf("%s before its attempt: %q; want deferred by policy", paced, r)
	}
	down.Store(true)
	if out, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "flush"); code != 0 {
		t.Fatalf("queue flush: exit %d, %q %q", code, out, stderr)
	}
	if !waitfor.Poll(30*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred id="+paced+" ") }) {
		t.Fatalf("no failed attempt of %s within 30 s:\n%s", paced, s.log())
	}
	if r := s.reasonsOf(t)[paced]; r[0] != "deferred" || strings.Contains(r[1], "deferred by policy") {
		t.Errorf("%s tried, then deferred by the upstream: state and reason %q; want deferred, not \"deferred by policy until ...\"", paced, r)
	}
	show, _, _ := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "show", paced)
	if strings.Contains(show, "deferred by policy") || !strings.Contains(show, "451 4.3.0") {
		t.Errorf("queue show %s after the upstream deferred it:\n%s", paced, show)
	}
}
