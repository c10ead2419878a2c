package spool

import (
	"os"
	"path/filepath"
	"strings"
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

// Whatever is not a regular file at queue/journal (relayd creates a
// regular file) is refused with one clear error, naming the file and what
// to do, by relayd's start and by Snapshot alike.
func TestJournalNotRegularFile(t *testing.T) {
	for kind, make := range map[string]func(p string) error{
		"fifo":      func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink":   func(p string) error { return os.Symlink("/etc/passwd", p) },
		"directory": func(p string) error { return os.Mkdir(p, 0o700) },
	} {
		t.Run(kind, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "spool")
			if err := Prepare(root, CurrentOwner()); err != nil {
				t.Fatal(err)
			}
			jp := filepath.Join(root, JournalFile)
			if err := make(jp); err != nil {
				t.Fatal(err)
			}
			want := jp + " is not a regular file (relayd creates it as one): move it away"
			q, err := OpenQueue(root)
			if err == nil {
				q.Close()
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("OpenQueue: %v, want %q", err, want)
			}
			if _, err := Snapshot(root); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Snapshot: %v, want %q", err, want)
			}
		})
	}
}
