package pickup

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
)

// lockedLog records what reaches the log's file and how many writes.
type lockedLog struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// A message stored by a door that answers its client (Store) has its
// pickup line in the log when Store returns, although the line waits in
// the log's buffer (its delay here an hour): the group commit's members
// write theirs out together.
func TestStorePickupLineWrittenBeforeAnswer(t *testing.T) {
	e := newEnv(t, testConfig())
	out := &lockedLog{}
	buf := maillog.NewBuffer(out, time.Hour)
	defer buf.Close()
	e.p.Log = maillog.New(buf, nil)
	store := e.p.Store(0)
	const sessions, each = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, sessions*each)
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id, err := store(storeMsg(), strings.NewReader(fmt.Sprintf("Subject: s%d m%d\n\nbody\n", s, i)))
				if err != nil {
					errs <- err
					continue
				}
				if !out.has("event=pickup id=" + id + " ") {
					errs <- fmt.Errorf("%s stored, its pickup line not in the log", id)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d pickup lines in %d writes", sessions*each, out.writes)
}
