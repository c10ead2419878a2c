package robust

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// sendmailAs runs the site's sendmail -t -i with data and returns its exit
// code and standard error.
func (e *env) sendmail(data []byte, args ...string) (int, string) {
	e.t.Helper()
	var stderr bytes.Buffer
	p := e.site.SendmailProc(data, append([]string{"-t", "-i"}, args...)...)
	p.Stderr = &stderr
	_, err := p.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	default:
		e.t.Fatalf("sendmail: %v", err)
		return -1, ""
	}
}

// tmpfsSpool mounts a tmpfs of size MiB on the site's spool (skipping
// the test where that cannot be done), for as long as the test runs, with
// the maildrop directory sendmail writes into, and returns the spool.
func (e *env) tmpfsSpool(size int) string {
	e.t.Helper()
	sp := e.site.Spool
	if err := unix.Mount("tmpfs", sp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%dm,mode=0711", size)); err != nil {
		e.t.Skipf("SKIP: cannot mount a tmpfs: %v", err)
	}
	e.t.Cleanup(func() { unix.Unmount(sp, unix.MNT_DETACH) })
	md := filepath.Join(sp, spool.DirMaildrop)
	if err := os.Mkdir(md, 0o730); err != nil {
		e.t.Fatal(err)
	}
	os.Chown(md, 0, driver.DropGID)
	os.Chmod(md, 0o730|os.ModeSticky)
	return sp
}

// TestDiskFull puts the spool on a 4 MB tmpfs (root only): with the disk
// full, callers get exit 73 and one clear line, mail queued before is still
// delivered, relayd keeps running, and everything works again once space
// returns.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root to mount a small tmpfs under the spool (CI runs as root)")
	}
	var accept atomic.Bool
	var refused atomic.Int64
	e := newEnv(t, upstream.Options{DataErr: func(int) error {
		if accept.Load() {
			return nil
		}
		refused.Add(1)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}})
	sp := e.tmpfsSpool(4)
	e.probe()
	e.startRelayd()

	// Mail queued before the disk fills: deferred by the upstream.
	const before = 5
	for i := 0; i < before; i++ {
		if code, stderr := e.sendmail(msg(i, 2<<10)); code != 0 {
			t.Fatalf("sendmail before the disk is full: exit %d: %s", code, stderr)
		}
	}
	e.waitFor("the first deliveries to be refused", 60*time.Second, func() bool { return refused.Load() >= before })

	// Fill the file system.
	filler := filepath.Join(sp, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()

	// Callers get 73 and one clear line.
	const tries = 5
	for i := 0; i < tries; i++ {
		code, stderr := e.sendmail(msg(100+i, 64<<10))
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if code != 73 {
			t.Errorf("sendmail on a full spool: exit %d, want 73 (stderr %q)", code, stderr)
		}
		if !strings.Contains(strings.ToLower(lines[0]), "full") || !strings.HasPrefix(lines[0], "sendmail: ") {
			t.Errorf("sendmail on a full spool: first line %q does not say the spool is full", lines[0])
		}
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "sendmail: hint: ") {
				t.Errorf("sendmail on a full spool: extra stderr line %q (want one line, and at most hints)", l)
			}
		}
	}
	// Already queued mail is still delivered while the disk is full.
	accept.Store(true)
	whileFull := waitfor.Poll(30*time.Second, func() bool { m, _, _ := e.up.Check(before); return m == 0 })
	if !whileFull {
		m, _, _ := e.up.Check(before)
		t.Errorf("%d of %d messages queued before the disk filled were not delivered while it was full; relayd log:\n%s", m, before, lastLines(e.log(), 3))
	}
	e.relaydAlive()

	// Space returns: sendmail and relayd work again.
	os.Remove(filler)
	if code, stderr := e.sendmail(msg(before, 2<<10)); code != 0 {
		t.Fatalf("sendmail after space returned: exit %d: %s", code, stderr)
	}
	e.waitFor("every message after space returned", 60*time.Second, func() bool { m, _, _ := e.up.Check(before + 1); return m == 0 })
	e.waitFor("an empty spool", 30*time.Second, e.spoolEmpty)
	e.relaydAlive()
	missing, dups, unknown := e.up.Check(before + 1)
	if missing != 0 || unknown != 0 {
		t.Errorf("%d lost, %d delivered that were refused", missing, unknown)
	}
	record(t, fmt.Sprintf("4 MB tmpfs spool: %d messages queued and deferred, disk filled, %d sendmail calls of 64 KB on the full disk, then space freed and 1 more", before, tries),
		fmt.Sprintf("every full-disk call exited 73 with one \"full\" line; queued mail delivered while full: %v; relayd alive throughout and recovered; %d lost, %d refused ones delivered, %d duplicates", whileFull, missing, unknown, dups))
}
