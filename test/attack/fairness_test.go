package attack

// Fairness between users: how long one user's flood delays another
// user's message. The numbers are logged ("fairness: ...") and recorded in
// docs/ROBUSTNESS.md; the only assertion on time is a generous bound.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// flood runs n setgid sendmails as uid, par at a time, each with one
// message to rcpts recipients; it returns how many exited 0.
func (e *env) flood(uid, n, par, rcpts int, tag string) int {
	var ok atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	args := []string{"-i"}
	for r := 0; r < rcpts; r++ {
		args = append(args, fmt.Sprintf("flood%d@example.net", r))
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cmd := exec.Command(e.site.Sendmail, args...)
			cmd.Env = e.site.Env
			cmd.Stdin = strings.NewReader(fmt.Sprintf("Subject: %s %d\n\nflood\n", tag, i))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(uid, -1)}
			if cmd.Run() == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load())
}

// latency sends one message as uid and returns the time from sendmail's
// exit to its arrival upstream.
func (e *env) latency(uid int, subject string) time.Duration {
	e.t.Helper()
	skip := len(e.up.Messages())
	if r := e.sendmail(run{uid: uid, stdin: "Subject: " + subject + "\n\nx\n"}, "-i", "victim-user@example.net"); r.code != 0 {
		e.t.Fatalf("sendmail: %v", r)
	}
	start := time.Now()
	e.waitFor(subject+" delivered", 60*time.Second, func() bool { return len(e.delivered(skip, "Subject: "+subject+"\r\n")) == 1 })
	return time.Since(start)
}

const noLimits = `
[policy."*"]
messages_per_minute = 0
messages_per_hour = 0
messages_per_day = 0
recipients_per_minute = 0
recipients_per_hour = 0
recipients_per_day = 0
`

func TestFairness(t *testing.T) {
	const n = 300
	for _, tc := range []struct {
		name, conf, policy string
	}{
		{"default-policy", "", "the default [policy] (60 messages/min per account, action hold)"},
		{"no-rate-limits", noLimits, "rate limits off for every account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An upstream that takes 20 ms per message (4 connections):
			// slow enough that a flood outruns it and queues up.
			slow := func(ctx context.Context, stage, arg string) error {
				if stage == smtptest.StageDataEnd {
					time.Sleep(20 * time.Millisecond)
				}
				return nil
			}
			e := newEnv(t, smtptest.Options{Hook: slow}, "", tc.conf)
			tried(t, fmt.Sprintf("with %s and an upstream taking 20 ms per message, user A floods %d messages (8 sendmails at once), then user B sends one; user A sends one message to 1,000 recipients, then user B sends one", tc.policy, n),
				"user B's message is delivered within 30 s each time; its delay is measured and logged")
			base := e.latency(attacker(71), "baseline")
			t0 := time.Now()
			stored := e.flood(attacker(70), n, 8, 1, "flood")
			floodTime := time.Since(t0)
			behind := e.latency(attacker(71), "behind the flood")
			e.waitFor("the flood picked up", 60*time.Second, func() bool {
				return strings.Count(e.log(), "event=pickup ") >= stored+2
			})
			delivered := len(e.delivered(0, "Subject: flood "))
			held := strings.Count(e.relayd(run{uid: 0}, "queue", "list").stdout, " held ")
			skip := len(e.up.Messages())
			e.flood(attacker(72), 1, 1, 1000, "wide")
			wide := e.latency(attacker(71), "behind the wide message")
			e.waitFor("the wide message", 60*time.Second, func() bool {
				return len(e.delivered(skip, "Subject: wide 0")) >= 1 || strings.Contains(e.log(), "uid=61072") && strings.Contains(e.log(), "limit")
			})
			for _, d := range []time.Duration{base, behind, wide} {
				if d > 30*time.Second {
					t.Errorf("user B waited %v", d)
				}
			}
			t.Logf("fairness: %s: B alone %v; A's %d messages stored in %v (%d delivered by B's arrival, %d held); B behind the flood %v; B behind a 1,000-recipient message %v",
				tc.name, base.Round(time.Millisecond), stored, floodTime.Round(time.Millisecond), delivered, held, behind.Round(time.Millisecond), wide.Round(time.Millisecond))
		})
	}
}
