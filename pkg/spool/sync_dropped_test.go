package spool

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// closedFile is a file already closed: its fdatasync fails, a stand-in
// for EIO.
func closedFile() *os.File {
	f, _ := os.Open(os.DevNull)
	f.Close()
	return f
}

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
	s.f = closedFile()
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

// A Sync failed; the caller tries again with nothing appended since (the
// next pass of pickup over the batch whose maildrop files stayed). It gets
// a Sync of its own, which rewrites the journal from memory, not the
// failure it was told already: the retry failed until someone else
// appended a line, and an idle relayd never delivered the batch.
func TestSyncAfterFailureTriesAgain(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := q.WriteStateNoSync(Incoming, a, &Delivery{Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	q.mu.Lock()
	real := q.jf
	q.jf = closedFile() // the journal's fdatasync fails
	q.mu.Unlock()
	if err := q.Sync(); err == nil {
		t.Fatal("the Sync with a broken journal succeeded")
	}
	q.mu.Lock()
	q.jf = real
	q.mu.Unlock()
	if err := q.Sync(); err != nil {
		t.Fatalf("tried again, nothing appended since: %v", err)
	}
	if err := q.SyncWithin(time.Millisecond); err != nil {
		t.Fatalf("SyncWithin, nothing appended since: %v", err)
	}
	// The record is in the journal as rewritten.
	snap, err := Snapshot(q.Root)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := snap[a]; !ok || e.Delivery == nil || e.Delivery.Attempts != 1 {
		t.Fatalf("after the retry the journal has %+v", snap[a])
	}
}

// A message being streamed into a segment when that segment's fdatasync
// fails: the bytes it had written were part of the failed writeback, and
// the file's next fdatasync reports nothing (Linux reports a writeback
// error once per open file). Its commit must fail, or its writer's Sync
// would succeed and the message be reported stored with bytes lost.
func TestSyncFailureFailsMessageBeingWritten(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	id := NewID(time.Now())
	w, err := q.NewMessage(testMeta(id))
	if err != nil {
		t.Fatal(err)
	}
	s := w.seg
	if segOf(t, q, a) != s {
		t.Fatal("the writer got another segment")
	}
	w.Write([]byte("Subject: streamed\n\n"))
	w.Write(bytes.Repeat([]byte("0123456789abcde\n"), (100<<10)/16)) // past the buffer: in the file
	real := s.f
	s.f = closedFile()
	if err := q.SyncIDs(a); err == nil {
		t.Fatal("the Sync with a broken segment succeeded")
	}
	s.f = real
	w.Write([]byte("the end\n"))
	err = w.Commit()
	if err == nil {
		err = q.SyncIDs(id)
	}
	if err == nil {
		t.Fatal("the message being written when its segment's fdatasync failed was reported stored")
	}
	if q.HasMessage(id) {
		t.Fatal("still queued")
	}
	// Written again, into another segment, it is stored.
	id2 := putMessage(t, q, Incoming)
	if err := q.SyncIDs(id2); err != nil {
		t.Fatal(err)
	}
	if segOf(t, q, id2) == s {
		t.Fatal("a new message went into the segment whose fdatasync failed")
	}
}
