package queue

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/smtptest"
)

// remotes returns the connections (client addresses) over which the
// upstream got the messages addressed to rcpts, in order of arrival.
func remotes(srv *smtptest.Server, rcpts ...string) []string {
	var out []string
	for _, m := range srv.Messages() {
		if slices.Contains(rcpts, m.To[0]) && !slices.Contains(out, m.Remote) {
			out = append(out, m.Remote)
		}
	}
	return out
}

// batchEnv is a queue of concurrency workers delivering through Queue.Run
// to a real go-smtp upstream on loopback (srv), whose hook runs at each
// stage.
func batchEnv(t *testing.T, concurrency int, hook func(ctx context.Context, stage, arg string) error) (*env, *smtptest.Server) {
	t.Helper()
	srv := smtptest.New(t, smtptest.Options{NoTLS: true, Hook: hook})
	e := newEnv(t, Settings{Concurrency: concurrency, Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, realOpts(), nil)})
	return e, srv
}

// A short list of due messages on an upstream that answers at once goes
// to one worker, whose session pipelines them (the next message's
// commands behind the end of data of the one before), instead of one
// message to each of several workers, each with its own session, round
// trips and Sync of its attempt record.
func TestShortListGoesToOneSession(t *testing.T) {
	e, srv := batchEnv(t, 4, nil)
	learnNear(t, e)
	var rcpts []string
	for i := 0; i < 3; i++ {
		rcpts = append(rcpts, fmt.Sprintf("r%d@example.net", i))
		e.enqueue(t, 1001, "a@example.org", rcpts[i])
	}
	e.run()
	if got := remotes(srv, rcpts...); len(got) != 1 {
		t.Errorf("the 3 messages due at once went over %d sessions %v, want one", len(got), got)
	}
	// A backlog is still spread over several sessions.
	rcpts = nil
	for i := 0; i < 40; i++ {
		rcpts = append(rcpts, fmt.Sprintf("b%d@example.net", i))
		e.enqueue(t, 1001, "a@example.org", rcpts[i])
	}
	e.run()
	if got := remotes(srv, rcpts...); len(got) < 3 {
		t.Errorf("40 messages due at once went over %d sessions %v, want at least 3 (jobs of 16, 16 and 8)", len(got), got)
	}
}

// learnNear delivers messages one at a time until the scheduler counts
// the upstream near (it answers within nearMax a message). On a machine
// so loaded that a loopback upstream takes longer, the test is skipped:
// what it checks does not apply.
func learnNear(t *testing.T, e *env) {
	t.Helper()
	for i := 0; i < 10; i++ {
		e.enqueue(t, 1001, "a@example.org", fmt.Sprintf("warm%d@example.net", i))
		e.run()
		if e.q.sched.near() { // the loop is idle: run returned
			return
		}
	}
	t.Skipf("a loopback upstream took %v a message, over %v: the machine is too loaded for this test", e.q.sched.perMsg, nearMax)
}

// A lone message is sent at once: with no worker busy nothing waits for
// one, however long the hold (a minute here).
func TestLoneMessageGoesAtOnce(t *testing.T) {
	e, srv := batchEnv(t, 4, nil)
	learnNear(t, e)
	e.q.holdMax = time.Minute
	start := time.Now()
	e.enqueue(t, 1001, "a@example.org", "lone@example.net")
	e.run()
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("a lone message took %v", took)
	}
	if got := remotes(srv, "lone@example.net"); len(got) != 1 {
		t.Fatalf("lone message not delivered\n%s", e.log)
	}
}

// A message that comes while a worker is stuck on a session that stopped
// answering waits for it at most the hold (a few ms), then goes out on
// another session: the hold never makes one session's trouble everyone's.
func TestStuckSessionDoesNotHoldOthers(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e, srv := batchEnv(t, 2, func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && arg == "stuck@example.net" {
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	})
	learnNear(t, e)
	e.enqueue(t, 1001, "a@example.org", "stuck@example.net")
	e.q.Kick()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first message never reached the upstream")
	}
	before := srv.Count()
	e.enqueue(t, 1001, "a@example.org", "other@example.net")
	e.q.Kick()
	_, err := srv.WaitFor(before+1, 30*time.Second)
	close(release)
	if err != nil {
		t.Fatalf("a message waited for the stuck session: %v\n%s", err, e.log)
	}
	e.run()
	if got := remotes(srv, "stuck@example.net", "other@example.net"); len(got) != 2 {
		t.Errorf("sessions %v, want 2", got)
	}
}

// To an upstream far away (each message takes longer than nearMax),
// a short list still goes out on parallel sessions.
func TestFarUpstreamKeepsParallelSessions(t *testing.T) {
	e, srv := batchEnv(t, 4, func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageDataEnd {
			time.Sleep(2 * nearMax)
		}
		return nil
	})
	e.enqueue(t, 1001, "a@example.org", "first@example.net")
	e.run()
	if e.q.sched.near() {
		t.Fatalf("an upstream taking %v a message counts as near (%v)", 2*nearMax, e.q.sched.perMsg)
	}
	var rcpts []string
	for i := 0; i < 3; i++ {
		rcpts = append(rcpts, fmt.Sprintf("r%d@example.net", i))
		e.enqueue(t, 1001, "a@example.org", rcpts[i])
	}
	e.run()
	if got := remotes(srv, rcpts...); len(got) != 3 {
		t.Errorf("the 3 messages due at once went over %d sessions %v, want 3", len(got), got)
	}
}
