// Command testsink is the smarthost of the booted-container package test
// (packaging/test-deb-systemd-inner.sh): bench/upstream's go-smtp server
// (STARTTLS with its own CA, AUTH PLAIN) on a free loopback port, writing
// every message it accepts to DIR/msg-N.eml. It writes DIR/port,
// DIR/password and DIR/upstream-ca.pem for relayd's configuration and runs
// until SIGTERM. The container has no network, so this is the upstream
// relayd delivers to there.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mailshim/mailshim/bench/upstream"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: testsink DIR")
		os.Exit(64)
	}
	dir := os.Args[1]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "testsink:", err)
		os.Exit(73)
	}
	srv, err := upstream.Start(upstream.Options{KeepData: true, Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsink:", err)
		os.Exit(69)
	}
	defer srv.Close()
	for name, v := range map[string]string{"password": srv.Password, "user": srv.Username} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "testsink:", err)
			os.Exit(73)
		}
	}
	// The port last: its presence says the server is ready.
	if err := os.WriteFile(filepath.Join(dir, "port"), []byte(fmt.Sprintln(srv.Port)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "testsink:", err)
		os.Exit(73)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	written := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs := srv.Messages()
		for ; written < len(msgs); written++ {
			m := msgs[written]
			p := filepath.Join(dir, fmt.Sprintf("msg-%d.eml", written+1))
			data := append([]byte("X-Sink-Envelope: "+m.From+" -> "+fmt.Sprint(m.To)+"\r\n"), m.Data...)
			if err := os.WriteFile(p+".tmp", data, 0o644); err == nil {
				os.Rename(p+".tmp", p)
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}
