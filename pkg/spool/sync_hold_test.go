package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// segOf returns the segment holding queued message id.
func segOf(t *testing.T, q *Queue, id string) *segment {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		t.Fatalf("%s is not queued", id)
	}
	return q.segs[e.seg]
}

func small(q *Queue, s *segment) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return s.smallSync()
}

// Sync makes a segment's fdatasync the raw way (holding the P) only when
// it has little to write: what was committed since its last Sync is
// small and no message is being streamed into it.
func TestSyncHoldsPOnlyForSmallWrites(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	s := segOf(t, q, a)
	if !small(q, s) {
		t.Fatal("a segment with one small message unsynced: not a small fdatasync")
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if s.synced != s.size {
		t.Fatalf("synced %d after Sync, size %d", s.synced, s.size)
	}

	// A large message committed: the segment's next fdatasync is not
	// small, until a Sync has written it.
	big := putBody(t, q, Incoming, "Subject: big\n\n"+string(bytes.Repeat([]byte("0123456789abcde\n"), (smallSync+4096)/16)))
	if segOf(t, q, big) != s {
		t.Fatal("the second message went to another segment") // one writer at a time: the idle one is reused
	}
	if small(q, s) {
		t.Fatalf("%d bytes unsynced: a small fdatasync", s.size-s.synced)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if !small(q, s) {
		t.Fatal("nothing unsynced after Sync: not a small fdatasync")
	}

	// A message longer than the writer's buffer, being streamed: its
	// bytes are in the segment file though not in its size yet.
	w, err := q.NewMessage(testMeta(NewID(time.Now())))
	if err != nil {
		t.Fatal(err)
	}
	if w.seg != s {
		t.Fatal("the writer got another segment")
	}
	w.Write([]byte("Subject: streamed\n\n"))
	w.Write(bytes.Repeat([]byte("0123456789abcde\n"), (100<<10)/16))
	if small(q, s) {
		t.Fatal("a message is being streamed into the segment: a small fdatasync")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if !small(q, s) {
		t.Fatal("100 KiB committed since the last Sync, nothing streamed: not a small fdatasync")
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
}

// The raw fdatasync reports its failures as the usual one does.
func TestFdatasyncHoldingP(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("data\n")
	if err := fdatasyncHoldingP(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := fdatasyncHoldingP(f); err == nil {
		t.Fatal("fdatasync of a closed file succeeded")
	}
	d, err := os.Open(os.DevNull) // a character device: EINVAL
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := fdatasyncHoldingP(d); err == nil {
		t.Fatal("fdatasync of /dev/null succeeded")
	}
}

// SyncWithin waits for another caller's Sync to cover its appends, and
// returns with it, long before its bound; when no other Sync comes, it
// makes its own once the bound is over. Either way its appends are
// durable when it returns.
func TestSyncWithin(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	appended := func() uint64 {
		t.Helper()
		if err := q.WriteStateNoSync(Incoming, id, &Delivery{Attempts: 1}); err != nil {
			t.Fatal(err)
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.seq
	}
	durable := func(target uint64) {
		t.Helper()
		q.syncMu.Lock()
		defer q.syncMu.Unlock()
		if q.synced < target {
			t.Fatalf("returned with appends up to %d synced, want %d", q.synced, target)
		}
	}

	target := appended()
	done := make(chan error, 1)
	go func() { done <- q.SyncWithin(time.Minute) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned (%v) before any Sync covered its appends", err)
	default:
	}
	if err := q.Sync(); err != nil { // another caller's: the doors' group commit
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still waiting after another Sync covered its appends")
	}
	durable(target)

	target = appended()
	start := time.Now()
	if err := q.SyncWithin(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("returned after %v with no other Sync, before its bound", d)
	}
	durable(target)
}

// A raw fdatasync that took longer than slowSync turns the raw way off
// for slowSyncOff: a slow disk must not stretch the collector's pauses.
func TestSlowRawSyncTurnsRawOff(t *testing.T) {
	rawWayTest(t)
	slowSync = time.Hour // the other tests' fdatasyncs may have been slow
	rawSyncOffUntil.Store(nil)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("x")
	if !holdP() {
		t.Fatal("holdP false before any slow fdatasync")
	}
	if err := fdatasyncHoldingP(f); err != nil {
		t.Fatal(err)
	}
	if !holdP() {
		t.Fatal("a fast fdatasync turned the raw way off")
	}
	slowSync = -1 // every fdatasync is slow
	if err := fdatasyncHoldingP(f); err != nil {
		t.Fatal(err)
	}
	if holdP() {
		t.Fatal("the raw way still on after a slow fdatasync")
	}
	slowSyncOff = 0
	slowSync = time.Hour
	now := time.Now()
	rawSyncOffUntil.Store(&now)
	if !holdP() {
		t.Fatal("the raw way still off after slowSyncOff")
	}
}

// Once a raw fdatasync was slow, the rest of the same Sync goes the usual
// way too: the next segment's fdatasync and the journal's would stretch
// a collection's pause to the disk's latency just the same.
func TestSlowRawSyncTurnsRawOffWithinSync(t *testing.T) {
	rawWayTest(t)
	q := newTestQueue(t)
	// One after the other, as where asynchronous I/O is refused (with
	// it, the three are waited for in one raw call: see
	// TestSlowAsyncSyncTurnsRawOff).
	q.aio.failed = true
	// Two messages written at once go into two segments: with the
	// journal, three small fdatasyncs for one Sync.
	var ws []*MsgWriter
	for range 2 {
		w, err := q.NewMessage(testMeta(NewID(time.Now())))
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("Subject: x\n\nbody\n"))
		ws = append(ws, w)
	}
	if ws[0].seg == ws[1].seg {
		t.Fatal("two writers share a segment")
	}
	for _, w := range ws {
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	slowSync = -1 // every fdatasync is slow
	rawSyncOffUntil.Store(nil)
	before := rawSyncs.Load()
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := rawSyncs.Load() - before; n != 1 {
		t.Fatalf("%d raw fdatasyncs in one Sync after the first was slow, want 1", n)
	}
}

// The wait for a Sync's fdatasyncs submitted together (aio.go) is a raw
// call when all of them are small, and one that took longer than
// slowSync turns the raw way off.
func TestSlowAsyncSyncTurnsRawOff(t *testing.T) {
	rawWayTest(t)
	q := newTestQueue(t)
	// The segment and its name made durable first: a Sync that syncs
	// queue/seg is never raw (TestAsyncSyncWithDirectoryNotRaw).
	putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	putMessage(t, q, Incoming)
	slowSync = time.Hour
	rawSyncOffUntil.Store(nil)
	if n, s := asyncSync(t, q); n != 1 || s != 1 {
		t.Fatalf("%d raw waits, %d io_submit calls for a Sync of one small message, want 1 and 1", n, s)
	}
	if !holdP() {
		t.Fatal("a fast Sync turned the raw way off")
	}
	putMessage(t, q, Incoming)
	slowSync = -1 // every fdatasync is slow
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if holdP() {
		t.Fatal("the raw way still on after a slow Sync")
	}
}

// A journal compaction leaves a smaller journal, made durable by its
// rewrite: the next Sync's fdatasync of the journal has only the lines
// appended since to write, and is made the raw way (alone: a Sync with
// segments to sync waits for all its fdatasyncs at once, see aio.go).
func TestRawJournalSyncAfterRewrite(t *testing.T) {
	rawWayTest(t)
	slowSync = time.Hour // the other tests' fdatasyncs may have been slow
	q := newTestQueue(t)
	var ids []string
	for range 5 {
		ids = append(ids, putMessage(t, q, Incoming))
	}
	kept := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := q.RemoveMessage(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	q.syncMu.Lock()
	err := q.syncLocked(true) // compaction: the journal rewritten
	q.syncMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	rawSyncOffUntil.Store(nil)
	before := rawSyncs.Load()
	if err := q.Hold(kept); err != nil { // a line and a Sync
		t.Fatal(err)
	}
	if n := rawSyncs.Load() - before; n != 1 {
		t.Fatalf("%d raw fdatasyncs for one line after a rewrite, want 1 (the journal's)", n)
	}
}

// A Sync that also syncs queue/seg (a segment was created) waits for its
// fdatasyncs the usual way, not the raw one: a directory's fsync commits
// the file system's journal, with other files' data, and may take as
// long as the disk is busy, which is what the raw way must never wait
// for (a collection's pause would stretch to it). Without the directory
// the wait is raw again.
func TestAsyncSyncWithDirectoryNotRaw(t *testing.T) {
	rawWayTest(t)
	slowSync = time.Hour // the other tests' fdatasyncs may have been slow
	q := newTestQueue(t)
	putMessage(t, q, Incoming) // a new segment: queue/seg to sync
	rawSyncOffUntil.Store(nil)
	if n, s := asyncSync(t, q); n != 0 || s != 1 {
		t.Fatalf("%d raw waits, %d io_submit calls for a Sync with queue/seg, want 0 and 1", n, s)
	}
	putMessage(t, q, Incoming) // the same segment: no directory
	if n, _ := asyncSync(t, q); n != 1 {
		t.Fatalf("%d raw waits for a Sync of one small message, want 1", n)
	}
}

// rawWayTest skips t where the raw way is never used (GOMAXPROCS 1) and
// puts slowSync, slowSyncOff and the raw way's state back when t ends,
// for a test that changes them.
func rawWayTest(t *testing.T) {
	t.Helper()
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("the raw way is used only with GOMAXPROCS > 1")
	}
	s, off := slowSync, slowSyncOff
	t.Cleanup(func() { slowSync, slowSyncOff = s, off; rawSyncOffUntil.Store(nil) })
}

// asyncSync makes q's Sync and returns how many raw waits and io_submit
// calls it made; it skips t where asynchronous I/O is refused.
func asyncSync(t *testing.T, q *Queue) (raws, submits uint64) {
	t.Helper()
	before, subs := rawSyncs.Load(), aioSubmits.Load()
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if q.aio.failed {
		t.Skip("no asynchronous I/O here (io_setup refused)")
	}
	return rawSyncs.Load() - before, aioSubmits.Load() - subs
}
