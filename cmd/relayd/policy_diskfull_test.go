package main

import (
	"errors"
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

// A full spool: the policy's state file cannot be written, and relayd says
// so once, not at every one-second save while the disk stays full; when
// space returns it says so, and the state is on disk.
func TestPolicyStateDiskFullLoggedOnce(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	if err := os.Mkdir(s.spool, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", s.spool, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=2m,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(s.spool, unix.MNT_DETACH) })
	s.start()
	filler := fillDisk(t, s.spool)

	// The admin freezes an account while the disk is full: the answer
	// says the freeze could not be recorded, and it is not applied
	// either (all or nothing): not in memory, not in a later save.
	_, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "freeze", "--user", "nobody")
	if code == 0 || !strings.Contains(stderr, "cannot record the freeze") {
		t.Errorf("freeze on a full disk: exit %d, stderr %q; want a failure that says the freeze was not recorded", code, stderr)
	}
	const failed = "cannot write the policy state file"
	waitfor.True(t, "the failed save logged", 10*time.Second, func() bool { return strings.Contains(s.log(), failed) })
	// relayd retries the save every second: five of them.
	time.Sleep(5 * time.Second)
	if n := strings.Count(s.log(), failed); n != 1 {
		t.Errorf("%d log lines %q while the disk stayed full, want 1:\n%s", n, failed, s.logTail(20))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(s.spool, spool.DirQueue, policy.StateFile)
	waitfor.True(t, "a log line saying the state file is written again", 10*time.Second, func() bool {
		return strings.Contains(s.log(), "policy state file written again")
	})
	if n := strings.Count(s.log(), failed); n != 1 {
		t.Errorf("%d log lines %q, want 1:\n%s", n, failed, s.logTail(20))
	}
	if b, err := os.ReadFile(state); err != nil || strings.Contains(string(b), `"frozen":true`) {
		t.Errorf("the state file written once space returned: %v, holds the freeze that failed:\n%s", err, b)
	}
	if code, stderr := s.sendmailAs(nobodyUID, "after the failed freeze"); code != 0 {
		t.Fatalf("sendmail as nobody: exit %d: %s", code, stderr)
	}
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Errorf("nobody's message after the failed freeze not delivered (held as frozen?): %v\n%s", err, s.logTail(20))
	}
}
