package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The process recorded for a connection on the Unix socket is one that
// holds the connection when relayd looks. SO_PEERCRED's PID is the
// process that connected: here it handed the socket to its parent and
// exited, and its PID went to another user's process while the
// connection waited for a slot. That process's script, working directory
// and group never go into the message or the log.
func TestListenUnixPeerPIDReused(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/proc/sys/kernel/ns_last_pid"); err != nil {
		t.Skip("SKIPPED: no /proc/sys/kernel/ns_last_pid")
	}
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + "max_connections_per_uid = 1\n"})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	// nobody's one slot is taken by an idle session.
	_, release := holdConns(t, 65534, addrs["tcp4"], 1)

	// The attacker: a child connects to the Unix socket, passes the socket
	// to its parent and exits; the parent prints the child's PID and,
	// once served, sends a message.
	attacker := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", `
import os, socket, sys
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socket.send_fds(b, [b"x"], [s.fileno()])
    os._exit(0)
os.waitpid(pid, 0)
_, fds, _, _ = socket.recv_fds(a, 1, 1)
s = socket.socket(fileno=fds[0])
print(pid, flush=True)
f = s.makefile("rwb")
def reply():
    while True:
        l = f.readline()
        if l[3:4] != b"-":
            return l.decode().strip()
print(reply(), flush=True)
for c in ["EHLO x", "MAIL FROM:<nobody@web1.example.com>", "RCPT TO:<rcpt@example.net>", "DATA"]:
    f.write(c.encode() + b"\r\n"); f.flush(); reply()
f.write(b"Subject: pid reused\r\n\r\nbody\r\n.\r\n"); f.flush()
print(reply(), flush=True)
`, addrs["unix"])
	attacker.Dir = "/"
	aout, err := attacker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	attacker.Stderr = os.Stderr
	if err := attacker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { attacker.Process.Kill(); attacker.Wait() }()
	lines := bufio.NewReader(aout)
	l, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("attacker: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(l))
	if err != nil {
		t.Fatalf("attacker said %q", l)
	}

	// Another user's process (www-data running a Python script in its own
	// directory) gets the PID.
	vdir := filepath.Join(t.TempDir(), "victim-private-dir")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(vdir), 0o755)
	if err := os.WriteFile(filepath.Join(vdir, "victim-secret.py"), []byte("import time\ntime.sleep(60)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var victim *exec.Cmd
	for try := 0; victim == nil && try < 50; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("SKIPPED: cannot set the next PID: %v", err)
		}
		v := exec.Command("setpriv", "--reuid=33", "--regid=33", "--clear-groups", "/usr/bin/python3", "victim-secret.py")
		v.Dir = vdir
		if err := v.Start(); err != nil {
			t.Fatal(err)
		}
		if v.Process.Pid == pid {
			victim = v
			break
		}
		v.Process.Kill()
		v.Wait()
	}
	if victim == nil {
		t.Skipf("SKIPPED: PID %d could not be given to another process (a busy machine)", pid)
	}
	defer func() { victim.Process.Kill(); victim.Wait() }()
	waitfor.True(t, "the victim's process to run its script", 10*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return strings.Contains(string(b), "victim-secret.py")
	})

	// The slot comes free: the waiting connection is identified and served.
	release()
	if l, _ := lines.ReadString('\n'); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("attacker's greeting: %q\n%s", l, s.log())
	}
	if l, _ := lines.ReadString('\n'); !strings.HasPrefix(l, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("attacker's message: %q\n%s", l, s.log())
	}
	waitfor.True(t, "delivery", 30*time.Second, func() bool { return s.message("pid reused") != "" })
	msg, log := s.message("pid reused"), s.log()
	for _, secret := range []string{"victim-secret", "victim-private-dir", "gid=33", "pid=" + strconv.Itoa(pid) + " "} {
		if strings.Contains(msg, secret) {
			t.Errorf("the message has %q, from another user's process:\n%s", secret, msg)
		}
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "event=pickup") && strings.Contains(line, secret) {
				t.Errorf("the pickup line has %q, from another user's process:\n%s", secret, line)
			}
		}
	}
	if !strings.Contains(msg, "Received: from uid 65534 (nobody)") {
		t.Errorf("not recorded as nobody:\n%s", msg)
	}
}
