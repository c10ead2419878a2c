package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// Whatever sits in queue/seg under a segment's name that is not a regular
// file (a symbolic link, a directory) is left alone: relayd still starts
// and its queue is intact.
func TestStrayEntryInSegDir(t *testing.T) {
	for _, kind := range []string{"symlink", "directory"} {
		t.Run(kind, func(t *testing.T) {
			q := newTestQueue(t)
			a := putBody(t, q, Incoming, "kept\n")
			q.Sync()
			stray := filepath.Join(q.Root, DirSeg, segName(1000))
			var err error
			if kind == "symlink" {
				err = os.Symlink("/etc/passwd", stray)
			} else {
				err = os.Mkdir(stray, 0o700)
			}
			if err != nil {
				t.Fatal(err)
			}
			n, err := OpenQueue(q.Root)
			if err != nil {
				t.Fatalf("a %s in %s stops the queue from opening: %v", kind, DirSeg, err)
			}
			t.Cleanup(n.Close)
			if _, err := n.Recover(func(string) bool { return false }); err != nil {
				t.Fatal(err)
			}
			mustBody(t, n, a, "kept\n")
			mustBody(t, n, putBody(t, n, Incoming, "new\n"), "new\n")
			if _, err := os.Lstat(stray); err != nil {
				t.Errorf("the stray %s was removed: %v", kind, err)
			}
		})
	}
}
