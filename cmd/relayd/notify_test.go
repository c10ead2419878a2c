package main

import (
	"net"
	"path/filepath"
	"strings"
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
