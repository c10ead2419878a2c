package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Only a file named exactly as relayd names segments (16 lower-case hex
// digits) is a segment: a stray file whose name parses to the same number
// (upper-case digits) is left alone, never read in place of the segment
// nor reported as removed.
func TestSegmentNameCanonical(t *testing.T) {
	q := newTestQueue(t)
	q.mu.Lock()
	q.nextSeg = 0xab
	q.mu.Unlock()
	a := putBody(t, q, Incoming, "the real one\n")
	q.Sync()
	p, _, _, err := q.Section(a)
	if err != nil || filepath.Base(p) != segName(0xab) {
		t.Fatalf("segment %s, %v", p, err)
	}
	stray := filepath.Join(q.Root, DirSeg, strings.ToUpper(segName(0xab)))
	if err := os.WriteFile(stray, []byte(strings.Repeat("junk\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	n, log := reopen(t, q, nil)
	mustBody(t, n, a, "the real one\n")
	n.mu.Lock()
	got := n.segs[0xab].f.Name()
	n.mu.Unlock()
	if got != p {
		t.Errorf("segment 0xab is %s, want %s", got, p)
	}
	if strings.Contains(strings.Join(log, "\n"), filepath.Base(stray)) {
		t.Errorf("the stray file is in the log: %q", log)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("the stray file: %v", err)
	}
}
