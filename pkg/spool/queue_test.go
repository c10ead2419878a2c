package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newTestQueue prepares a private spool in a temp dir and opens its queue.
func newTestQueue(t testing.TB) *Queue {
	t.Helper()
	root := filepath.Join(t.TempDir(), "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	return openTestQueue(t, root)
}

func openTestQueue(t testing.TB, root string) *Queue {
	t.Helper()
	q, err := OpenQueue(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// reopen simulates a crash (the process dies, the kernel keeps what was
// written): the queue is opened again beside the old one, which is never
// closed properly, and recovered.
func reopen(t *testing.T, q *Queue, hasDrop func(string) bool) (*Queue, []string) {
	t.Helper()
	n := openTestQueue(t, q.Root)
	if hasDrop == nil {
		hasDrop = func(string) bool { return false }
	}
	log, err := n.Recover(hasDrop)
	if err != nil {
		t.Fatalf("Recover: %v (%q)", err, log)
	}
	return n, log
}

func testMeta(id string) *Meta {
	return &Meta{ID: id, Time: time.Now(), Origin: Origin{UID: 1234}, Env: Envelope{Sender: "a@example.org", Recipients: []string{"b@example.org"}}}
}

// putBody queues a message with body in state (with an empty record).
func putBody(t testing.TB, q *Queue, state, body string) string {
	t.Helper()
	id := NewID(time.Now())
	w, err := q.NewMessage(testMeta(id))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, body)
	if err := w.CommitState(state, nil); err != nil {
		t.Fatal(err)
	}
	return id
}

func putMessage(t *testing.T, q *Queue, state string) string {
	t.Helper()
	return putBody(t, q, state, "Subject: x\n\nbody\n")
}

func mustState(t *testing.T, q *Queue, id, want string) {
	t.Helper()
	got, err := q.Locate(id)
	if want == "" {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: in %q (%v), want gone", id, got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("%s: in %q (%v), want %q", id, got, err, want)
	}
}

// mustBody reads id back through OpenMessage and Meta.Body (CRC checked).
func mustBody(t *testing.T, q *Queue, id, want string) {
	t.Helper()
	m, meta, err := q.OpenMessage(id)
	if err != nil {
		t.Fatalf("OpenMessage %s: %v", id, err)
	}
	defer m.Close()
	b, err := io.ReadAll(meta.Body(m))
	if err != nil || string(b) != want || meta.ID != id {
		t.Fatalf("%s: body %q (%v), id %s; want %q", id, b, err, meta.ID, want)
	}
}

// files lists the regular files under queue/ (relative paths).
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.Walk(filepath.Join(root, DirQueue), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestTransitions(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	mustState(t, q, id, Incoming)
	if from, err := q.Claim(id); err != nil || from != Incoming {
		t.Fatalf("Claim: %q %v", from, err)
	}
	mustState(t, q, id, Active)
	if _, err := q.Claim(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Claim: %v, want ErrNotFound", err)
	}
	if err := q.Hold(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Hold of an active message: %v", err)
	}
	if _, err := q.Delete(id); err == nil || !strings.Contains(err.Error(), "being delivered") {
		t.Fatalf("Delete of an active message: %v", err)
	}
	d := &Delivery{Attempts: 1, Next: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Sent: []string{"b@example.org"}}
	if err := q.WriteState(Deferred, id, d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("WriteState in the wrong state: %v", err)
	}
	if err := q.WriteState(Active, id, d); err != nil {
		t.Fatal(err)
	}
	if err := q.Defer(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Deferred)
	got, err := q.ReadState(Deferred, id)
	if err != nil || got.Attempts != 1 || !got.Next.Equal(d.Next) || len(got.Sent) != 1 {
		t.Fatalf("state after Defer: %+v %v", got, err)
	}
	if _, err := q.ReadState(Incoming, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadState in the wrong state: %v", err)
	}
	if err := q.Hold(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Held)
	if _, err := q.Claim(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Claim of a held message: %v", err)
	}
	if err := q.Release(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Incoming)
	q.Claim(id)
	if err := q.Fail(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Failed)
	if uid, ok := q.UID(id); !ok || uid != 1234 {
		t.Fatalf("UID: %d %v", uid, ok)
	}
	mustBody(t, q, id, "Subject: x\n\nbody\n")
	if st, err := q.Delete(id); err != nil || st != Failed {
		t.Fatalf("Delete: %q %v", st, err)
	}
	mustState(t, q, id, "")
	if q.HasMessage(id) {
		t.Fatal("message left after Delete")
	}

	id2 := putMessage(t, q, Incoming)
	q.Claim(id2)
	if err := q.Done(id2); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id2, "")
	if q.HasMessage(id2) {
		t.Fatal("message left after Done")
	}
	if err := q.Done(id2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Done: %v", err)
	}
}

// The store creates no file per message or per state: a hundred messages
// through every state leave the journal and one segment.
func TestNoFilePerMessage(t *testing.T) {
	q := newTestQueue(t)
	for i := 0; i < 100; i++ {
		id := putMessage(t, q, Incoming)
		q.Claim(id)
		q.WriteStateNoSync(Active, id, &Delivery{Attempts: 1})
		if i%2 == 0 {
			q.Defer(id)
		} else {
			q.Done(id)
		}
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	got := files(t, q.Root)
	want := []string{JournalFile, filepath.Join(DirSeg, segName(1))}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("files %q, want %q", got, want)
	}
	if ids, _ := q.List(Deferred); len(ids) != 50 {
		t.Fatalf("%d deferred", len(ids))
	}
}

// List returns a state's IDs sorted, also after IDs left and came back
// out of order (the sorted set with stale IDs, compacted).
func TestListSorted(t *testing.T) {
	q := newTestQueue(t)
	var ids []string
	for i := 0; i < 3000; i++ {
		ids = append(ids, putMessage(t, q, Incoming))
	}
	for i, id := range ids {
		if i%3 != 0 {
			q.Claim(id)
			q.Requeue(id, i%3 == 1)
		}
	}
	// Back into incoming, newest first.
	for i := len(ids) - 1; i >= 0; i-- {
		if i%3 == 2 {
			q.Claim(ids[i])
			q.Requeue(ids[i], false)
		}
	}
	in, _ := q.List(Incoming)
	de, _ := q.List(Deferred)
	if len(in) != 2000 || len(de) != 1000 {
		t.Fatalf("incoming %d deferred %d", len(in), len(de))
	}
	for i := 1; i < len(in); i++ {
		if in[i-1] >= in[i] {
			t.Fatalf("incoming not sorted at %d", i)
		}
	}
	if c := q.Counts(); c[Incoming] != 2000 || c[Deferred] != 1000 || c[Active] != 0 {
		t.Fatalf("counts %v", c)
	}
}

// Everything survives a crash: the queue opened again (the old one never
// closed) has every message in its state with its record and body.
func TestReplayAfterCrash(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "first\n")
	b := putBody(t, q, Incoming, "second\n")
	c := putBody(t, q, Held, "third\n")
	q.Claim(b)
	q.WriteState(Active, b, &Delivery{Attempts: 3, LastReply: "451 later"})
	q.Defer(b)
	gone := putBody(t, q, Incoming, "gone\n")
	q.Claim(gone)
	q.Done(gone)
	q.Sync()
	n, _ := reopen(t, q, nil)
	mustState(t, n, a, Incoming)
	mustState(t, n, b, Deferred)
	mustState(t, n, c, Held)
	mustState(t, n, gone, "")
	if d, err := n.ReadState(Deferred, b); err != nil || d.Attempts != 3 || d.LastReply != "451 later" {
		t.Fatalf("record %+v %v", d, err)
	}
	mustBody(t, n, a, "first\n")
	mustBody(t, n, b, "second\n")
	mustBody(t, n, c, "third\n")
	// New messages go to a new segment; the old one is sealed.
	d := putBody(t, n, Incoming, "fourth\n")
	n.mu.Lock()
	seg := n.entries[d].seg
	n.mu.Unlock()
	if seg != 2 {
		t.Fatalf("new message in segment %d, want 2", seg)
	}
}

// A torn last line (a crash in the middle of an append) is cut off; the
// lines before it stand, and appends go on after them.
func TestTornTail(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	b := putMessage(t, q, Incoming)
	q.Sync()
	jp := filepath.Join(q.Root, JournalFile)
	fi, _ := os.Stat(jp)
	// b's claim, torn after 30 bytes.
	line := setLine(b, stActive, nil)
	f, _ := os.OpenFile(jp, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(line[:30])
	f.Close()
	// Snapshot (another process, relayd running) ignores the torn line.
	if s, err := Snapshot(q.Root); err != nil || s[b].State != Incoming || len(s) != 2 {
		t.Fatalf("snapshot %v %v", s, err)
	}
	n, log := reopen(t, q, nil)
	if !strings.Contains(strings.Join(log, "\n"), "journal-torn-tail") {
		t.Errorf("log %q", log)
	}
	mustState(t, n, a, Incoming)
	mustState(t, n, b, Incoming)
	if _, err := n.Claim(b); err != nil {
		t.Fatal(err)
	}
	n.Sync()
	n2, _ := reopen(t, n, nil)
	mustState(t, n2, b, Incoming) // active, never attempted: back to incoming
	if fi2, _ := os.Stat(jp); fi2.Size() < fi.Size()/2 {
		t.Errorf("journal shrank from %d to %d", fi.Size(), fi2.Size())
	}
}

// A damaged line in the middle (a block a power loss left as zeros, a bad
// sector) costs that line, not the lines after it.
func TestDamagedLineSkipped(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	b := putMessage(t, q, Incoming)
	c := putMessage(t, q, Incoming)
	q.Sync()
	jp := filepath.Join(q.Root, JournalFile)
	raw, _ := os.ReadFile(jp)
	lines := strings.SplitAfter(string(raw), "\n")
	// Damage b's add line: flip a byte, then zeros before c's.
	l := []byte(lines[1])
	l[20] ^= 1
	lines[1] = string(l)
	lines[2] = strings.Repeat("\x00", 100) + lines[2]
	os.WriteFile(jp, []byte(strings.Join(lines, "")), 0o600)
	n, log := reopen(t, q, nil)
	if !strings.Contains(strings.Join(log, "\n"), "journal-line-skipped") {
		t.Errorf("log %q", log)
	}
	mustState(t, n, a, Incoming)
	mustState(t, n, b, "")
	mustState(t, n, c, Incoming)
	mustBody(t, n, c, "Subject: x\n\nbody\n")
}

// Concurrent writers never share an append point: each message reads back
// whole, and each writer had a segment of its own.
func TestConcurrentWriters(t *testing.T) {
	q := newTestQueue(t)
	const writers, each = 8, 40
	var wg sync.WaitGroup
	ids := make([][]string, writers)
	start := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			<-start
			for i := 0; i < each; i++ {
				id := NewID(time.Now())
				mw, err := q.NewMessage(testMeta(id))
				if err != nil {
					t.Error(err)
					return
				}
				body := strings.Repeat(fmt.Sprintf("writer %d message %d\n", w, i), 100+i*37)
				for len(body) > 0 {
					k := min(len(body), 1000)
					mw.Write([]byte(body[:k]))
					body = body[k:]
				}
				if i%5 == 4 {
					mw.Abort()
					continue
				}
				if err := mw.Commit(); err != nil {
					t.Error(err)
					return
				}
				if err := q.Sync(); err != nil {
					t.Error(err)
				}
				ids[w] = append(ids[w], id)
			}
		}(w)
	}
	close(start)
	wg.Wait()
	n, _ := reopen(t, q, nil)
	for w := range ids {
		for _, id := range ids[w] {
			m, meta, err := n.OpenMessage(id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, meta.Body(m)); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			m.Close()
		}
	}
	if c := n.Counts(); c[Incoming] != writers*each*4/5 {
		t.Fatalf("counts %v", c)
	}
}

