package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A maildrop file relayd cannot decode is moved to queue/quarantine/;
// when the fsync of queue/quarantine/ fails, the move is not durable and
// must not become so at the cost of the original: the file is put back in
// maildrop/ and the failure logged (and tried again at the next scan),
// never reported quarantined. The real relayd, with strace failing every
// fsync of queue/quarantine/ with EIO.
func TestQuarantineSyncFailureKeepsOriginal(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.prepareSpool()
	quar := filepath.Join(s.spool, spool.DirQuarantine)
	s.startFailing(quar, "fsync", "error=EIO")
	// A file that is not a spool file, written beside the maildrop and
	// moved in (as the maildrop test does).
	junk := spool.NewID(time.Now())
	tmp := filepath.Join(s.dir, junk)
	if err := os.WriteFile(tmp, []byte("not a spool file\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.spool, spool.DirMaildrop, junk)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the failed quarantine's line", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "file="+junk) && strings.Contains(s.log(), "input/output error")
	})
	// Two more scans (scan_interval is 1 s): still there, still not
	// quarantined, and tried once per scan, not in a loop (putting the
	// file back wakes pickup's inotify watch).
	start := time.Now()
	n := strings.Count(s.log(), "file="+junk)
	waitfor.True(t, "the next scans", 30*time.Second, func() bool { return strings.Count(s.log(), "file="+junk) >= n+2 })
	if got, limit := strings.Count(s.log(), "file="+junk), n+int(time.Since(start)/time.Second)+3; got > limit {
		t.Errorf("%d attempts in %v, want at most %d: a retry loop", got, time.Since(start), limit)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the file left maildrop/: %v", err)
	}
	if ents, _ := os.ReadDir(quar); len(ents) != 0 {
		t.Errorf("queue/quarantine/ holds %v", ents)
	}
	if strings.Contains(s.log(), "event=quarantine ") {
		t.Errorf("reported quarantined")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("log:\n%.4000s", s.log())
	}
}
