package main

// The maildrop as installed: relayd runs as an unprivileged daemon user,
// and callers that are not the setgid sendmail's usual ones (root, or a
// sendmail that lost its setgid bit) still reach it.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// daemonUID is the unprivileged user relayd runs as in these tests (the
// Debian "daemon" user, 1:1): not root, no member of root's group.
const daemonUID = 1

// startAsDaemon runs relayd as daemonUID (with setpriv, as a service
// manager would) on a site whose directory it owns.
func (s *site) startAsDaemon() *daemon { return s.startAsDaemonWith() }

// startAsDaemonWith is startAsDaemon with extra setpriv options (such as
// capabilities).
func (s *site) startAsDaemonWith(extra ...string) *daemon {
	s.t.Helper()
	s.asDaemon(extra...)
	return s.start()
}

// asDaemon makes the site's directory daemonUID's and sets s.opts.wrap to
// run relayd as daemonUID with setpriv (with extra setpriv options).
func (s *site) asDaemon(extra ...string) {
	s.t.Helper()
	if os.Geteuid() != 0 {
		s.t.Skip("SKIPPED: running relayd as another user needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		s.t.Skip("SKIPPED: setpriv (util-linux) not installed")
	}
	// The upstream's CA file lives in a directory of the test's own.
	for d := filepath.Dir(s.up.Upstream().CAFile); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	for _, p := range []string{s.dir, filepath.Join(s.dir, "secret")} {
		if err := os.Chown(p, daemonUID, daemonUID); err != nil {
			s.t.Fatal(err)
		}
	}
	id := strconv.Itoa(daemonUID)
	s.opts.wrap = append(append([]string{"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups"}, extra...), "--")
}

// Root running a sendmail that is not setgid (a lost bit, NoNewPrivileges=
// in a root service, a container) may write into maildrop/ through
// CAP_DAC_OVERRIDE; the file must still be one relayd, an unprivileged
// user, can read — the message is delivered, never quarantined.
func TestRootSendmailWithoutSetgid(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	d := s.startAsDaemon()
	// The last case: CAP_DAC_OVERRIDE without CAP_CHOWN may create the file
	// but not give it the maildrop's group: sendmail uses the socket.
	noChown := []string{"setpriv", "--bounding-set=-chown", "--inh-caps=-chown", "--"}
	for i, tc := range []struct {
		wrap []string
		args []string
		via  string
	}{{nil, []string{"-t", "-i"}, "maildrop"}, {nil, []string{"-bs"}, "maildrop"}, {noChown, []string{"-t", "-i"}, "socket"}} {
		args := tc.args
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		argv := append(append(append([]string(nil), tc.wrap...), sendmailBin), args...)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
		msg := "To: alice@example.org\nSubject: from root " + strconv.Itoa(i) + "\n\nbody\n"
		if args[0] == "-bs" {
			msg = "HELO x\r\nMAIL FROM:<root@web1.example.com>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n" +
				strings.ReplaceAll(msg, "\n", "\r\n") + ".\r\nQUIT\r\n"
		}
		cmd.Stdin = strings.NewReader(msg)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err != nil || stderr.Len() > 0 {
			t.Fatalf("sendmail %v: %v\nstdout %q\nstderr %q", args, err, stdout.String(), stderr.String())
		}
		if _, err := up.WaitFor(i+1, 30*time.Second); err != nil {
			t.Fatalf("sendmail %v exited 0 but the message was not delivered: %v\nleft in the spool: %v\n%s", argv, err, s.leftovers(), s.log())
		}
		waitfor.True(t, "the pickup line", 10*time.Second, func() bool { return strings.Count(s.log(), "event=pickup ") == i+1 })
		var last string
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, " event=pickup ") {
				last = l
			}
		}
		if !strings.Contains(last, " uid=0 ") || !strings.Contains(last, " via="+tc.via) {
			t.Errorf("%v: want uid=0 via=%s: %s", argv, tc.via, last)
		}
	}
	waitfor.True(t, "an empty spool", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
	if l := s.log(); strings.Contains(l, "event=quarantine") || strings.Contains(l, "event=error") {
		t.Errorf("quarantine or error logged:\n%s", l)
	}
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// A maildrop file relayd cannot read (written behind sendmail's back, by
// root with a private umask) is not silently set aside: relayd logs an
// error naming the file's owner and the fix, leaves the message where it
// is, and delivers it once the fix is applied.
func TestUnreadableMaildropFile(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	d := s.startAsDaemon()
	// As root: a maildrop file left with root's group (written as
	// sendmail would, then given root's group), found by the periodic
	// scan (scan_interval 1s).
	md, err := spool.OpenDir(s.spool, spool.DirMaildrop)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
		Env:    spool.Envelope{Sender: "root@web1.example.com", Recipients: []string{"alice@example.org"}},
		Origin: spool.Origin{UID: 0, GID: 0, Via: "maildrop", Mode: "bm"}}
	tmp := filepath.Join(s.dir, "drop")
	os.Mkdir(tmp, 0o700)
	td, err := os.Open(tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer td.Close()
	dr, err := spool.NewDrop(td, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	dr.Write([]byte("Subject: unreadable\n\nbody\n"))
	if err := dr.Commit(); err != nil {
		t.Fatal(err)
	}
	ids := []string{m.ID}
	p := filepath.Join(s.spool, spool.DirMaildrop, ids[0])
	os.Chown(filepath.Join(tmp, m.ID), 0, 0)
	if err := os.Rename(filepath.Join(tmp, m.ID), p); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the error line", 30*time.Second, func() bool { return strings.Contains(s.log(), "file="+ids[0]) })
	l := s.log()
	var line string
	for _, ln := range strings.Split(l, "\n") {
		if strings.Contains(ln, "file="+ids[0]) {
			line = ln
		}
	}
	for _, want := range []string{"event=error", "uid=0", "gid=0", "chgrp"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(l, "event=quarantine") {
		t.Errorf("quarantined:\n%s", l)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the file left maildrop/: %v", err)
	}
	// check-config (as the daemon user) lists it; and a quarantined file.
	junk := spool.NewID(time.Now())
	os.WriteFile(filepath.Join(tmp, junk), []byte("not a spool file\n"), 0o440)
	os.Chown(filepath.Join(tmp, junk), daemonUID, daemonUID)
	os.Rename(filepath.Join(tmp, junk), filepath.Join(s.spool, spool.DirMaildrop, junk))
	waitfor.True(t, "the quarantine", 30*time.Second, func() bool { return strings.Contains(s.log(), "event=quarantine file="+junk) })
	id := strconv.Itoa(daemonUID)
	_, stderr, code := runCmd(t, nil, "setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "--", relaydBin, "check-config", "--config", s.cfgPath)
	if code != 0 || !strings.Contains(stderr, "warning: 1 quarantined file(s) in "+filepath.Join(s.spool, spool.DirQuarantine)) ||
		!strings.Contains(stderr, "warning: 1 file(s) in "+filepath.Join(s.spool, spool.DirMaildrop)+" that relayd cannot read ("+ids[0]+")") {
		t.Errorf("check-config: exit %d\n%s", code, stderr)
	}
	// relayd doctor too (its spool check warns, with the fix).
	out, _, _ := runCmd(t, nil, "setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "--", relaydBin, "doctor", "--config", s.cfgPath, "--timeout", "5s")
	var spoolLine string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "spool") && strings.Contains(l, "quarantined") {
			spoolLine = l
		}
	}
	if !strings.Contains(spoolLine, "1 quarantined file(s)") || !strings.Contains(spoolLine, "relayd cannot read ("+ids[0]+")") || !strings.Contains(out, "chgrp") {
		t.Errorf("doctor:\n%s", out)
	}
	// The fix the line gives.
	if err := os.Chown(p, 0, daemonUID); err != nil {
		t.Fatal(err)
	}
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("not delivered after the fix: %v\n%s", err, s.log())
	}
	if n := strings.Count(s.log(), "file="+ids[0]); n != 1 {
		t.Errorf("the error was logged %d times, want once:\n%s", n, s.log())
	}
	d.term(t)
}