// Abort cuts the segment back: aborted messages leave no bytes.
func TestAbortTruncates(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "kept\n")
	w, err := q.NewMessage(testMeta(NewID(time.Now())))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(strings.Repeat("x", 200000)))
	w.Abort()
	w.Abort()
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after Abort")
	}
	b := putBody(t, q, Incoming, "next\n")
	q.Sync()
	q.mu.Lock()
	ea, eb := *q.entries[a], *q.entries[b]
	q.mu.Unlock()
	if ea.seg != eb.seg || eb.off != ea.off+ea.len {
		t.Fatalf("b at %d/%d, a at %d/%d+%d", eb.seg, eb.off, ea.seg, ea.off, ea.len)
	}
	// Beyond b: the segment's zero tail, nothing of the aborted message.
	raw, _ := os.ReadFile(filepath.Join(q.Root, DirSeg, segName(ea.seg)))
	if end := eb.off + eb.len; int64(len(raw)) < end || int64(len(raw)) > end+segZeroStep || len(bytes.TrimRight(raw[end:], "\x00")) > 0 {
		t.Fatalf("segment %d bytes, want %d and zeros after", len(raw), end)
	}
	mustBody(t, q, b, "next\n")
	// The same ID twice is refused.
	if _, err := q.NewMessage(testMeta(a)); err == nil {
		t.Fatal("NewMessage accepted a queued ID")
	}
}

