package main

// relayd started on a queue whose files someone tampered with while it
// was stopped: garbage in the journal, a flipped byte in a queued
// message, stray files in queue/seg. It must start, deliver every
// message that is intact, quarantine the damaged one (never send it, and
// never retry it in a loop), and leave nothing else behind.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

func TestStoreHostileFiles(t *testing.T) {
	up, accept := newDeferringUpstream(t)
	s := newSite(t, up, siteOpts{retry: `["1s"]`})
	const n = 40
	s.drop("hostile", n)
	d := s.start()
	waitfor.True(t, "every message queued", 30*time.Second, func() bool {
		q, err := spool.Snapshot(s.spool)
		ents, _ := os.ReadDir(filepath.Join(s.spool, spool.DirMaildrop))
		return err == nil && len(q) == n && len(ents) == 0
	})
	if d.term(t) != 0 {
		t.Fatalf("relayd did not stop cleanly:\n%s", s.logTail(20))
	}

	// A flipped byte in the body of "hostile 7", in its segment.
	segs, err := filepath.Glob(filepath.Join(s.spool, spool.DirSeg, "*"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segments (%v)", err)
	}
	flipped := false
	for _, p := range segs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte("\n\nbody 7\n")); i >= 0 {
			b[i+len("\n\nbody ")] = '8'
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			flipped = true
		}
	}
	if !flipped {
		b, _ := os.ReadFile(segs[0])
		t.Fatalf("message not found in the segments %v: %q", segs, b[:min(len(b), 1500)])
	}
	// Garbage lines in the journal (a whole one and a torn one).
	jf, err := os.OpenFile(filepath.Join(s.spool, spool.JournalFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(jf, "deadbeef {\"op\":\"del\",\"id\":\"not an id\"}\n\x00\x00garbage without its end"); err != nil {
		t.Fatal(err)
	}
	if err := jf.Close(); err != nil {
		t.Fatal(err)
	}
	// Stray files in queue/seg: a symbolic link, a directory, junk.
	if err := os.Symlink("/etc/passwd", filepath.Join(s.spool, spool.DirSeg, "00000000000fffff")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.spool, spool.DirSeg, "00000000000ffffe"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.spool, spool.DirSeg, "00000000000ffffd"), []byte("junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	accept()
	t.Cleanup(func() {
		if t.Failed() {
			var mine []string
			for _, l := range strings.Split(s.log(), "\n") {
				if strings.Contains(l, "checksum") || strings.Contains(l, "quarantin") {
					mine = append(mine, l)
				}
			}
			t.Logf("left: %v\n%d lines:\n%s", s.leftovers(), len(mine), strings.Join(mine[:min(len(mine), 6)], "\n"))
		}
	})
	d = s.start()
	waitfor.True(t, "the intact messages delivered, the damaged one quarantined", 60*time.Second, func() bool {
		got := s.subjects()
		for i := 0; i < n; i++ {
			if i != 7 && got[fmt.Sprintf("hostile %d", i)] == 0 {
				return false
			}
		}
		q, err := spool.Snapshot(s.spool)
		return err == nil && len(q) == 0
	})
	got := s.subjects()
	if got["hostile 7"] != 0 || got["hostile 8"] != 1 {
		t.Errorf("the damaged message was sent (hostile 7: %d, hostile 8: %d)", got["hostile 7"], got["hostile 8"])
	}
	ents, err := os.ReadDir(filepath.Join(s.spool, spool.DirQuarantine))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	found := false
	for _, e := range ents {
		names = append(names, e.Name())
		b, _ := os.ReadFile(filepath.Join(s.spool, spool.DirQuarantine, e.Name()))
		if !strings.HasPrefix(e.Name(), "segment-") && bytes.Contains(b, []byte("Subject: hostile 7\n")) {
			found = true
		}
	}
	if !found {
		t.Errorf("the damaged message is not in %s (%v)", spool.DirQuarantine, names)
	}
	// No retry loop: the log does not fill with the damaged message.
	time.Sleep(2 * time.Second)
	if c := strings.Count(s.log(), "checksum"); c > 10 {
		t.Errorf("%d log lines about the checksum: a retry loop?\n%s", c, s.logTail(20))
	}
	t.Logf("quarantine: %v", names)
	if d.term(t) != 0 {
		t.Errorf("relayd did not stop cleanly:\n%s", s.logTail(20))
	}
}
