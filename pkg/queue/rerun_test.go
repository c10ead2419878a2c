package queue

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// TestRunRetriesDeferredOnItsOwn: a message deferred by a worker must be
// retried when its next attempt comes, without any other message, flush
// or restart waking the queue (found by test/e2e's upstream-down case:
// Run's timer was computed before the deferral and never re-armed).
func TestRunRetriesDeferredOnItsOwn(t *testing.T) {
	e := newEnv(t, Settings{Retry: []time.Duration{20 * time.Millisecond}, Concurrency: 1})
	var mu sync.Mutex
	calls := 0
	e.up.respond = func(from, rcpt string) *relay.Error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return temp("451 4.3.0 try again later")
		}
		return nil
	}
	// Real time here: Run arms a real timer for the next attempt.
	e.q = New(e.sp, maillog.New(&syncBuf{b: &bytes.Buffer{}}, nil), time.Now, e.q.settings())
	if err := e.q.Load(); err != nil {
		t.Fatal(err)
	}
	id := e.enqueue(t, 1001, "a@example.org", "b@example.org")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.q.Run(ctx, context.Background()) }()
	defer func() { cancel(); <-done }()
	e.q.Kick()
	deadline := time.Now().Add(20 * time.Second)
	for len(e.up.sent()) == 0 {
		if time.Now().After(deadline) {
			mu.Lock()
			n := calls
			mu.Unlock()
			t.Fatalf("deferred message %s never retried (%d attempts, state %q)", id, n, e.state(t, id))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ids, _ := e.sp.List(spool.Deferred); len(ids) != 0 {
		t.Errorf("still deferred: %v", ids)
	}
}
