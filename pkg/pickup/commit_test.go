package pickup

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/mailshim/mailshim/pkg/spool"
)

// Concurrent stores share the group commit: every one returns its own
// queue ID, the queue is told of each exactly once, and only once its
// message and state file are in place.
func TestStoreGroupCommitConcurrent(t *testing.T) {
	e := newEnv(t, testConfig())
	var mu sync.Mutex
	told := map[string]int{}
	var early []string
	e.p.Enqueued = func(id string) {
		ok := e.q.HasMessage(id)
		if _, err := e.q.ReadState(spool.Incoming, id); err != nil {
			ok = false
		}
		mu.Lock()
		defer mu.Unlock()
		told[id]++
		if !ok {
			early = append(early, id)
		}
	}
	store := e.p.Store(0)
	const sessions, each = 16, 8
	ids := make(chan string, sessions*each)
	errs := make(chan error, sessions*each)
	var wg sync.WaitGroup
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				m := &spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}},
					Origin: spool.Origin{UID: os.Getuid(), Via: "smtp"}}
				id, err := store(m, strings.NewReader(fmt.Sprintf("Subject: s%d m%d\n\nbody\n", s, i)))
				if err != nil {
					errs <- err
					continue
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := map[string]bool{}
	for id := range ids {
		if got[id] {
			t.Errorf("queue ID %s returned twice", id)
		}
		got[id] = true
		if told[id] != 1 {
			t.Errorf("%s: the queue was told %d times", id, told[id])
		}
	}
	if len(got) != sessions*each {
		t.Errorf("%d stored, want %d", len(got), sessions*each)
	}
	if len(early) > 0 {
		t.Errorf("the queue was told of %v before their files were in place", early)
	}
	if inc, _ := e.q.List(spool.Incoming); len(inc) != sessions*each {
		t.Errorf("incoming holds %d, want %d", len(inc), sessions*each)
	}
}
