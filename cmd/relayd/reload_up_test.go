package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// An administrator fixes a broken upstream in the configuration — a
// wrong password, a wrong port — and reloads. Once mail goes through,
// the log says the upstream is up again (event=upstream-up, with how
// long it was down), exactly as after an outage: the upstream-down line
// that the broken setting caused must not be left without its end, which
// is what monitoring and an admin reading the log wait for.
func TestReloadFixedUpstreamLogsUp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(s *site, up *smtptest.Server)
		fix     func(s *site, up *smtptest.Server)
	}{
		{"password", func(s *site, up *smtptest.Server) {
			if err := os.WriteFile(filepath.Join(s.dir, "secret"), []byte("the-old-password\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, func(s *site, up *smtptest.Server) {
			if err := os.WriteFile(filepath.Join(s.dir, "secret"), []byte(testPassword+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"port", func(s *site, up *smtptest.Server) {
			dead := newUpstream(t, smtptest.Options{})
			dead.Stop() // nothing listens on its port: connection refused
			s.up = dead
			s.writeConfig("")
		}, func(s *site, up *smtptest.Server) {
			s.up = up
			s.writeConfig("")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, smtptest.Options{})
			s := newSite(t, up, siteOpts{concurrency: 1})
			tc.breakIt(s, up)
			d := s.start()
			s.drop("fixed-by-reload", 1)
			waitfor.True(t, "upstream-down", 30*time.Second, func() bool { return strings.Contains(s.log(), "event=upstream-down") })
			tc.fix(s, up)
			d.cmd.Process.Signal(syscall.SIGHUP)
			waitfor.True(t, "the reload", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=reload status=ok") })
			if _, err := up.WaitFor(1, 10*time.Second); err != nil {
				t.Fatalf("not delivered after the reload: %v\n%s", err, s.logTail(3000))
			}
			waitfor.True(t, "event=delivery status=sent", 10*time.Second, func() bool { return strings.Contains(s.log(), "status=sent") })
			d.term(t) // every line written
			log := s.log()
			var line string
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "event=upstream-up ") {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no event=upstream-up after the reload that fixed the upstream and the delivery that followed:\n%s", log)
			}
			if want := "upstream=" + up.Addr; !strings.Contains(line, want) || !strings.Contains(line, "down_for=") || strings.Contains(line, "failures=0") {
				t.Errorf("upstream-up line %q: want %s, down_for and the failures of the outage", line, want)
			}
		})
	}
}
