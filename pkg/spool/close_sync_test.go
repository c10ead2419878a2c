package spool

import (
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseWhileSyncing: a Sync that runs while Close tears the queue
// down either finishes before the files are closed or finds the queue
// closed; it never sets up an asynchronous I/O context after Close
// destroyed the queue's (a leaked context, and descriptors used after
// they were closed).
func TestCloseWhileSyncing(t *testing.T) {
	for i := 0; i < 100; i++ {
		q := newTestQueue(t)
		var stop atomic.Bool
		var wg sync.WaitGroup
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					w, err := q.NewMessage(testMeta(NewID(time.Now())))
					if err != nil {
						continue
					}
					io.WriteString(w, "Subject: x\n\nbody\n")
					w.CommitState(Incoming, nil)
					q.Sync()
				}
			}()
		}
		time.Sleep(time.Millisecond)
		q.Close()
		stop.Store(true)
		wg.Wait()
		q.syncMu.Lock()
		ctx := q.aio.ctx
		q.syncMu.Unlock()
		if ctx != 0 {
			q.aio.close()
			t.Fatalf("round %d: a Sync set up an asynchronous I/O context after Close", i)
		}
	}
}
