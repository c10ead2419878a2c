package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Compaction makes the new segment's name durable (fsync of queue/seg)
// before the loc lines that point messages there, as it makes its bytes
// durable first: the Sync after the lines makes the journal durable at the
// same time as the directory, and a power loss between would leave the
// lines naming a segment that is not there, and the messages, long
// acknowledged, lost ("message file missing"). Here the directory's fsync
// fails (queue/seg opened O_PATH: creating files in it works, syncing it
// does not): the messages must stay where they were, in memory and in
// the journal.
func TestCompactionSyncsTheNewSegmentsNameFirst(t *testing.T) {
	n, ids := mostlyDeadSegment(t)
	if err := n.Sync(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(n.Root, DirSeg), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n.syncMu.Lock()
	n.mu.Lock()
	segdir := n.segdir
	n.segdir = os.NewFile(uintptr(fd), segdir.Name())
	n.mu.Unlock()
	n.syncMu.Unlock()
	merr := n.Maintain()
	n.syncMu.Lock()
	n.mu.Lock()
	n.segdir.Close()
	n.segdir = segdir
	n.mu.Unlock()
	n.syncMu.Unlock()
	if merr == nil {
		t.Fatal("Maintain: no error though queue/seg could not be synced")
	}
	for _, id := range []string{ids[0], ids[19]} {
		if p, _, _, err := n.Section(id); err != nil || filepath.Base(p) != segName(1) {
			t.Errorf("%s in %s (%v) after the failed compaction, want segment 1", id, p, err)
		}
	}
	// The journal as a crash leaves it names them where they are.
	m, _ := reopen(t, n, nil)
	for _, id := range []string{ids[0], ids[19]} {
		if p, _, _, err := m.Section(id); err != nil || filepath.Base(p) != segName(1) {
			t.Errorf("after a crash: %s in %s (%v), want segment 1", id, p, err)
		}
	}
	mustBody(t, m, ids[0], "message 0\n"+strings.Repeat("z", 5000))
	mustBody(t, m, ids[19], "message 19\n"+strings.Repeat("z", 5000))
}
