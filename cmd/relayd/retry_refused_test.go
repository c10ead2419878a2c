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

// One sender's message refused with a 4xx in its own transaction (a
// sender rate-limited or greylisted at the smarthost, "451 4.3.0" to its
// MAIL, "452 4.3.1" to its RCPT, "421 4.7.0" after its data) is that
// message's trouble, not the upstream's: as in Postfix, where only a
// connection-level failure throttles a site, the upstream's breaker does
// not open (no event=upstream-down), and the other users' messages queued
// with it, in the same delivery batch, go out in that pass, never logged
// deferred for a refusal that was not theirs.
func TestRefusedMessageDoesNotHoldTheUpstream(t *testing.T) {
	for _, tc := range []struct {
		name, stage string
		reply       *smtp.SMTPError
	}{
		{"451 at MAIL", smtptest.StageMail, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}},
		{"452 4.3.1 at RCPT", smtptest.StageRcpt, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "sender over its quota, try later"}},
		{"421 after the data", smtptest.StageDataEnd, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "temporarily rate limited"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var refused atomic.Int32
			var sender atomic.Value // the current transaction's (one connection at a time)
			sender.Store("")
			up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, st, arg string) error {
				if st == smtptest.StageMail {
					sender.Store(arg)
				}
				if st == tc.stage && sender.Load() == "stuck@example.org" {
					refused.Add(1)
					return tc.reply
				}
				return nil
			}})
			s := newSite(t, up, siteOpts{retry: `["1h"]`, concurrency: 1})
			o := spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t"}
			// The refused message first, then the others: one batch.
			s.dropEnv(o, spool.Envelope{Sender: "stuck@example.org", Recipients: []string{"stuck-rcpt@example.net"}}, 1,
				func(int) string { return "From: stuck@example.org\nSubject: stuck\n\nbody\n" })
			time.Sleep(2 * time.Millisecond)
			s.drop("other", 4)
			s.start()
			waitfor.True(t, "the refusal and the other mail", 20*time.Second, func() bool {
				got := s.subjects()
				return refused.Load() >= 1 && got["other 0"] > 0 && got["other 1"] > 0 && got["other 2"] > 0 && got["other 3"] > 0
			})
			time.Sleep(500 * time.Millisecond) // the lines of the last outcome
			log := s.log()
			if strings.Contains(log, "event=upstream-down") {
				t.Errorf("one message's %s opened the upstream's breaker (event=upstream-down)", tc.name)
			}
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "event=delivery") && strings.Contains(l, "to=rcpt@example.net") && !strings.Contains(l, "status=sent") {
					t.Errorf("another user's message was not sent in the pass of the refusal:\n%s", l)
				}
			}
			if t.Failed() {
				t.Logf("log:\n%s", s.logTail(6000))
			}
		})
	}
}

// A message the first upstream refused in its own transaction (451
// 4.3.0 at MAIL) fails over; when the next upstream cannot be reached,
// the message is deferred with the first upstream's refusal as its
// reason (log, queue show): that reply is why it is charged and waits
// for [queue] retry, not the second's connection error.
func TestRefusedThenFailoverDownKeepsTheRefusal(t *testing.T) {
	first := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, st, arg string) error {
		if st == smtptest.StageMail {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "sender over its hourly quota"}
		}
		return nil
	}})
	second := newUpstream(t, smtptest.Options{})
	second.Stop()
	s := newSite(t, first, siteOpts{retry: `["1h"]`, concurrency: 1})
	s.writeConfig(s.upstreamTOML(second))
	s.drop("quota", 1)
	s.start()
	var line string
	waitfor.True(t, "the message deferred", 20*time.Second, func() bool {
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "event=delivery") && strings.Contains(l, "status=deferred") {
				line = l
				return true
			}
		}
		return false
	})
	if !strings.Contains(line, "sender over its hourly quota") || !strings.Contains(line, "upstream="+first.Addr) {
		t.Errorf("the deferral does not give the first upstream's refusal:\n%s\nlog:\n%s", line, s.logTail(4000))
	}
}
