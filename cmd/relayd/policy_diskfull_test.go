package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// smallSpool mounts a 2 MB tmpfs with the given mode (and further mount
// options opts, if any) as s's spool directory until the end of the
// test, so that fillDisk fills the spool's file system and nothing else.
func smallSpool(t *testing.T, s *site, mode os.FileMode, opts string) {
	t.Helper()
	if err := os.Mkdir(s.spool, mode); err != nil {
		t.Fatal(err)
	}
	o := fmt.Sprintf("size=2m,mode=%04o", mode)
	if opts != "" {
		o += "," + opts
	}
	if err := unix.Mount("tmpfs", s.spool, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, o); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(s.spool, unix.MNT_DETACH) })
}

// fillDisk writes a file under dir until the file system is full and
// returns its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the file system: %v", err)
			}
			// The last few blocks, byte by byte.
			for {
				if _, err := f.Write(chunk[:512]); err != nil {
					return p
				}
			}
		}
	}
}

// A full spool: the policy's state is in the queue journal, whose
// reserve keeps room for an operator's actions, so a freeze still goes
// through (it used to fail: its state file could not be written), is
// applied, and survives a kill of relayd once space has returned; no
// failure to record the policy's state is logged meanwhile.
func TestPolicyFreezeOnAFullDisk(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	smallSpool(t, s, 0o755, "")
	d := s.start()
	filler := fillDisk(t, s.spool)

	_, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "freeze", "--user", "nobody")
	if code != 0 {
		t.Fatalf("freeze on a full disk: exit %d, stderr %q; want it recorded in the journal's reserve", code, stderr)
	}
	// relayd's periodic saves run every second: three of them.
	time.Sleep(3 * time.Second)
	if strings.Contains(s.log(), "cannot write the policy state") {
		t.Errorf("the policy's state could not be recorded on a full disk:\n%s", s.logTail(20))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.kill()
	s.start()
	if code, stderr := s.sendmailAs(nobodyUID, "after the freeze"); code != 0 {
		t.Fatalf("sendmail as nobody: exit %d: %s", code, stderr)
	}
	waitfor.True(t, "nobody's message held (frozen)", 20*time.Second, func() bool { return len(s.queueJSON("--held")) == 1 })
	if _, err := os.Stat(filepath.Join(s.spool, spool.DirQueue, policy.StateFile)); !os.IsNotExist(err) {
		t.Errorf("a policy state file was written: %v", err)
	}
}
