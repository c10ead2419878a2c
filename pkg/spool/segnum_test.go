package spool

import "testing"

// Segment numbers are never reused, across restarts too: the journal may
// still hold lines about a removed segment (until its next rewrite), and a
// new segment under that number would give them other messages' bytes.
func TestSegmentNumberNotReused(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	q.mu.Lock()
	first := q.entries[id].seg
	q.segs[first].sealed = true
	q.mu.Unlock()
	q.Claim(id)
	q.Done(id)
	if err := q.Maintain(); err != nil { // removes the emptied segment
		t.Fatal(err)
	}
	q.mu.Lock()
	_, still := q.segs[first]
	q.mu.Unlock()
	if still {
		t.Fatal("segment not removed")
	}
	q.Close()
	n := openTestQueue(t, q.Root) // the journal still names the segment
	if _, err := n.Recover(func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	b := putMessage(t, n, Incoming)
	n.mu.Lock()
	got := n.entries[b].seg
	n.mu.Unlock()
	if got <= first {
		t.Fatalf("new segment %d after segment %d was removed: numbers reused", got, first)
	}
}
