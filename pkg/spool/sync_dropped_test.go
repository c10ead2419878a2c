package spool

import (
	"os"
	"testing"
)

// A writer commits its message; before it calls Sync, another caller's
// Sync fails on the message's segment (a writeback error) and drops it;
// more messages arrive and the writer's own Sync succeeds. The writer
// must still learn that its message is not stored: pickup would remove
// the maildrop file, the listener would answer 250, and the message would
// be lost.
func TestSyncReportsMessageDroppedBeforeIt(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	q.mu.Lock()
	s := q.segs[q.entries[a].seg]
	q.mu.Unlock()
	real := s.f
	broken, _ := os.Open(os.DevNull)
	broken.Close()
	s.f = broken // fdatasync fails: a stand-in for EIO
	if err := q.SyncIDs(a); err == nil {
		t.Fatal("the other caller's Sync succeeded")
	}
	s.f = real
	b := putMessage(t, q, Incoming) // another writer, another segment
	err := q.SyncIDs(a)
	if err == nil && !q.HasMessage(a) {
		t.Fatalf("the writer of %s was told it is stored, but it was dropped", a)
	}
	if err == nil {
		t.Fatal("no error, yet the message's segment failed before it was durable")
	}
	if err := q.SyncIDs(b); err != nil {
		t.Fatalf("the other writer: %v", err)
	}
	// Queued again (pickup's next pass), it is not reported again.
	w, _ := q.NewMessage(testMeta(a))
	w.Write([]byte("Subject: again\n\nbody\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := q.SyncIDs(a); err != nil {
		t.Fatalf("queued again: %v", err)
	}
}
