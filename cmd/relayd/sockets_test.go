package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A private spool needs nothing but a directory: with MAILSHIM_CONFIG
// naming a file that sets neither control_socket nor submit_socket,
// relayd puts both inside the spool, and sendmail (through the maildrop,
// and as another user through the submission socket) and the queue
// commands find them there from the same file.
func TestSocketsInPrivateSpool(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{spoolSockets: true, env: true})
	d := s.start() // waits for <spool>/control.sock
	if !connectable(filepath.Join(s.spool, "submit.sock")) {
		t.Fatalf("no submission socket in the spool\n%s", s.log())
	}
	send := func(nobody bool, subject string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sendmailBin, "-i", "alice@example.org")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
		cmd.Stdin = strings.NewReader("Subject: " + subject + "\n\nbody\n")
		if nobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			cmd.Dir = "/"
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, stderr.String())
		}
	}
	send(false, "maildrop")
	n := 1
	if os.Geteuid() == 0 {
		os.Chmod(s.cfgPath, 0o644)
		send(true, "socket")
		n++
	} else {
		t.Log("sendmail as nobody (the submission socket) needs root; skipped that half")
	}
	if _, err := up.WaitFor(n, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	if n == 2 && !strings.Contains(s.log(), "via=socket") {
		t.Errorf("nobody's message did not come through the socket:\n%s", s.log())
	}
	out, stderr, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "list")
	if code != 0 {
		t.Errorf("relayd queue list: exit %d %q %q", code, out, stderr)
	}
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	if _, err := os.Lstat(filepath.Join(s.spool, "control.sock")); err == nil {
		t.Error("control socket left behind after exit")
	}
}

// A socket path the system cannot take (longer than a Unix socket
// address allows) makes relayd refuse to start, naming the key to set.
func TestSocketPathRefusal(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{spoolSockets: true})
	s.spool = filepath.Join(s.dir, strings.Repeat("s", 100))
	s.writeConfig("")
	_, stderr, code := runCmd(t, nil, relaydBin, "--config", s.cfgPath)
	if code == 0 || !strings.Contains(stderr, "control_socket") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
