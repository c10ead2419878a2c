package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A torn last line longer than maxJournalLine is cut off at start like a
// short one: the journal ends at its last complete line, so that the next
// append does not join the garbage (which would make replay skip it).
func TestTornTailOverLineLimit(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	q.Sync()
	jp := filepath.Join(q.Root, JournalFile)
	f, err := os.OpenFile(jp, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, maxJournalLine+1<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n := openTestQueue(t, q.Root)
	raw, _ := os.ReadFile(jp)
	if n.jsize != q.jsize || int64(len(raw)) < q.jsize || len(bytes.TrimRight(raw[q.jsize:], "\x00")) > 0 {
		t.Fatalf("journal is %d bytes after opening the queue, its lines %d, want %d (its last complete line) and zeros only after them", len(raw), n.jsize, q.jsize)
	}
	mustState(t, n, a, Incoming)
}
