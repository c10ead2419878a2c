package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the setgid binary small and provably free of what it must
// never do (tailscale's deptest idea): no TLS, no HTTP, no exec, no SMTP
// client, no SASL.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"crypto/tls",
		"net/http",
		"os/exec",
		"github.com/emersion/go-smtp",
		"github.com/emersion/go-sasl",
		"log/syslog",
		"plugin",
		"github.com/mailshim/mailshim/pkg/relay",
		"github.com/mailshim/mailshim/pkg/queue",
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("sendmail links %s", d)
			}
		}
	}
	if len(deps) < 10 {
		t.Fatalf("go list returned %q", out)
	}
}
