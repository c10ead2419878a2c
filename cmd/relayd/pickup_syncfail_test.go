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
// journal with EIO.
func TestPickupSyncFailureThenDelivered(t *testing.T) {
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
