//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// The loopback listener's TCP sockets as relayd.socket makes them:
// 127.0.0.1 and ::1, ports 25 and 587, bound once by the suite (as root,
// which user mailshim cannot do) and passed to every relayd it starts.
// systemd is not PID 1 in CI, so the suite plays its part.
var activationAddrs = []string{"127.0.0.1:25", "127.0.0.1:587", "[::1]:25", "[::1]:587"}

// smtpSock is the listener's Unix socket (relayd makes it itself).
const smtpSock = "/run/mailshim/smtp.sock"

var (
	activationOnce  sync.Once
	activationFiles []*os.File
	activationErr   error
	noIPv6          error // why [::1] could not be bound, if it could not
)

// activationSockets returns the listening sockets, bound on first use and
// kept open for the whole run (each relayd gets duplicates through
// ExtraFiles; closing a relayd's copy does not close the port).
func activationSockets() ([]*os.File, error) {
	activationOnce.Do(func() {
		for _, a := range activationAddrs {
			ln, err := net.Listen("tcp", a)
			if err != nil && strings.HasPrefix(a, "[::1]") && !errors.Is(err, syscall.EADDRINUSE) {
				// A machine without IPv6 on loopback (some CI
				// containers): the IPv6 cases skip.
				noIPv6 = err
				continue
			}
			if err != nil {
				activationErr = err
				return
			}
			f, err := ln.(*net.TCPListener).File()
			ln.Close() // f is a duplicate that stays open
			if err != nil {
				activationErr = err
				return
			}
			activationFiles = append(activationFiles, f)
		}
	})
	return activationFiles, activationErr
}

// activationNames is LISTEN_FDNAMES for n sockets of relayd.socket (systemd
// names each after its unit when FileDescriptorName= is not set).
func activationNames(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = "relayd.socket"
	}
	return strings.Join(names, ":")
}

// unitCaps is setpriv's --ambient-caps value for the capabilities
// relayd.service gives relayd (AmbientCapabilities=), from the installed
// unit, else the repository's: relayd started by the suite gets what the
// unit gives it, no more.
// MAILSHIM_E2E_RELAYD_CAPS overrides it (e.g. "+sys_ptrace,+dac_read_search"
// to try a unit change before making it).
func unitCaps() string {
	if v, ok := os.LookupEnv("MAILSHIM_E2E_RELAYD_CAPS"); ok {
		return v
	}
	b, err := os.ReadFile("/lib/systemd/system/relayd.service")
	if err != nil {
		b, _ = os.ReadFile(filepath.Join(repoRoot(), "packaging", "systemd", "relayd.service"))
	}
	var caps []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "AmbientCapabilities=")
		if !ok {
			continue
		}
		for _, c := range strings.Fields(v) {
			caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
	}
	return strings.Join(caps, ",")
}
