package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// blockJournalRewrite makes every rewrite of the journal fail, as a full
// file system does (queue/journal.new cannot be created).
func blockJournalRewrite(t *testing.T, root string) {
	t.Helper()
	p := filepath.Join(root, journalNew)
	if err := os.MkdirAll(filepath.Join(p, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// A journal rewrite that fails (no space for journal.new) is a
// compaction put off, not a durability failure: Sync still makes appends
// durable through the journal as it is, and segments left empty are
// still removed — on a full spool that is how space comes back.
func TestFailedJournalRewriteKeepsQueueWorking(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	rec := &Delivery{Attempts: 1, LastReply: strings.Repeat("r", 4000)}
	q.Claim(id)
	for q.jsize <= 4<<20 {
		q.WriteStateNoSync(Active, id, rec)
	}
	q.Done(id)
	blockJournalRewrite(t, q.Root)
	q.mu.Lock()
	for _, s := range q.segs {
		s.sealed = true
		q.checkDead(s)
	}
	q.mu.Unlock()
	q.Maintain() // the rewrite is due and fails
	if _, err := os.Stat(filepath.Join(q.Root, DirSeg, segName(1))); !os.IsNotExist(err) {
		t.Errorf("an empty segment is kept because the journal could not be rewritten: %v", err)
	}
	b := putMessage(t, q, Incoming)
	if err := q.Sync(); err != nil {
		t.Fatalf("Sync after a failed compaction: %v", err)
	}
	q.Hold(b)
	s, err := Snapshot(q.Root)
	if err != nil || s[b].State != Held || len(s) != 1 {
		t.Fatalf("snapshot %v %v", s, err)
	}
	// relayd starts on such a spool (Recover's compaction fails too).
	n := openTestQueue(t, q.Root)
	if log, err := n.Recover(func(string) bool { return false }); err != nil {
		t.Fatalf("Recover with the journal rewrite failing: %v (%q)", err, log)
	}
	mustState(t, n, b, Held)
	c := putMessage(t, n, Incoming)
	if err := n.Sync(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if s, _ := Snapshot(q.Root); s[c].State != Incoming {
		t.Fatalf("after restart: %v", s)
	}
}
