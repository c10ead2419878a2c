//go:build e2e

// Package e2e is mailshim's end-to-end suite: the installed package, real
// callers as unprivileged users, and a real Postfix as the upstream
// (postfix/upstream.sh). It runs only with the build tag e2e and as root:
//
//	go test -tags e2e ./test/e2e/
//
// or `make e2e`. Set MAILSHIM_E2E_KEEP=1 to keep the Postfix directory.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		cleanStale()
	}
	code := m.Run()
	if sys != nil && sys.Relayd != nil {
		if err := sys.Relayd.stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		fmt.Fprintf(os.Stderr, "e2e: relayd's log: %s\n", sys.Relayd.LogPath)
	}
	stopShared()
	stopLoopback()
	if os.Geteuid() == 0 {
		restoreServices()
	}
	os.Exit(code)
}

// cleanStale stops what an earlier run of this suite left behind when it
// was killed before its clean-up (a go test timeout): its relayd and its
// Postfix instances.
func cleanStale() {
	killStaleRelayd()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mailshim-e2e-upstream-*"))
	for _, d := range dirs {
		if err := upstreamScript("stop", d); err != nil {
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		os.RemoveAll(d)
	}
	logs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mailshim-e2e-relayd-*"))
	for _, d := range logs {
		os.RemoveAll(d)
	}
}
