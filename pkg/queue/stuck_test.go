package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/smtptest"
)

// Run's promise: a session stuck on one message (an upstream that stopped
// answering mid-transaction) never holds up the others. A message that
// comes in meanwhile goes out on another worker's session, through
// Queue.Run and a real go-smtp upstream.
func TestStuckSessionDoesNotHoldOthers(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := smtptest.New(t, smtptest.Options{NoTLS: true, Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && arg == "stuck@example.net" {
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}})
	e := newEnv(t, Settings{Concurrency: 2, Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, realOpts(), nil)})
	e.enqueue(t, 1001, "a@example.org", "first@example.net")
	e.run()
	e.enqueue(t, 1001, "a@example.org", "stuck@example.net")
	e.q.Kick()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the message never reached the upstream")
	}
	e.enqueue(t, 1001, "a@example.org", "other@example.net")
	e.q.Kick()
	_, err := srv.WaitFor(2, 30*time.Second)
	close(release)
	if err != nil {
		t.Fatalf("a message waited for the stuck session: %v\n%s", err, e.log)
	}
	e.run()
	if n := srv.Count(); n != 3 {
		t.Fatalf("upstream got %d messages, want 3\n%s", n, e.log)
	}
}
