package queue

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// What a crash of relayd sends again is what the upstream took and the
// journal does not say is done: on one session at most one message, so
// a crash re-sends at most [queue] concurrency messages. That holds
// because a message's del line is written before the next message's
// data goes out on its session, pipelined or not. The upstream checks
// it at the end of each message's data, against the journal on disk (as
// a restarted relayd would read it): every message it took before is
// gone from the queue.
func TestDoneBeforeTheNextMessagesData(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts smtptest.Options
	}{
		{"pipelining", smtptest.Options{}},
		{"no pipelining", smtptest.Options{NoTLS: true, NoPipelining: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 40
			root := filepath.Join(t.TempDir(), "spool")
			var mu sync.Mutex
			var srv *smtptest.Server
			var bad []string
			tc.opts.Hook = func(_ context.Context, stage, _ string) error {
				if stage != smtptest.StageDataEnd {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				took := srv.Count() // recorded after this hook returns
				snap, err := spool.Snapshot(root)
				if err != nil {
					bad = append(bad, err.Error())
					return nil
				}
				if undone := len(snap) - (n - took); undone > 0 {
					bad = append(bad, fmt.Sprintf("message %d's data ended with %d of the %d messages taken before still queued", took+1, undone, took))
				}
				return nil
			}
			srv = smtptest.New(t, tc.opts)
			deliverAll(t, root, srv, n)
			mu.Lock()
			defer mu.Unlock()
			if len(bad) > 0 {
				t.Errorf("%d of %d messages went out while an earlier one was not recorded as done:\n%v", len(bad), n, bad)
			}
			if snap, err := spool.Snapshot(root); err != nil || len(snap) != 0 {
				t.Errorf("queue after the run: %d messages (%v)", len(snap), err)
			}
		})
	}
}

// deliverAll queues n messages in a spool at root and runs the queue,
// with concurrency 1, until they are delivered to srv; it fails t unless
// srv took all n.
func deliverAll(t *testing.T, root string, srv *smtptest.Server, n int) {
	t.Helper()
	e := newEnvAt(t, root, Settings{Concurrency: 1, Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, realOpts(), nil)})
	for i := 0; i < n; i++ {
		e.enqueue(t, 1001, "a@example.org", "b@example.net")
	}
	e.run()
	if got := srv.Count(); got != n {
		t.Fatalf("upstream took %d messages, want %d; log:\n%s", got, n, e.log)
	}
}
