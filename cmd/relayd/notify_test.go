package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// Under systemd (NOTIFY_SOCKET set), relayd says READY=1 once it serves
// its sockets, pings the watchdog at half WatchdogSec (WATCHDOG_USEC),
// and says STOPPING=1 on SIGTERM.
func TestSdNotify(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	sock := filepath.Join(s.dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	d := s.start()
	next := func(what string) string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s from relayd\n%s", what, s.log())
		}
		return ""
	}
	if m := next("READY=1"); !strings.HasPrefix(m, "READY=1\nSTATUS=relaying from ") {
		t.Fatalf("first notification %q", m)
	}
	for i := 0; i < 2; i++ {
		if m := next("WATCHDOG=1"); m != "WATCHDOG=1" {
			t.Fatalf("watchdog ping %q", m)
		}
	}
	d.term(t)
	for {
		m := next("STOPPING=1")
		if strings.HasPrefix(m, "STOPPING=1") {
			break
		}
		if m != "WATCHDOG=1" {
			t.Fatalf("unexpected %q", m)
		}
	}
}

// A notification socket that does not answer (systemd gone, or a
// NOTIFY_SOCKET inherited into a container where its path is missing)
// is logged once, not at every watchdog ping.
func TestSdNotifyFailureLoggedOnce(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	t.Setenv("NOTIFY_SOCKET", filepath.Join(s.dir, "no-such-notify.sock"))
	t.Setenv("WATCHDOG_USEC", "100000") // a ping every 50 ms
	d := s.start()
	waitFor(t, "the failure logged", 10*time.Second, func() bool { return strings.Contains(s.log(), "sd_notify failed") })
	// 40 pings' worth.
	time.Sleep(2 * time.Second)
	d.term(t)
	if n := strings.Count(s.log(), "sd_notify failed"); n > 2 {
		t.Errorf("%d lines \"sd_notify failed\" in 2 s, want the first failure only (and STOPPING's):\n%s", n, s.logTail(400))
	}
}

// systemctl reload (ExecReload=kill -HUP) returns before relayd has read
// the file, so what `systemctl status relayd` shows afterwards is the
// administrator's answer: a refused reload must not show as loaded.
func TestSdNotifyStatusAfterRefusedReload(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	sock := filepath.Join(s.dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	d := s.start()
	status := func(what string) string {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, "STATUS=") && !strings.HasPrefix(m, "READY=1") {
					return m
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no STATUS after the %s reload\n%s", what, s.log())
			}
		}
	}
	good, _ := os.ReadFile(s.cfgPath)
	os.WriteFile(s.cfgPath, []byte("hostname = \"x\"\nno_such_key = 1\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	if m := status("refused"); strings.Contains(m, "loaded") || !strings.Contains(m, "refused") {
		t.Errorf("after a refused reload: %q", m)
	}
	os.WriteFile(s.cfgPath, good, 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	if m := status("good"); !strings.Contains(m, "loaded") {
		t.Errorf("after a good reload: %q", m)
	}
	d.term(t)
}
