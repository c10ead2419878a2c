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
	fi, err := os.Stat(jp)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(jp, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, maxJournalLine+1<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n := openTestQueue(t, q.Root)
	if fi2, _ := os.Stat(jp); fi2.Size() != fi.Size() {
		t.Fatalf("journal is %d bytes after opening the queue, want %d (its last complete line)", fi2.Size(), fi.Size())
	}
	mustState(t, n, a, Incoming)
}
