package spool

// The zero tails written ahead of the journal's end and of the end of the
// segment messages are appended to: appends overwrite blocks that are
// allocated, written and inside the file's size, so that a Sync's
// fdatasync writes data blocks only (no inode, no block bitmap).

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fileSpace returns the size and the allocated bytes of the file at p.
func fileSpace(t *testing.T, p string) (size, alloc int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// After a Sync, the next messages and their lines go into what is
// already written and allocated: neither the journal's nor the segment's
// size or allocation changes across their appends and the Sync that makes
// them durable, so its fdatasyncs have no inode to write.
func TestSyncChangesNoFileSize(t *testing.T) {
	q := newTestQueue(t)
	if _, err := q.Recover(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	first := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	seg, _, _, err := q.Section(first)
	if err != nil {
		t.Fatal(err)
	}
	jp := filepath.Join(q.Root, JournalFile)
	jsize, jalloc := fileSpace(t, jp)
	ssize, salloc := fileSpace(t, seg)
	var ids []string
	for round := 0; round < 20; round++ {
		for i := 0; i < 5; i++ {
			ids = append(ids, putBody(t, q, Incoming, "Subject: x\n\n"+strings.Repeat("line of a message\n", 100)))
		}
		if err := q.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			p           string
			size, alloc int64
		}{{jp, jsize, jalloc}, {seg, ssize, salloc}} {
			if size, alloc := fileSpace(t, c.p); size != c.size || alloc != c.alloc {
				t.Fatalf("round %d: %s went from %d bytes (%d allocated) to %d (%d): the Sync's fdatasync had an inode to write", round, c.p, c.size, c.alloc, size, alloc)
			}
		}
	}
	for _, id := range ids {
		if p, _, _, _ := q.Section(id); p != seg {
			t.Fatalf("%s in %s, not in %s", id, p, seg)
		}
	}
	// A crash: everything read back, no torn tail reported for the zeros.
	n, log := reopen(t, q, nil)
	if strings.Contains(strings.Join(log, "\n"), "journal-") {
		t.Errorf("the journal's zero tail was reported: %q", log)
	}
	for _, id := range append(ids, first) {
		mustState(t, n, id, Incoming)
	}
	mustBody(t, n, ids[len(ids)-1], "Subject: x\n\n"+strings.Repeat("line of a message\n", 100))
}

// A journal that ends in zeros (the tail written ahead of its end, left
// by a crash) replays whole: the zeros are its end, not a torn line and
// not a damaged one, for relayd and for Snapshot alike.
func TestJournalZeroTailIsItsEnd(t *testing.T) {
	q := newTestQueue(t)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, putMessage(t, q, Incoming))
	}
	q.Sync()
	q.Close()
	jp := filepath.Join(q.Root, JournalFile)
	good, _ := os.ReadFile(jp)
	for _, zeros := range []int{1, 4095, 300 << 10, 1 << 20} {
		if err := os.WriteFile(jp, append(bytes.Clone(good), make([]byte, zeros)...), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Snapshot(q.Root)
		if err != nil || len(s) != 3 {
			t.Fatalf("%d zeros: Snapshot %v %v", zeros, s, err)
		}
		n := openTestQueue(t, q.Root)
		log, err := n.Recover(func(string) bool { return false })
		if err != nil || len(log) > 0 || n.damaged {
			t.Fatalf("%d zeros: Recover %v, log %q (damaged %v)", zeros, err, log, n.damaged)
		}
		for _, id := range ids {
			mustState(t, n, id, Incoming)
		}
		n.Close()
	}
}

// A torn line followed by zeros (a crash while a line was written into
// the zero tail) is a torn tail: reported, cut off, and the next append
// is read back after it.
func TestJournalTornLineBeforeZeros(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	q.Sync()
	q.Close()
	jp := filepath.Join(q.Root, JournalFile)
	good, _ := os.ReadFile(jp)
	good = bytes.TrimRight(good, "\x00")
	line := mvLine(a, stHeld)
	img := append(append(bytes.Clone(good), line[:len(line)/2]...), make([]byte, 64<<10)...)
	if err := os.WriteFile(jp, img, 0o600); err != nil {
		t.Fatal(err)
	}
	n := openTestQueue(t, q.Root)
	log, err := n.Recover(func(string) bool { return false })
	if err != nil || !strings.Contains(strings.Join(log, "\n"), "journal-torn-tail") {
		t.Fatalf("Recover %v, log %q: want the torn tail reported", err, log)
	}
	mustState(t, n, a, Incoming)
	if err := n.Hold(a); err != nil {
		t.Fatal(err)
	}
	n2, log := reopen(t, n, nil)
	if strings.Contains(strings.Join(log, "\n"), "journal-") {
		t.Errorf("log after the torn tail was cut: %q", log)
	}
	mustState(t, n2, a, Held)
}

