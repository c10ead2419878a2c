package spool

// The store against torn, garbled and hostile files in queue/, and against
// a journal rewrite that cannot be done (a full file system).

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// appendJournal appends raw bytes to the journal, as a crash, a power
// loss or someone with an editor would leave them.
func appendJournal(t *testing.T, root string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, JournalFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// A journal torn in the middle of a line, at every byte of it: the queue
// before the line is intact, the torn line is cut off, and the next
// append is read back (the torn bytes do not swallow it).
func TestJournalTornAtEveryByte(t *testing.T) {
	q := newTestQueue(t)
	a := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	q.Close()
	jp := filepath.Join(q.Root, JournalFile)
	good, _ := os.ReadFile(jp)
	line := mvLine(a, stHeld)
	for cut := 1; cut < len(line); cut++ {
		if err := os.WriteFile(jp, append(append([]byte(nil), good...), line[:cut]...), 0o600); err != nil {
			t.Fatal(err)
		}
		n := openTestQueue(t, q.Root)
		if _, err := n.Recover(func(string) bool { return false }); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		mustState(t, n, a, Incoming)
		if err := n.Hold(a); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		n.Close()
		s, err := Snapshot(q.Root)
		if err != nil || s[a].State != Held {
			t.Fatalf("cut %d: the append after a torn line was lost: %v %v", cut, s, err)
		}
		// Back to incoming for the next round.
		n = openTestQueue(t, q.Root)
		n.Recover(func(string) bool { return false })
		n.Release(a)
		n.Close()
		good, _ = os.ReadFile(jp)
	}
}

// A segment cut short by someone (or a file system that lost its end):
// the message whose bytes are gone is dropped with a log line, the others
// read back whole, and relayd neither crashes nor loops.
func TestSegmentCutShort(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "first\n")
	b := putBody(t, q, Incoming, "second\n")
	q.Sync()
	p, off, _, err := q.Section(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, off+10); err != nil {
		t.Fatal(err)
	}
	n, log := reopen(t, q, nil)
	mustBody(t, n, a, "first\n")
	mustState(t, n, b, "")
	if !strings.Contains(strings.Join(log, "\n"), "id="+b) {
		t.Errorf("no log line for %s: %q", b, log)
	}
}

// A journal line with a good checksum but hostile numbers (an offset and
// length that overflow, negative ones): Recover drops the entry instead of
// keeping a message no one can read, and nothing panics.
func TestHostileJournalNumbers(t *testing.T) {
	for _, c := range []struct {
		name     string
		off, len int64
	}{
		{"overflow", 1, math.MaxInt64},
		{"negative offset", -100, 120},
		{"negative length", 0, -5},
		{"empty", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := newTestQueue(t)
			a := putBody(t, q, Incoming, "kept\n")
			q.Sync()
			q.mu.Lock()
			seg := q.entries[a].seg
			q.mu.Unlock()
			id := NewID(time.Now().Add(time.Hour))
			appendJournal(t, q.Root, addLine(id, &entry{seg: seg, off: c.off, len: c.len, st: stIncoming}, math.MaxInt64))
			n, _ := reopen(t, q, nil)
			mustBody(t, n, a, "kept\n")
			if n.HasMessage(id) {
				m, _, err := n.OpenMessage(id)
				if m != nil {
					m.Close()
				}
				t.Fatalf("entry with off=%d len=%d kept after Recover (OpenMessage: %v)", c.off, c.len, err)
			}
		})
	}
}
