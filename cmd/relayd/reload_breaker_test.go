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

// A rotated password: relayd's login fails, the mail waits behind the
// upstream's circuit breaker (and its own strikes, 1 s, 2 s, 4 s ...).
// The administrator writes the new password and reloads: the upstream as
// now configured has never failed, so the mail goes at once — not when a
// breaker and strikes earned by the old password run out (16 s and more
// after 15 s of failures, up to 30 s).
func TestReloadRetriesChangedUpstreamAtOnce(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	secret := filepath.Join(s.dir, "secret")
	if err := os.WriteFile(secret, []byte("the-old-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := s.start()
	id := s.drop("rotated", 1)[0]
	waitfor.True(t, "five refused logins", 60*time.Second, func() bool {
		return strings.Count(s.log(), "event=deferred id="+id) >= 5
	})
	if err := os.WriteFile(secret, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitfor.True(t, "the reload", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=reload status=ok") })
	reloaded := time.Now()
	if _, err := up.WaitFor(1, 5*time.Second); err != nil {
		t.Fatalf("not delivered within 5 s of the reload that fixed the password: %v\n%s", err, s.logTail(3000))
	}
	t.Logf("delivered %v after the reload", time.Since(reloaded).Round(time.Millisecond))
	d.term(t)
}
