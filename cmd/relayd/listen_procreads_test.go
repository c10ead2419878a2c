package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// On the listener's Unix socket, when relayd cannot find the process
// holding the client's socket (here: relayd as its own user without the
// capabilities to read another user's descriptors), it records
// SO_PEERCRED's process if it is the client's user's. It reads that
// process's IDs once per connection — its /proc/PID/status, or on a
// kernel with PIDFD_GET_INFO that ioctl on its pidfd — (the check that
// the PID was not reused meanwhile is the process's pidfd), not once
// before, once while and once after reading the process. The real
// relayd, under strace, and a client as nobody.
func TestListenUnixFallbackReadsStatusOnce(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	trace := filepath.Join(t.TempDir(), "strace.out")
	s.asDaemon()
	d, relayd := s.startStraced("-f", "-qq", "-e", "trace=openat,read,pread64,close,pidfd_open,ioctl", "-o", trace)
	addrs := s.listenAddrs()

	client := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", `
import os, socket, sys
print(os.getpid(), flush=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
f = s.makefile("rwb")
def reply():
    while True:
        l = f.readline()
        if l[3:4] != b"-":
            return l.decode().strip()
reply()
for c in ["EHLO x", "MAIL FROM:<nobody@web1.example.com>", "RCPT TO:<rcpt@example.net>", "DATA"]:
    f.write(c.encode() + b"\r\n"); f.flush(); reply()
f.write(b"Subject: status once\r\n\r\nbody\r\n.\r\n"); f.flush()
print(reply(), flush=True)
`, addrs["unix"])
	client.Dir = "/"
	out, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	client.Stderr = os.Stderr
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { client.Process.Kill(); client.Wait() }()
	lines := bufio.NewReader(out)
	l, _ := lines.ReadString('\n')
	pid := strings.TrimSpace(l)
	done := make(chan string, 1)
	go func() { l, _ := lines.ReadString('\n'); done <- l }()
	select {
	case l := <-done:
		if !strings.HasPrefix(l, "250 ") {
			t.Fatalf("the message: %q\n%s", l, s.log())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no reply to the message within 30 s\n%s", s.log())
	}
	if !strings.Contains(s.log(), "pid="+pid+" ") {
		t.Errorf("the client's process (pid %s) is not recorded:\n%s", pid, s.log())
	}
	d.stopStraced(t, relayd)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	if n := statusReads(string(b), pid); n != 1 {
		t.Errorf("relayd read the IDs of process %s (status, PIDFD_GET_INFO) %d times, want 1:\n%s", pid, n, b)
	}
}

// statusReads counts the readings of process PID's IDs in an strace
// output: the reads of each descriptor of /proc/PID/status opened by its
// path, the preads of each opened relative to a descriptor of /proc/PID
// (the files relayd keeps open, origin.Procs), and the PIDFD_GET_INFO
// ioctls on its pidfds, until they are closed.
func statusReads(trace, pid string) int {
	opened := regexp.MustCompile(`openat\(AT_FDCWD, "/proc/` + pid + `/status", .*\) = (\d+)$`)
	dir := regexp.MustCompile(`openat\(AT_FDCWD, "/proc/` + pid + `", [^)]*O_PATH.*\) = (\d+)$`)
	rel := regexp.MustCompile(`openat\((\d+), "status", .*\) = (\d+)$`)
	io := regexp.MustCompile(`(?:read|pread64)\((\d+), `)
	pidfd := regexp.MustCompile(`pidfd_open\(` + pid + `, [^)]*\) += (\d+)$`)
	info := regexp.MustCompile(`ioctl\((\d+), (?:PIDFD_GET_INFO|_IOC\(_IOC_READ\|_IOC_WRITE, 0xff, 0xb, )`)
	closed := regexp.MustCompile(`close\((\d+)\)`)
	dirs, status, pidfds := map[string]bool{}, map[string]bool{}, map[string]bool{}
	n := 0
	for _, l := range straceLines(trace) {
		if m := opened.FindStringSubmatch(l); m != nil {
			status[m[1]] = true
		} else if m := dir.FindStringSubmatch(l); m != nil {
			dirs[m[1]] = true
		} else if m := rel.FindStringSubmatch(l); m != nil && dirs[m[1]] {
			status[m[2]] = true
		} else if m := io.FindStringSubmatch(l); m != nil && status[m[1]] {
			n++
		} else if m := pidfd.FindStringSubmatch(l); m != nil {
			pidfds[m[1]] = true
		} else if m := info.FindStringSubmatch(l); m != nil && pidfds[m[1]] {
			n++
		} else if m := closed.FindStringSubmatch(l); m != nil {
			delete(dirs, m[1])
			delete(status, m[1])
			delete(pidfds, m[1])
		}
	}
	return n
}

// straceLines returns the lines of an strace -f output with each system
// call on one line: a call that another thread's call interrupted is
// written as "PID call(args <unfinished ...>" and, later, "PID <... call
// resumed>rest", which are joined here into "PID call(argsrest". Read
// apart, the first has no result and the second no arguments (relayd's
// threads split an openat or a close this way in most runs).
func straceLines(trace string) []string {
	pending := map[string]int{} // the index of each thread's unfinished call
	var out []string
	for _, l := range strings.Split(trace, "\n") {
		tid, _, _ := strings.Cut(l, " ")
		if head, ok := strings.CutSuffix(l, " <unfinished ...>"); ok {
			pending[tid] = len(out)
			out = append(out, head)
			continue
		}
		if i, ok := pending[tid]; ok {
			if _, rest, ok := strings.Cut(l, " resumed>"); ok && strings.Contains(l, " <... ") {
				// The result, padded on the short line, is " = N" on
				// a long one.
				out[i] += resultPad.ReplaceAllString(rest, ") = ")
				delete(pending, tid)
				continue
			}
		}
		out = append(out, l)
	}
	return out
}

var resultPad = regexp.MustCompile(`^\) += `)

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Calls that strace wrote in two parts (another thread's call came in
// between) are counted as whole ones: the status file opened in one
// part and read, then closed in two parts before its descriptor went to
// another file, is read once.
func TestStatusReadsJoinsSplitCalls(t *testing.T) {
	trace := `101 openat(AT_FDCWD, "/proc/42/status", O_RDONLY|O_CLOEXEC <unfinished ...>
102 read(5,  <unfinished ...>
101 <... openat resumed>)              = 9
102 <... read resumed>"220 ok\r\n", 4096) = 8
101 read(9, "Name:\tpython3\n"..., 4096) = 1200
101 close(9 <unfinished ...>
102 close(5)                           = 0
101 <... close resumed>)               = 0
101 openat(AT_FDCWD, "/tmp/spool/queue/seg/1", O_RDONLY|O_CLOEXEC) = 9
101 read(9, "MAILSHIM-SPOOL 1\n"..., 4096) = 1300
`
	if n := statusReads(trace, "42"); n != 1 {
		t.Errorf("statusReads counted %d readings, want 1", n)
	}
}
