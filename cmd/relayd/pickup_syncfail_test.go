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

// A pickup batch whose Sync fails keeps its maildrop files; the next scan
// finds their queued copies, makes them durable and removes the files
// (pickup-duplicate). The queue must then be told: the messages are no
// longer pickup's to hold, and an idle queue lists incoming mail only when
// woken. The real relayd, with strace failing the first fdatasync of the
// journal with EIO (the fdatasyncs made one after the other: strace cannot
// make one of a Sync's fdatasyncs submitted together fail alone).
func TestPickupSyncFailureThenDelivered(t *testing.T) {
	t.Setenv("MAILSHIM_SPOOL_AIO", "off")
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.prepareSpool()
	journal := filepath.Join(s.spool, spool.JournalFile)
	s.startFailing(journal, "fdatasync", "error=EIO:when=1")
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("log:\n%.4000s", s.log())
		}
	})
	ids := s.drop("sync failed", 1)
	waitfor.True(t, "the failed Sync's line", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "cannot make the picked-up messages durable")
	})
	waitfor.True(t, "the duplicate resolved", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=pickup-duplicate id="+ids[0])
	})
	waitfor.True(t, "the message delivered", 30*time.Second, func() bool {
		return s.subjects()["sync failed 0"] == 1
	})
	if _, err := os.Stat(filepath.Join(s.spool, spool.DirMaildrop, ids[0])); !os.IsNotExist(err) {
		t.Errorf("the maildrop file is still there: %v", err)
	}
}

// A Sync's fdatasyncs, submitted together (asynchronous I/O), whose
// results cannot be had (strace failing the first io_getevents with
// EIO): every file of that Sync counts as failed, the batch keeps its
// maildrop files, and the next pass queues the message again: delivered
// once, nothing lost.
func TestPickupAsyncSyncFailureThenDelivered(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.prepareSpool()
	s.startStraced("-f", "-qq", "-o", filepath.Join(s.dir, "strace.out"),
		"-e", "trace=io_getevents", "-e", "inject=io_getevents:error=EIO:when=1")
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("log:\n%.4000s", s.log())
		}
	})
	ids := s.drop("async sync failed", 1)
	waitfor.True(t, "the failed Sync's line", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "cannot make the picked-up messages durable")
	})
	waitfor.True(t, "the message delivered", 30*time.Second, func() bool {
		return s.subjects()["async sync failed 0"] == 1
	})
	if _, err := os.Stat(filepath.Join(s.spool, spool.DirMaildrop, ids[0])); !os.IsNotExist(err) {
		t.Errorf("the maildrop file is still there: %v", err)
	}
	time.Sleep(time.Second)
	if n := s.subjects()["async sync failed 0"]; n != 1 {
		t.Errorf("delivered %d times", n)
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, "strace.out")); err != nil || !strings.Contains(string(b), "io_getevents") {
		t.Errorf("no io_getevents in strace's output (%v): %.2000s", err, b)
	}
}

// The real relayd makes a pickup batch's Sync with the fdatasyncs of the
// segment and of the journal submitted together (one io_submit naming
// both), not one after the other.
func TestSyncSubmitsFdatasyncsTogether(t *testing.T) {
	s, b := deliverTraced(t, "together", "trace=io_submit,fdatasync,fsync")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "io_submit(") && strings.Contains(l, "IOCB_CMD_FDSYNC") &&
			strings.Contains(l, filepath.Join(s.spool, spool.JournalFile)+">") && strings.Contains(l, filepath.Join(s.spool, spool.DirSeg)+"/") {
			return
		}
	}
	t.Fatalf("no io_submit carrying the fdatasyncs of the journal and a segment:\n%.4000s", b)
}

// The directory a Sync submits with the files (queue/seg, after a new
// segment was created) gets a full fsync (IOCB_CMD_FSYNC), as
// File.Sync gives it one by one: an fdatasync of a directory may leave
// its new entry unwritten (ext4 commits a directory's fdatasync only for
// a change of its size), and with it the segment the acknowledged
// messages are in.
func TestSyncSubmitsTheSegmentDirectorysFsync(t *testing.T) {
	s, b := deliverTraced(t, "dir synced", "trace=io_submit")
	dir := filepath.Join(s.spool, spool.DirSeg) + ">"
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "io_submit(") {
			continue
		}
		for _, cb := range strings.Split(l, "}") {
			if !strings.Contains(cb, dir) {
				continue
			}
			found = true
			if !strings.Contains(cb, "aio_lio_opcode=IOCB_CMD_FSYNC,") {
				t.Errorf("queue/seg submitted without a full fsync: %s", cb)
			}
		}
	}
	if !found {
		t.Fatalf("no io_submit carrying queue/seg:\n%.4000s", b)
	}
}

// deliverTraced runs the real relayd under strace (-y, the system calls
// of trace), drops one message with subject and waits until it is
// delivered; it returns the site and what strace wrote.
func deliverTraced(t *testing.T, subject, trace string) (*site, []byte) {
	t.Helper()
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.prepareSpool()
	out := filepath.Join(s.dir, "strace.out")
	s.startStraced("-f", "-qq", "-y", "-e", trace, "-o", out)
	s.drop(subject, 1)
	waitfor.True(t, "the message delivered", 30*time.Second, func() bool {
		return s.subjects()[subject+" 0"] == 1
	})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}
