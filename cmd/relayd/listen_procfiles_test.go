package main

import (
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A client process that connects again and again is read through the
// /proc files relayd keeps open for it: relayd opens its /proc/PID once
// for three connections, and never its status, cmdline or cgroup by path,
// while each message records the process. The real relayd under strace,
// one client process as nobody sending three messages.
func TestListenKeepsClientProcFiles(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	trace := t.TempDir() + "/strace.out"
	d, relayd := s.startStraced("-f", "-qq", "-e", "trace=openat", "-o", trace)
	host, port, _ := net.SplitHostPort(s.listenAddrs()["tcp4"])
	client := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", `
import os, smtplib, sys
print(os.getpid(), flush=True)
for i in range(3):
    c = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
    c.sendmail("nobody@web1.example.com", ["rcpt@example.net"], "Subject: kept %d\r\n\r\nbody\r\n" % i)
    c.quit()
`, host, port)
	client.Dir = "/"
	client.Stderr = os.Stderr
	out, err := client.Output()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, s.log())
	}
	pid := strings.TrimSpace(string(out))
	if n := len(regexp.MustCompile(`event=pickup .*uid=65534 .*via=smtp caller=python client=\S+ pid=`+pid+` process=/usr/bin/python3`).FindAllString(s.log(), -1)); n != 3 {
		t.Errorf("%d messages recorded with the client's process (pid %s), want 3:\n%s", n, pid, s.log())
	}
	d.stopStraced(t, relayd)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	tr := string(b)
	if n := len(regexp.MustCompile(`"/proc/`+pid+`", [^)]*O_PATH`).FindAllString(tr, -1)); n != 1 {
		t.Errorf("relayd opened /proc/%s %d times, want 1:\n%s", pid, n, grepLines(tr, "/proc/"+pid))
	}
	for _, f := range []string{"status", "cmdline", "cgroup"} {
		if strings.Contains(tr, `"/proc/`+pid+`/`+f+`"`) {
			t.Errorf("relayd opened /proc/%s/%s by its path:\n%s", pid, f, grepLines(tr, "/proc/"+pid))
		}
	}
}
