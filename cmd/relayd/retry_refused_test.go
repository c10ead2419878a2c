package main

// A message the upstream refuses with a 4xx in its own transaction,
// through the real relayd: it is charged its attempt and waits for the
// [queue] retry schedule.

import (
	"context"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// With retry = ["1h"], an upstream that answers MAIL FROM of one sender
// with "451 4.3.0" (and takes everyone else's mail) sees that message
// once in 10 s, not every few seconds; `relayd queue show` counts the
// attempt and gives the next one an hour later; the other mail goes
// through.
func TestRefusedAtMailFollowsRetrySchedule(t *testing.T) {
	refusedOnlyOnce(t, smtptest.StageMail, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"})
}

// The same for a 421 after the data, the way large providers refuse one
// message they have read (a rate limit, a message they find suspicious):
// the whole message went out, and sending it again every few seconds,
// uncounted, is what such a limit punishes.
func TestRefused421AfterDataFollowsRetrySchedule(t *testing.T) {
	refusedOnlyOnce(t, smtptest.StageDataEnd, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Our system has detected an unusual rate of mail; temporarily rate limited"})
}

// refusedOnlyOnce runs relayd (retry = ["1h"], one connection) against an
// upstream that answers reply at stage to the transactions of
// stuck@example.org only, and checks that the message is tried once in
// about 10 s, its attempt counted and its next one an hour away, while
// other mail is delivered.
func refusedOnlyOnce(t *testing.T, stage string, reply *smtp.SMTPError) {
	var refused atomic.Int32
	var sender atomic.Value // the current transaction's (one connection)
	sender.Store("")
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, st, arg string) error {
		if st == smtptest.StageMail {
			sender.Store(arg)
		}
		if st == stage && sender.Load() == "stuck@example.org" {
			refused.Add(1)
			return reply
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`, concurrency: 1})
	o := spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t"}
	id := s.dropEnv(o, spool.Envelope{Sender: "stuck@example.org", Recipients: []string{"rcpt@example.net"}}, 1,
		func(int) string { return "From: stuck@example.org\nSubject: stuck\n\nbody\n" })[0]
	s.start()
	waitfor.True(t, "the first refusal", 20*time.Second, func() bool { return refused.Load() >= 1 })
	time.Sleep(5 * time.Second)
	s.drop("other", 3)
	waitfor.True(t, "the other mail", 20*time.Second, func() bool {
		got := s.subjects()
		return got["other 0"] > 0 && got["other 1"] > 0 && got["other 2"] > 0
	})
	time.Sleep(5 * time.Second)
	if n := refused.Load(); n != 1 {
		t.Errorf("the upstream saw the refused message %d times in about 10 s with retry = [\"1h\"], want 1", n)
	}
	out, _, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "show", id)
	if code != 0 {
		t.Fatalf("queue show: exit %d", code)
	}
	if !strings.Contains(out, "attempts:      1\n") {
		t.Errorf("queue show does not count the attempt the upstream refused:\n%s", out)
	}
	m := regexp.MustCompile(`(?m)^next: +(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("queue show has no next attempt:\n%s", out)
	}
	next, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(next) < 50*time.Minute {
		t.Errorf("next attempt %s, want about an hour after the refusal:\n%s", m[1], out)
	}
	if t.Failed() {
		t.Logf("log:\n%s", s.logTail(6000))
	}
}
