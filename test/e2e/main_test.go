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
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopShared()
	os.Exit(code)
}
