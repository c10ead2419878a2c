package main

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A signal that cuts a -bs session short exits 74 with one line on
// stderr, even after a message of the session was stored: the exit status
// must not say the session completed. The stored message (answered 250)
// stays in the spool; the one in progress is not stored. Run with the
// setgid copy as nobody, interrupted while idle after the first message
// and while the second one's envelope is being given.
func TestSetgidSMTPInterrupted(t *testing.T) {
	needRoot(t)
	first := "HELO [127.0.0.1]\r\nMAIL FROM:<webapp@example.org>\r\nRCPT TO:<rcpt1@example.org>\r\nDATA\r\nSubject: one\r\n\r\nbody\r\n.\r\n"
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		for _, tc := range []struct{ name, then, wait string }{
			{"idle", "NOOP\r\n", "250 "},
			{"envelope", "MAIL FROM:<webapp@example.org>\r\nRCPT TO:<rcpt2@example.org>\r\n", "250 "},
		} {
			t.Run(sig.String()+"/"+tc.name, func(t *testing.T) {
				s := newSpool(t, true, "")
				cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sgPath, "-bs")
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				defer stdin.Close()
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				var stderr strings.Builder
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				out := bufio.NewReader(stdout)
				// readUntil reads reply lines until one starts with prefix.
				readUntil := func(prefix string) {
					t.Helper()
					done := make(chan error, 1)
					go func() {
						for {
							l, err := out.ReadString('\n')
							if err != nil {
								done <- err
								return
							}
							if strings.HasPrefix(l, prefix) {
								done <- nil
								return
							}
						}
					}()
					select {
					case err := <-done:
						if err != nil {
							t.Fatalf("no %q reply: %v; stderr %q", prefix, err, stderr.String())
						}
					case <-time.After(30 * time.Second):
						cmd.Process.Kill()
						t.Fatalf("no %q reply within 30 s", prefix)
					}
				}
				io.WriteString(stdin, first)
				readUntil("250 2.0.0 Ok: queued as ")
				io.WriteString(stdin, tc.then)
				for range strings.Count(tc.then, "\r\n") {
					readUntil(tc.wait)
				}
				cmd.Process.Signal(sig)
				cmd.Wait()
				if code := cmd.ProcessState.ExitCode(); code != 74 || !strings.HasPrefix(stderr.String(), "sendmail: interrupted") ||
					strings.Count(stderr.String(), "\n") != 1 {
					t.Errorf("exit %d, stderr %q; want 74 and one line", code, stderr.String())
				}
				if m := s.one(t); !strings.Contains(m.body, "Subject: one") {
					t.Errorf("stored %q", m.body)
				}
			})
		}
	}
}