// A message committed in another state (the policy's hold) never shows
// in incoming.
func TestCommitState(t *testing.T) {
	q := newTestQueue(t)
	id := NewID(time.Now())
	w, _ := q.NewMessage(testMeta(id))
	w.Write([]byte("x\n"))
	if err := w.CommitState(Deferred, &Delivery{Next: time.Unix(2e9, 0), Reason: "paced"}); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Deferred)
	if d, _ := q.ReadState(Deferred, id); d.Reason != "paced" {
		t.Fatalf("record %+v", d)
	}
	n, _ := reopen(t, q, nil)
	if d, _ := n.ReadState(Deferred, id); d == nil || d.Reason != "paced" {
		t.Fatalf("record after crash %+v", d)
	}
}

// A segment is unlinked only once a Sync covered the lines that emptied
// it: before that, a power loss could bring back entries pointing into it.
func TestSegmentRemovedAfterCoveringSync(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	q.Sync()
	n, _ := reopen(t, q, nil) // segment 1 is sealed now
	n.Claim(id)
	if err := n.Done(id); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(n.Root, DirSeg, segName(1))
	if _, err := os.Stat(seg); err != nil {
		t.Fatalf("segment removed before a Sync covered the del: %v", err)
	}
	if err := n.Maintain(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(seg); !os.IsNotExist(err) {
		t.Fatalf("empty sealed segment kept after Sync: %v", err)
	}
}

// An open segment no writer holds that empties once it is over
// segmentRetire is retired; below that it is reused.
func TestOpenSegmentRetired(t *testing.T) {
	q := newTestQueue(t)
	big := strings.Repeat("y", segmentRetire)
	id := putBody(t, q, Incoming, big)
	q.Claim(id)
	q.Done(id)
	q.Maintain()
	if _, err := os.Stat(filepath.Join(q.Root, DirSeg, segName(1))); !os.IsNotExist(err) {
		t.Fatalf("emptied 1 MiB open segment kept: %v", err)
	}
	small := putMessage(t, q, Incoming)
	q.Claim(small)
	q.Done(small)
	q.Maintain()
	if _, err := os.Stat(filepath.Join(q.Root, DirSeg, segName(2))); err != nil {
		t.Fatalf("small open segment removed: %v", err)
	}
	next := putMessage(t, q, Incoming)
	q.mu.Lock()
	seg := q.entries[next].seg
	q.mu.Unlock()
	if seg != 2 {
		t.Fatalf("next message in segment %d, want the reused 2", seg)
	}
}

// Recover: active goes back by its record, entries whose maildrop file is
// still there are dropped (pickup queues them again), entries whose
// segment is missing or short are dropped, segments without entries and
// queue/tmp are swept.
func TestRecover(t *testing.T) {
	q := newTestQueue(t)
	fresh := putMessage(t, q, Incoming)
	q.Claim(fresh)
	tried := putMessage(t, q, Incoming)
	q.Claim(tried)
	q.WriteState(Active, tried, &Delivery{Attempts: 2})
	redo := putMessage(t, q, Incoming)
	q.Sync()
	// A segment of its own whose data is lost.
	// (w2 takes the open segment, w gets a new one.)
	w2, _ := q.NewMessage(testMeta(NewID(time.Now().Add(time.Second))))
	w, _ := q.NewMessage(testMeta(NewID(time.Now())))
	lostID := w.meta.ID
	w2.Write([]byte("data\n"))
	w2.Commit()
	w.Write([]byte("lost\n"))
	w.Commit()
	q.Sync()
	q.mu.Lock()
	lostSeg := q.entries[lostID].seg
	q.mu.Unlock()
	os.Truncate(filepath.Join(q.Root, DirSeg, segName(lostSeg)), 10)
	os.WriteFile(filepath.Join(q.Root, DirSeg, segName(99)), []byte("orphan"), 0o600)
	os.WriteFile(filepath.Join(q.Root, DirTmp, "junk"), nil, 0o600)

	n, log := reopen(t, q, func(id string) bool { return id == redo })
	mustState(t, n, fresh, Incoming)
	mustState(t, n, tried, Deferred)
	mustState(t, n, redo, "")
	mustState(t, n, lostID, "")
	all := strings.Join(log, "\n")
	for _, want := range []string{"requeued id=" + fresh + " attempted=false", "requeued id=" + tried + " attempted=true",
		"removed-unacknowledged id=" + redo, "removed-segment file=" + filepath.Join(q.Root, DirSeg, segName(99))} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
	// The lost message's add line was in its last Sync: no line states
	// its bytes durable, so they may be lost to a power cut that Sync
	// did not survive, not only to damage after it.
	if !strings.Contains(all, "removed-state id="+lostID) && !strings.Contains(all, "removed-not-durable id="+lostID) {
		t.Errorf("log lacks a removed line for %s:\n%s", lostID, all)
	}
	if ents, _ := os.ReadDir(filepath.Join(q.Root, DirTmp)); len(ents) != 0 {
		t.Errorf("tmp not swept: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(q.Root, DirSeg, segName(99))); !os.IsNotExist(err) {
		t.Error("orphan segment kept")
	}
	// The new segments continue after the highest seen.
	id := putMessage(t, n, Incoming)
	n.mu.Lock()
	if seg := n.entries[id].seg; seg != 100 {
		t.Errorf("new segment %d, want 100", seg)
	}
	n.mu.Unlock()
}

// Recover compacts the journal: one line per message.
func TestRecoverCompactsJournal(t *testing.T) {
	q := newTestQueue(t)
	keep := putMessage(t, q, Incoming)
	for i := 0; i < 50; i++ {
		id := putMessage(t, q, Incoming)
		q.Claim(id)
		q.WriteStateNoSync(Active, id, &Delivery{Attempts: 1})
		q.Done(id)
	}
	q.Sync()
	reopen(t, q, nil)
	raw, _ := os.ReadFile(filepath.Join(q.Root, JournalFile))
	if n := strings.Count(string(raw), "\n"); n != 1 || !strings.Contains(string(raw), keep) {
		t.Fatalf("journal after Recover: %d lines:\n%s", n, raw)
	}
}

// Maintain rewrites a journal grown past four times its live size.
func TestMaintainCompactsJournal(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	rec := &Delivery{Attempts: 1, LastReply: strings.Repeat("r", 4000)}
	q.Claim(id)
	for q.jsize <= 4<<20 {
		q.WriteStateNoSync(Active, id, rec)
	}
	if err := q.Maintain(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(q.Root, JournalFile))
	if n := len(bytes.TrimRight(raw, "\x00")); n > 8000 || q.jsize != int64(n) {
		t.Fatalf("journal lines %d bytes after Maintain (jsize %d)", n, q.jsize)
	}
	// Appends go on in the new journal.
	q.Defer(id)
	n, _ := reopen(t, q, nil)
	if d, err := n.ReadState(Deferred, id); err != nil || d.Attempts != 1 {
		t.Fatalf("after compaction: %+v %v", d, err)
	}
}

// mostlyDeadSegment is a queue, reopened and with its clock past
// compactAge, whose segment 1 holds 20 messages of 5000 bytes written
// and made durable, of which all but the first and the last (ids[0] and
// ids[19]) are then claimed and done: a segment for Maintain to compact.
func mostlyDeadSegment(t *testing.T) (*Queue, []string) {
	t.Helper()
	q := newTestQueue(t)
	now := time.Now()
	q.Now = func() time.Time { return now }
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, putBody(t, q, Incoming, fmt.Sprintf("message %d\n%s", i, strings.Repeat("z", 5000))))
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	n, _ := reopen(t, q, nil)
	n.Now = func() time.Time { return now.Add(compactAge + time.Minute) }
	for _, id := range ids[1:19] {
		n.Claim(id)
		n.Done(id)
	}
	return n, ids
}

// Maintain copies the few live messages of an old, mostly dead segment
// into a new one; the old one goes.
func TestSegmentCompaction(t *testing.T) {
	n, ids := mostlyDeadSegment(t)
	n.Claim(ids[19]) // active: not moved
	if err := n.Maintain(); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	s0, s19 := n.entries[ids[0]].seg, n.entries[ids[19]].seg
	n.mu.Unlock()
	if s0 == 1 || s19 != 1 {
		t.Fatalf("segments after compaction: %d, %d", s0, s19)
	}
	mustBody(t, n, ids[0], "message 0\n"+strings.Repeat("z", 5000))
	n.Requeue(ids[19], false)
	n.Maintain()
	n.mu.Lock()
	s19 = n.entries[ids[19]].seg
	n.mu.Unlock()
	if s19 == 1 {
		t.Fatal("the last message was not moved")
	}
	n.Maintain()
	if _, err := os.Stat(filepath.Join(n.Root, DirSeg, segName(1))); !os.IsNotExist(err) {
		t.Fatalf("compacted segment kept: %v", err)
	}
	m, _ := reopen(t, n, nil)
	mustBody(t, m, ids[0], "message 0\n"+strings.Repeat("z", 5000))
	mustBody(t, m, ids[19], "message 19\n"+strings.Repeat("z", 5000))
}

// A reader keeps its segment readable even after the segment is removed.
func TestReaderOutlivesSegment(t *testing.T) {
	q := newTestQueue(t)
	id := putBody(t, q, Incoming, "still here\n")
	q.Sync()
	n, _ := reopen(t, q, nil)
	m, meta, err := n.OpenMessage(id)
	if err != nil {
		t.Fatal(err)
	}
	n.Claim(id)
	n.Done(id)
	n.Maintain()
	if _, err := os.Stat(filepath.Join(n.Root, DirSeg, segName(1))); !os.IsNotExist(err) {
		t.Fatal("segment kept")
	}
	b, err := io.ReadAll(meta.Body(m))
	if err != nil || string(b) != "still here\n" {
		t.Fatalf("%q %v", b, err)
	}
	m.Close()
}

// A failed Sync: its callers get the error, and the messages written into
// a segment whose fdatasync failed since its last good Sync are dropped
// (their writers were told they are not stored); the journal is rewritten
// before a later Sync reports success.
func TestSyncError(t *testing.T) {
	q := newTestQueue(t)
	good := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	bad := putMessage(t, q, Incoming)
	q.mu.Lock()
	s := q.segs[q.entries[bad].seg]
	q.mu.Unlock()
	// fdatasync on a closed descriptor fails: a stand-in for EIO.
	real := s.f
	s.f = closedFile()
	if err := q.Sync(); err == nil {
		t.Fatal("Sync succeeded")
	}
	s.f = real
	mustState(t, q, bad, "")
	mustState(t, q, good, Incoming)
	if !q.rewrite {
		t.Fatal("journal rewrite not scheduled")
	}
	next := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if q.rewrite {
		t.Fatal("journal not rewritten")
	}
	q.mu.Lock()
	if q.entries[next].seg == s.n {
		t.Error("the failed segment took new messages")
	}
	q.mu.Unlock()
	n, _ := reopen(t, q, nil)
	mustState(t, n, bad, "")
	mustState(t, n, good, Incoming)
	mustState(t, n, next, Incoming)
}

// A caller whose appends a failed Sync covered, and who was waiting when
// it failed, gets that error even when another Sync ran since.
func TestSyncErrorReachesCoveredCallers(t *testing.T) {
	q := newTestQueue(t)
	q.mu.Lock()
	q.seq += 5
	q.failLo, q.failHi, q.failErr = 2, 7, errors.New("boom")
	q.failEnd = q.syncEnds.Load() + 1 // it ended after the caller came
	q.synced = 9
	q.mu.Unlock()
	if err := q.Sync(); err == nil || err.Error() != "boom" {
		t.Fatalf("appends in a failed Sync's range: %v, want its error", err)
	}
	q.mu.Lock()
	q.seq += 5
	q.mu.Unlock()
	if err := q.Sync(); err != nil {
		t.Fatalf("appends after the failed range: %v", err)
	}
}

func TestQuarantineMessage(t *testing.T) {
	q := newTestQueue(t)
	id := putBody(t, q, Deferred, "evidence\n")
	name, err := q.QuarantineMessage(id)
	if err != nil || name != id {
		t.Fatal(name, err)
	}
	mustState(t, q, id, "")
	b, err := os.ReadFile(filepath.Join(q.Root, DirQuarantine, id))
	if err != nil || !strings.HasSuffix(string(b), "\n\nevidence\n") || !strings.HasPrefix(string(b), magic) {
		t.Fatalf("quarantine copy %q %v", b, err)
	}
	// A second file with the same label gets another name, never replaces.
	md, _ := OpenDir(q.Root, DirMaildrop)
	defer md.Close()
	os.WriteFile(filepath.Join(q.Root, DirMaildrop, id), []byte("x"), 0o600)
	if name, err := q.QuarantineFile(md, id, id); err != nil || name != id+".1" {
		t.Fatalf("QuarantineFile: %q %v", name, err)
	}
	if name, err := q.QuarantineFile(md, "missing", "../../etc/passwd"); err == nil {
		t.Fatalf("quarantined a missing file as %q", name)
	}
	if s := sanitize("../../etc/passwd"); strings.Contains(s, "/") || strings.HasPrefix(s, ".") {
		t.Fatalf("sanitize: %q", s)
	}
}

// A message whose bytes are damaged is ErrCorrupt when read (the worker
// quarantines it); a message whose segment is gone too.
func TestCorruptMessage(t *testing.T) {
	q := newTestQueue(t)
	id := putBody(t, q, Incoming, "payload\n")
	other := putBody(t, q, Incoming, "other\n")
	q.mu.Lock()
	e := *q.entries[id]
	q.mu.Unlock()
	f, _ := os.OpenFile(filepath.Join(q.Root, DirSeg, segName(e.seg)), os.O_WRONLY, 0)
	f.WriteAt([]byte("PAYLOAD"), e.off+e.len-8)
	f.Close()
	m, meta, err := q.OpenMessage(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, meta.Body(m)); !errors.Is(err, ErrChecksum) {
		t.Fatalf("damaged body: %v", err)
	}
	m.Close()
	f, _ = os.OpenFile(filepath.Join(q.Root, DirSeg, segName(e.seg)), os.O_WRONLY, 0)
	f.WriteAt([]byte("GARBAGE"), e.off)
	f.Close()
	if _, _, err := q.OpenMessage(id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged header: %v", err)
	}
	mustBody(t, q, other, "other\n")
	q.mu.Lock()
	q.entries[other].seg = 77
	q.mu.Unlock()
	if _, _, err := q.OpenMessage(other); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("missing segment: %v", err)
	}
	if _, err := q.QuarantineMessage(other); err != nil {
		t.Fatalf("quarantine of a message without segment: %v", err)
	}
}

