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
// upstream's circuit breaker (a minute for a refused login) and its own
// strikes. The administrator writes the new password and reloads: the
// upstream as now configured has never failed, so the mail goes at once —
// not when the breaker and strikes earned by the old password run out.
func TestReloadRetriesChangedUpstreamAtOnce(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	secret := filepath.Join(s.dir, "secret")
	if err := os.WriteFile(secret, []byte("the-old-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := s.start()
	id := s.drop("rotated", 1)[0]
	waitfor.True(t, "the refused login", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=deferred id="+id)
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

// The upstream refuses relayd's password (535): the same password fails
// every time until the administrator changes it, and providers lock an
// account out after a few failed logins (Microsoft 365 after ten). So
// once the login has been refused twice, the breaker waits a minute and
// more, not a second or two: a queue of mail behind it costs a handful of
// logins, not one per backoff of a connection failure.
func TestRefusedLoginNotHammered(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	if err := os.WriteFile(filepath.Join(s.dir, "secret"), []byte("the-old-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := s.start()
	s.drop("locked-out", 20)
	waitfor.True(t, "the refused login", 20*time.Second, func() bool { return strings.Contains(s.log(), "event=auth-failed") })
	time.Sleep(15 * time.Second)
	if n := up.AuthAttempts(); n > 3 {
		t.Errorf("%d logins with the refused password in 15 s, want at most 3", n)
	}
	if strings.Contains(s.log(), "bounced") {
		t.Errorf("a refused login bounced mail:\n%s", s.logTail(3000))
	}
	d.term(t)
}

// relayd(8): after two refused logins relayd waits a minute or more "so
// that the same password is not tried until the provider locks the
// account out (reload with the new password, or flush, to try again at
// once)". An admin's flush (to see whether the provider has unlocked the
// account) must cost one login, not start the count afresh: it cost two,
// the flush's and, a second later, a second one with the same password.
func TestFlushRefusedLoginTriesOnce(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	if err := os.WriteFile(filepath.Join(s.dir, "secret"), []byte("the-old-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := s.start()
	s.drop("locked-out", 5)
	waitfor.True(t, "two refused logins", 20*time.Second, func() bool { return up.AuthAttempts() >= 2 })
	time.Sleep(2 * time.Second) // the breaker's long backoff is in force
	before := up.AuthAttempts()
	if out, stderr, code := runCmd(t, nil, relaydBin, "queue", "flush", "--config", s.cfgPath); code != 0 {
		t.Fatalf("flush: exit %d\n%s%s", code, out, stderr)
	}
	waitfor.True(t, "the flush's login", 10*time.Second, func() bool { return up.AuthAttempts() > before })
	time.Sleep(8 * time.Second)
	if n := up.AuthAttempts() - before; n != 1 {
		t.Errorf("%d logins with the refused password in the 8 s after a flush, want 1\n%s", n, s.logTail(3000))
	}
	d.term(t)
}
