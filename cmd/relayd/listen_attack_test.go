package main

// Attacks on the loopback SMTP listener through the real relayd process
// and real sockets: what one local user can make relayd write about
// others, and into its log.

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A client that connects and resets in a loop (every connection refused
// with 421: its socket is gone before relayd looks it up) cannot flood
// relayd's log: the first refusal is logged with its reason, the rest are
// counted, and another client's mail goes through meanwhile.
func TestListenRefusalFloodLogBounded(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	host, port, _ := strings.Cut(addrs["tcp4"], ":")
	n := flood(t, `
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.close()
`, host, port)
	// The refusals logged so far, once relayd has caught up.
	var refused int
	waitfor.True(t, "relayd to catch up with the flood", 20*time.Second, func() bool {
		r := sendAs0(t, addrs["tcp4"], "after flood")
		refused = strings.Count(s.log(), "event=smtp-refused")
		return r
	})
	if refused == 0 {
		t.Fatalf("%d connections reset, none refused:\n%s", n, s.log())
	}
	if !regexp.MustCompile(`event=smtp-refused client=127\.0\.0\.1:\d+ reason="the owner of the client's socket cannot be established: the client's socket (is not in this|has no owner)`).MatchString(s.log()) {
		t.Errorf("the first refusal is not logged with its reason:\n%.3000s", s.log())
	}
	if n < 200 {
		t.Skipf("SKIPPED: only %d connections in 2 s (a loaded machine)", n)
	}
	if refused > 20 {
		t.Errorf("%d connections reset, %d refusal lines in the log: one client floods it", n, refused)
	}
}

// sendAs0 sends one message as the test's own user over addr and
// reports whether it got 250.
func sendAs0(t *testing.T, addr, subject string) bool {
	t.Helper()
	r := dialRaw(t, "tcp", addr)
	defer r.c.Close()
	if !strings.HasPrefix(r.reply(), "220 ") {
		return false
	}
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<rcpt@example.net>", "DATA"} {
		r.cmd(c)
	}
	r.send("Subject: " + subject + "\r\n\r\nbody\r\n.\r\n")
	return strings.HasPrefix(r.reply(), "250 2.0.0 Ok: queued as ")
}

// A client that connects, waits for the greeting and resets, in a loop
// (every connection identified and served, then gone), cannot flood the
// log either: go-smtp's error for each such connection is logged once,
// then counted.
func TestListenResetFloodLogBounded(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	host, port, _ := strings.Cut(addrs["tcp4"], ":")
	n := flood(t, `
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    s.recv(100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
`, host, port)
	var errs int
	waitfor.True(t, "relayd to catch up with the flood", 20*time.Second, func() bool {
		r := sendAs0(t, addrs["tcp4"], "after flood")
		errs = strings.Count(s.log(), "event=smtp-error")
		return r
	})
	if errs == 0 || !strings.Contains(s.log(), "connection reset by peer") {
		t.Errorf("the first reset is not logged:\n%.3000s", s.log())
	}
	if n < 200 {
		t.Skipf("SKIPPED: only %d connections in 2 s (a loaded machine)", n)
	}
	if errs > 20 {
		t.Errorf("%d connections reset after the greeting, %d smtp-error lines in the log: one client floods it", n, errs)
	}
}

// The same on the Unix socket: a client that connects and closes in a loop
// leaves relayd nothing to find the process by; that is logged once, then
// counted.
func TestListenUnixFloodLogBounded(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	n := flood(t, `
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.close()
`, addrs["unix"])
	var lines int
	waitfor.True(t, "relayd to catch up with the flood", 20*time.Second, func() bool {
		r := sendAs0(t, addrs["tcp4"], "after flood")
		lines = strings.Count(s.log(), "\n")
		return r
	})
	if n < 200 {
		t.Skipf("SKIPPED: only %d connections in 2 s (a loaded machine)", n)
	}
	if lines > 60 {
		t.Errorf("%d connections closed at once, %d lines in the log: one client floods it\n%.3000s", n, lines, s.log())
	}
}

// flood runs body, Python with socket, struct and sys imported, once per
// iteration of a 2-second loop, with args as sys.argv[1:], and returns
// how many iterations ran (the script prints the count).
func flood(t *testing.T, body string, args ...string) int {
	t.Helper()
	script := "import socket, struct, sys, time\nn, end = 0, time.time() + 2\nwhile time.time() < end:" +
		body + "    n += 1\nprint(n)\n"
	out, err := exec.Command("/usr/bin/python3", append([]string{"-c", script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("flood: %v\n%s", err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n == 0 {
		t.Fatalf("flood: %q is not a count of connections made", out)
	}
	return n
}
