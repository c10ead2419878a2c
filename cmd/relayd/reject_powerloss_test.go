package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A refused maildrop file's bounce is queued and durable before the
// removal of the file is: a power loss between the two brings the file
// back beside the bounce. relayd restarted on that state bounces the file
// once, not twice: the bounce is queued under the file's queue ID, which
// Recover drops while the file is there, and pickup queues it anew. The
// power loss is played by putting the file back after a SIGKILL, with the
// bounce still queued (the upstream deferred it).
func TestRejectedMaildropPowerLossBouncesOnce(t *testing.T) {
	up, accept := newDeferringUpstream(t)
	s := newSite(t, up, siteOpts{})
	id := s.dropHugeHeader("")
	path := filepath.Join(s.spool, spool.DirMaildrop, id)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	d := s.start()
	waitfor.True(t, "the bounce tried and deferred", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=rejected id="+id+" ") && strings.Contains(s.log(), "status=deferred")
	})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the refused file is still in maildrop/ after its bounce was tried: %v", err)
	}
	d.kill()
	// What a power loss may leave: the bounce durable in the queue, the
	// file's removal undone.
	if err := os.WriteFile(path, data, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	os.Chown(path, int(st.Uid), int(st.Gid))
	os.Chmod(path, fi.Mode().Perm())
	accept()
	s.start()
	if _, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "flush"); code != 0 {
		t.Fatalf("flush: exit %d: %s", code, stderr)
	}
	waitfor.True(t, "an empty spool", 30*time.Second, func() bool { return len(s.leftovers()) == 0 })
	time.Sleep(time.Second)
	bounces := 0
	for _, m := range up.Messages() {
		if m.From == "" && len(m.To) == 1 && m.To[0] == "app@example.org" {
			bounces++
		}
	}
	if bounces != 1 {
		t.Errorf("%d bounces delivered for one refused file, want 1\n%.4000s", bounces, s.log())
	}
}
