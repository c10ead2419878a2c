package main

import (
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// An account that does not exist is a usage error (relayd(8), EXIT
// STATUS): every queue command by account, and freeze and thaw, exit 64
// with one line naming the account, as for an option relayd does not
// know.
func TestQueueNoSuchUserIsUsage(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	for _, args := range [][]string{
		{"queue", "list", "--user", "nosuchuser"},
		{"queue", "list", "--held", "--user=nosuchuser", "--json"},
		{"queue", "hold", "--user", "nosuchuser"},
		{"queue", "release", "--user", "nosuchuser"},
		{"queue", "delete", "--user", "nosuchuser", "--confirm", "0"},
		{"queue", "freeze", "--user", "nosuchuser"},
		{"queue", "thaw", "--user", "nosuchuser"},
	} {
		out, stderr, code := runCmd(t, env, relaydBin, args...)
		if code != 64 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "relayd: queue "+args[1]+": ") ||
			!strings.Contains(stderr, `"nosuchuser"`) || out != "" {
			t.Errorf("relayd %s: exit %d, stdout %q, stderr %q; want 64, nothing on stdout and one line naming \"nosuchuser\"", strings.Join(args, " "), code, out, stderr)
		}
	}
}
