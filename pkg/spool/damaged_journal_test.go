package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A damaged add line in the middle of the journal loses that message's
// entry, but not its bytes: a segment no entry refers to is moved to
// quarantine/ when the journal had damaged lines (it may hold the only
// copy of accepted mail), and removed only when the journal was whole.
func TestDamagedJournalKeepsUnreferencedSegment(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "only copy\n")
	q.Sync()
	q.mu.Lock()
	seg := q.entries[a].seg
	q.mu.Unlock()
	// A restart seals the segment: the next message goes to another.
	q1, _ := reopen(t, q, nil)
	b := putBody(t, q1, Incoming, "other\n")
	q1.Sync()
	q1.mu.Lock()
	bseg := q1.entries[b].seg
	q1.mu.Unlock()
	if bseg == seg {
		t.Fatal("both messages in one segment")
	}
	jp := filepath.Join(q.Root, JournalFile)
	raw, _ := os.ReadFile(jp)
	lines := strings.SplitAfter(string(raw), "\n")
	if !strings.Contains(lines[0], a) {
		t.Fatalf("first line %q", lines[0])
	}
	l := []byte(lines[0])
	l[20] ^= 1
	lines[0] = string(l)
	os.WriteFile(jp, []byte(strings.Join(lines, "")), 0o600)
	n, log := reopen(t, q1, nil)
	mustState(t, n, a, "")
	mustBody(t, n, b, "other\n")
	if _, err := os.Stat(filepath.Join(q.Root, DirSeg, segName(seg))); err == nil {
		return // kept in place
	}
	ents, _ := os.ReadDir(filepath.Join(q.Root, DirQuarantine))
	for _, e := range ents {
		if b, _ := os.ReadFile(filepath.Join(q.Root, DirQuarantine, e.Name())); strings.Contains(string(b), "only copy") {
			return
		}
	}
	t.Fatalf("the segment holding the only copy of %s was removed after a damaged journal line (log %q)", a, log)
}