// A queue of the old layout (a file per message, a directory per state)
// is imported at start with states, records and bodies; then the old
// files are gone.
func TestMigrateLegacy(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	for _, d := range legacyDirs {
		os.Mkdir(filepath.Join(root, DirQueue, d), 0o700)
	}
	md, _ := OpenDir(root, DirMsg)
	put := func(body string) string {
		id := NewID(time.Now())
		d, err := NewDrop(md, testMeta(id), 0)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(d, body)
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	state := func(s, id, rec string) { os.WriteFile(filepath.Join(root, DirQueue, s, id), []byte(rec), 0o600) }
	in := put("incoming\n")
	state(Incoming, in, "")
	de := put("deferred\n")
	state(Deferred, de, `{"attempts":2,"last_reply":"451 try later"}`)
	ac := put("active\n")
	state(Active, ac, `{"attempts":1}`)
	state(Incoming, ac, "") // a stale copy left by a lost claim rename
	he := put("held\n")
	state(Held, he, `{"attempts":0,"reason":"held by root"}`)
	orphan := put("orphan\n") // no state: not imported
	stateOnly := NewID(time.Now())
	state(Failed, stateOnly, "")
	bad := NewID(time.Now())
	os.WriteFile(filepath.Join(root, DirMsg, bad), []byte("not a spool file"), 0o600)
	state(Incoming, bad, "")
	md.Close()

	// Snapshot reads the old layout before relayd migrated it.
	if s, err := Snapshot(root); err != nil || s[de].Attempts != 2 || s[orphan].State != "" || s[in].UID != 1234 {
		t.Fatalf("snapshot of the old layout: %v %v", s, err)
	}
	q := openTestQueue(t, root)
	log, err := q.Recover(func(string) bool { return false })
	if err != nil {
		t.Fatalf("Recover: %v %q", err, log)
	}
	mustState(t, q, in, Incoming)
	mustState(t, q, de, Deferred)
	mustState(t, q, ac, Deferred)
	mustState(t, q, he, Held)
	mustState(t, q, orphan, "")
	mustState(t, q, stateOnly, "")
	mustState(t, q, bad, "")
	if d, _ := q.ReadState(Deferred, de); d.LastReply != "451 try later" {
		t.Errorf("record %+v", d)
	}
	if d, _ := q.ReadState(Held, he); d.Reason != "held by root" {
		t.Errorf("record %+v", d)
	}
	mustBody(t, q, in, "incoming\n")
	mustBody(t, q, de, "deferred\n")
	mustBody(t, q, he, "held\n")
	for _, d := range legacyDirs {
		if _, err := os.Stat(filepath.Join(root, DirQueue, d)); !os.IsNotExist(err) {
			t.Errorf("%s kept: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, DirQuarantine, bad)); err != nil {
		t.Errorf("undecodable message not quarantined: %v", err)
	}
	if !strings.Contains(strings.Join(log, "\n"), "migrated n=") {
		t.Errorf("log %q", log)
	}
	if err := Check(root, CurrentOwner()); err != nil {
		t.Errorf("Check after migration: %v", err)
	}
}

// A migration cut short (the old files still there after the import was
// made durable) imports nothing twice.
func TestMigrateLegacyRerun(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	id := NewID(time.Now())
	// legacy leaves what the old store had for id: its directories, the
	// message in msg/ and its (empty) state file in incoming/.
	legacy := func() {
		t.Helper()
		for _, d := range legacyDirs {
			if err := os.Mkdir(filepath.Join(root, DirQueue, d), 0o700); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
		}
		md, err := OpenDir(root, DirMsg)
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		d, err := NewDrop(md, testMeta(id), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(d, "once\n"); err != nil {
			t.Fatal(err)
		}
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, DirQueue, Incoming, id), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	legacy()
	q := openTestQueue(t, root)
	if _, err := q.migrateLegacy(); err != nil {
		t.Fatal(err)
	}
	// As if the removal had not happened.
	legacy()
	n, _ := reopen(t, q, nil)
	if c := n.Counts(); c[Incoming] != 1 {
		t.Fatalf("counts %v", c)
	}
	mustBody(t, n, id, "once\n")
}

// Snapshot sees what relayd did, from another process, while it runs.
func TestSnapshotOfJournal(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	b := putMessage(t, q, Incoming)
	q.Claim(b)
	q.WriteStateNoSync(Active, b, &Delivery{Attempts: 1})
	c := putMessage(t, q, Held)
	s, err := Snapshot(q.Root)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 3 || s[a].State != Incoming || s[a].Delivery != nil || s[b].State != Active || s[b].Attempts != 1 || s[c].State != Held || s[c].UID != 1234 {
		t.Fatalf("snapshot %+v", s)
	}
	cs, _ := Counts(q.Root)
	if cs[Incoming] != 1 || cs[Active] != 1 || cs[Held] != 1 {
		t.Fatalf("counts %v", cs)
	}
	if s, _ := Snapshot(q.Root); len(s) != 3 {
		t.Fatalf("queued %d", len(s))
	}
	if s, err := Snapshot(filepath.Join(t.TempDir(), "none")); err != nil || len(s) != 0 {
		t.Fatalf("snapshot of nothing: %v %v", s, err)
	}
}

// A FIFO (or anything but a regular file) where a segment should be
// blocks nothing: it is ignored, its messages found missing, the others
// read.
func TestFIFOSegmentDoesNotBlock(t *testing.T) {
	q := newTestQueue(t)
	w1, _ := q.NewMessage(testMeta(NewID(time.Now())))
	w2, _ := q.NewMessage(testMeta(NewID(time.Now().Add(time.Second))))
	io.WriteString(w1, "one\n")
	io.WriteString(w2, "two\n")
	w1.Commit()
	w2.Commit()
	q.Sync()
	p, _, _, err := q.Section(w2.meta.ID)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, log := reopen(t, q, nil)
		mustBody(t, n, w1.meta.ID, "one\n")
		mustState(t, n, w2.meta.ID, "")
		if !strings.Contains(strings.Join(log, "\n"), "ignored-segment") {
			t.Errorf("log %q", log)
		}
		// New segments are not named like the FIFO.
		mustBody(t, n, putBody(t, n, Incoming, "three\n"), "three\n")
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("blocked on a FIFO in queue/seg")
	}
}

// On a full file system the journal's reserve takes transitions (and
// removals) but refuses new messages and new records.
func TestFullSpoolKeepsTransitions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	root := filepath.Join(dir, "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	q := openTestQueue(t, root)
	var ids []string
	for i := 0; i < 50; i++ {
		ids = append(ids, putMessage(t, q, Incoming))
	}
	q.Sync()
	f, _ := os.Create(filepath.Join(dir, "fill"))
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	w, err := q.NewMessage(testMeta(NewID(time.Now())))
	if err == nil {
		if _, err = w.Write(make([]byte, 1<<20)); err == nil {
			err = w.Commit()
		}
		w.Abort()
	}
	if !IsFull(err) {
		t.Fatalf("a new message on a full spool: %v", err)
	}
	// Records until the reserve's floor is reached.
	rec := &Delivery{LastReply: strings.Repeat("r", 1000)}
	n := 0
	for ; q.WriteStateNoSync(Incoming, ids[0], rec) == nil; n++ {
		if n > 10000 {
			t.Fatal("records never refused")
		}
	}
	if err := q.WriteStateNoSync(Incoming, ids[0], rec); !IsFull(err) {
		t.Fatalf("record on a full spool: %v", err)
	}
	// Transitions and removals still go.
	for i, id := range ids {
		if _, err := q.Claim(id); err != nil {
			t.Fatalf("claim %d on a full spool: %v", i, err)
		}
		if i%2 == 0 {
			err := q.Done(id)
			if err != nil {
				t.Fatalf("done %d: %v", i, err)
			}
		} else if err := q.Requeue(id, true); err != nil {
			t.Fatalf("requeue %d: %v", i, err)
		}
	}
	os.Remove(filepath.Join(dir, "fill"))
	n2, _ := reopen(t, q, nil)
	if c := n2.Counts(); c[Deferred] != 25 || c[Incoming] != 0 {
		t.Fatalf("counts %v", c)
	}
}

// The constant JSON of an empty record is what encoding/json makes of it.
func TestEmptyDeliveryJSON(t *testing.T) {
	b, err := json.Marshal(&Delivery{})
	if err != nil || string(b) != emptyDelivery {
		t.Fatalf("json of an empty record %s (%v), the constant says %s", b, err, emptyDelivery)
	}
}
