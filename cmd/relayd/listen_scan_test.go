package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// cpuTime returns the CPU time (user and system) process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

// A user whose client socket is held by the oldest of many processes
// with many descriptors each makes every /proc scan run to its time
// limit. One user's connections cannot turn that into relayd's CPU at
// will: each UID has a budget of scan time, and past it only the cheap
// places are looked at (the last holders, SO_PEERCRED's process).
func TestListenScanBudgetPerUID(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	host, port, _ := strings.Cut(addrs["tcp4"], ":")
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", `
import os, resource, signal, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
fds = min(hard, 4000) - 20
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4000), hard))
kids = []
for i in range(250):
    pid = os.fork()
    if pid == 0:
        fd = os.open("/dev/null", os.O_RDONLY)
        keep = [os.dup(fd) for _ in range(fds)]
        time.sleep(120)
        os._exit(0)
    kids.append(pid)
time.sleep(3)
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    s.recv(100)
    s.close()
for k in kids:
    os.kill(k, signal.SIGKILL)
print("done", flush=True)
`, host, port, "24")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	br := bufio.NewReader(stdout)
	if l, err := br.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("client: %q %v", l, err)
	}
	before := cpuTime(t, d.cmd.Process.Pid)
	fmt.Fprintln(stdin, "go")
	if l, err := br.ReadString('\n'); err != nil || l != "done\n" {
		t.Fatalf("client: %q %v", l, err)
	}
	used := cpuTime(t, d.cmd.Process.Pid) - before
	t.Logf("relayd used %v of CPU for 24 connections", used)
	if !strings.Contains(s.log(), `partial="time limit"`) {
		t.Skipf("SKIPPED: the scans did not reach their time limit (relayd used %v; a fast machine, or a low RLIMIT_NOFILE)", used)
	}
	// Without a budget: about 2 s of CPU per connection (48 s).
	if used > 12*time.Second {
		t.Errorf("relayd used %v of CPU scanning /proc for one user's 24 connections", used)
	}
}