// A segment left with a zero tail by a crash: its messages are read back
// whole, and the zeros are dead space like any gap between messages
// (punched at Recover, counted for compaction).
func TestSegmentZeroTailAfterCrash(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "first\n")
	b := putBody(t, q, Incoming, "second\n")
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	p, off, n, _ := q.Section(b)
	size, _ := fileSpace(t, p)
	if size <= off+n {
		t.Fatalf("the open segment is %d bytes, its last message ends at %d: no zero tail", size, off+n)
	}
	nq, _ := reopen(t, q, nil)
	mustBody(t, nq, a, "first\n")
	mustBody(t, nq, b, "second\n")
	if got := nq.Punched(); got < size-off-n-2*nq.blk {
		t.Errorf("%d bytes punched at Recover; the zero tail was %d", got, size-off-n)
	}
	nq.mu.Lock()
	s := nq.segs[nq.entries[a].seg]
	nq.mu.Unlock()
	if !s.sealed || s.size != size {
		t.Errorf("segment after the crash: sealed %v, size %d, want sealed at %d", s.sealed, s.size, size)
	}
	// New messages go to a new segment; Close cuts its zero tail, and
	// keeps the journal's (its reserve).
	c := putBody(t, nq, Incoming, "third\n")
	nq.Sync()
	pc, offc, nc, _ := nq.Section(c)
	nq.Close()
	if size, _ := fileSpace(t, pc); size != offc+nc {
		t.Errorf("closed: the open segment is %d bytes, its data ends at %d", size, offc+nc)
	}
	if size, _ := fileSpace(t, filepath.Join(q.Root, JournalFile)); size < nq.jsize+journalSlack {
		t.Errorf("closed: the journal is %d bytes, its lines end at %d: its zero tail was cut", size, nq.jsize)
	}
}

// A segment sealed with a zero tail (here an open one left empty past
// segmentRetire) has the tail cut off: its file ends with its data.
func TestSealedSegmentTrimmed(t *testing.T) {
	q := newTestQueue(t)
	ids := []string{putMessage(t, q, Incoming)}
	ids = append(ids, putBody(t, q, Incoming, strings.Repeat("x", segmentRetire-(10<<10))))
	ids = append(ids, putMessage(t, q, Incoming)) // renews the zero tail
	ids = append(ids, putBody(t, q, Incoming, strings.Repeat("y", 20<<10)))
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	p, off, n, _ := q.Section(ids[3])
	if size, _ := fileSpace(t, p); size <= off+n {
		t.Fatalf("the open segment is %d bytes, its data ends at %d: no zero tail", size, off+n)
	}
	for _, id := range ids {
		if p2, _, _, _ := q.Section(id); p2 != p {
			t.Fatalf("%s not in %s", id, p)
		}
		if _, err := q.Claim(id); err != nil {
			t.Fatal(err)
		}
		if err := q.Done(id); err != nil {
			t.Fatal(err)
		}
	}
	if size, _ := fileSpace(t, p); size != off+n {
		t.Errorf("sealed: the segment is %d bytes, its data ends at %d", size, off+n)
	}
}

// Abort gives the zero tail back as it was: the file keeps its size and
// the aborted bytes are zeros again, also for a message streamed past the
// end of the tail.
func TestAbortRestoresZeroTail(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	q.Sync()
	p, off, n, _ := q.Section(a)
	size, _ := fileSpace(t, p)
	for _, body := range []int{100, 200 << 10, 3 << 20} {
		w, err := q.NewMessage(testMeta(NewID(time.Now())))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bytes.Repeat([]byte("z"), body))
		w.Abort()
		got, _ := fileSpace(t, p)
		if got < size || got > off+n+segZeroStep {
			t.Fatalf("%d bytes aborted: the segment is %d bytes (was %d)", body, got, size)
		}
		size = got
		b, _ := os.ReadFile(p)
		if i := bytes.IndexFunc(b[off+n:], func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("%d bytes aborted: byte %d of the tail is not zero", body, off+n+int64(i))
		}
	}
	b := putBody(t, q, Incoming, "after\n")
	n2, _ := reopen(t, q, nil)
	mustBody(t, n2, a, "Subject: x\n\nbody\n")
	mustBody(t, n2, b, "after\n")
}

// On a file system with less room than a zero tail, the segment gets what
// there is (or nothing) and messages are stored all the same: none is
// refused for want of a tail.
func TestZeroTailOnFullFileSystem(t *testing.T) {
	dir, root := smallSpool(t, "4m")
	q := openTestQueue(t, root)
	if _, err := q.Recover(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	// Everything taken but 64 KiB: less than a segment's zero tail.
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	var n int64
	for {
		k, err := f.Write(chunk)
		n += int64(k)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(n - 64<<10); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, putBody(t, q, Incoming, "Subject: x\n\n"+strings.Repeat("m", 2000)))
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	p, off, ln, _ := q.Section(ids[9])
	if size, _ := fileSpace(t, p); size >= off+ln+segZeroStep-segZeroLow {
		t.Errorf("the segment is %d bytes, more than the file system had room for", size)
	}
	n2, _ := reopen(t, q, nil)
	for _, id := range ids {
		mustBody(t, n2, id, "Subject: x\n\n"+strings.Repeat("m", 2000))
	}
}

// A clean stop and start on a full file system keeps the journal's
// reserve: its zero tail stays at Close (a stop on a full disk is when an
// administrator restarts relayd), so the restarted relayd still records
// the transitions of its deliveries, which free the space, with nothing
// left on the file system to renew the tail.
func TestJournalReserveKeptAcrossRestartOnFullFileSystem(t *testing.T) {
	dir, root := smallSpool(t, "4m")
	q := openTestQueue(t, root)
	if _, err := q.Recover(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 50; i++ {
		ids = append(ids, putMessage(t, q, Incoming))
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	q.Close()
	// Everything the stop left free is taken (a maildrop, another
	// program's files on the same file system).
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	n := openTestQueue(t, root)
	if _, err := n.Recover(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if _, err := n.Claim(id); err != nil {
			t.Fatalf("claim %d after a restart on a full file system: %v", i, err)
		}
		if err := n.Done(id); err != nil {
			t.Fatalf("done %d after a restart on a full file system: %v", i, err)
		}
	}
}
