package spool

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO planted as queue/journal: opening the queue (relayd's start) and
// Snapshot (check-config, doctor, tests) answer with an error instead of
// blocking for ever on it.
func TestJournalFIFODoesNotBlock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, JournalFile), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() error{
		"OpenQueue": func() error {
			q, err := OpenQueue(root)
			if err == nil {
				q.Close()
			}
			return err
		},
		"Snapshot": func() error { _, err := Snapshot(root); return err },
	} {
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s accepted a FIFO as the journal", name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s blocked on a FIFO at %s", name, JournalFile)
		}
	}
}
