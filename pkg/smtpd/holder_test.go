package smtpd

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The process recorded for a TCP connection is one that held the
// client's socket: here the client's process is found holding it, then
// killed and reaped before it is read, and its PID given to another
// process (in a directory of its own). Nothing of that process is
// recorded, whether the client connected for the first time (its /proc
// files opened after it was found) or had connected before (its pidfd
// kept from then: it no longer answers).
func TestDescribeHolderPIDReused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: giving a PID to another process needs root")
	}
	if _, err := os.Stat("/proc/sys/kernel/ns_last_pid"); err != nil {
		t.Skip("SKIPPED: no /proc/sys/kernel/ns_last_pid")
	}
	for _, before := range []int{0, 1} {
		t.Run("connections before "+strconv.Itoa(before), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			s := New(Options{Hostname: "test.example"})
			defer s.Shutdown(t.Context())
			host, port, _ := net.SplitHostPort(ln.Addr().String())
			// The client connects once per line it reads, keeping every
			// connection open.
			client := exec.Command("/usr/bin/python3", "-c", `
import socket, sys
keep = []
for line in sys.stdin:
    keep.append(socket.create_connection((sys.argv[1], int(sys.argv[2]))))
    print("connected", flush=True)
`, host, port)
			in, err := client.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := client.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			client.Stderr = os.Stderr
			if err := client.Start(); err != nil {
				t.Fatal(err)
			}
			reaped := false
			defer func() {
				if !reaped {
					client.Process.Kill()
					client.Wait()
				}
			}()
			lines := bufio.NewReader(out)
			connect := func() net.Conn {
				t.Helper()
				io.WriteString(in, "\n")
				if l, err := lines.ReadString('\n'); l != "connected\n" {
					t.Fatalf("client: %q %v", l, err)
				}
				raw, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { raw.Close() })
				return raw
			}
			pid := client.Process.Pid
			for range before {
				raw := connect()
				id, err := s.identify(raw)
				if err != nil {
					t.Fatal(err)
				}
				s.describe(raw, id)
				if id.PID != pid {
					t.Fatalf("the client's earlier connection: pid %d, want %d", id.PID, pid)
				}
			}

			raw := connect()
			id, err := s.identify(raw)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "other-process-dir")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			s.afterFind = func(found int) {
				if found != pid {
					t.Errorf("found pid %d, want the client's %d", found, pid)
					return
				}
				client.Process.Kill()
				client.Wait()
				reaped = true
				reusePID(t, pid, dir, "sleep", "60")
				waitfor.True(t, "the other process", 30*time.Second, func() bool {
					b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
					return strings.HasPrefix(string(b), "sleep\x00")
				})
			}
			s.describe(raw, id)
			if !reaped {
				t.Fatal("the client's process was not found")
			}
			if id.PID != 0 || strings.Contains(id.Origin.ParentCwd, "other-process-dir") || strings.Contains(id.Origin.ParentCmdline, "sleep") {
				t.Errorf("recorded pid %d, origin %+v: the process that took the client's PID", id.PID, id.Origin)
			}
		})
	}
}

// reusePID starts name args in dir as process pid (free now), through
// /proc/sys/kernel/ns_last_pid (root), or skips the test.
func reusePID(t *testing.T, pid int, dir, name string, args ...string) {
	t.Helper()
	for try := 0; try < 50; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("SKIPPED: cannot set the next PID: %v", err)
		}
		c := exec.Command(name, args...)
		c.Dir = dir
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == pid {
			t.Cleanup(func() { c.Process.Kill(); c.Wait() })
			return
		}
		c.Process.Kill()
		c.Wait()
	}
	t.Skipf("SKIPPED: PID %d could not be given to another process (a busy machine)", pid)
}
