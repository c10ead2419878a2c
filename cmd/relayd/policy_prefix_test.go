package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/mailshim/mailshim/pkg/spool"
)

// The reason of a message the policy held or deferred says "policy"
// once: "held by policy: rate limit ...", "deferred by policy until T:
// rate limit ...", in relayd queue list (text and JSON), queue show and
// the log. (mailq shows no reason for them: only a failed message's
// reason and an upstream's last reply.)
func TestPolicyReasonSaysPolicyOnce(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", "\nmessages_per_hour = 1\naction = \"hold\"\n")
	d := s.start()
	s.sendNobody("first")
	s.sendNobody("held")
	s.reloadPolicy(d, "\nmessages_per_hour = 1\naction = \"defer\"\n")
	s.sendNobody("deferred")

	var held, deferred string
	for _, e := range s.queueJSON("--user", "nobody") {
		switch e.State {
		case spool.Held:
			held = e.ID
			if !strings.HasPrefix(e.Reason, "held by policy: rate limit messages_per_hour=1 reached") {
				t.Errorf("queue list --json: held reason %q", e.Reason)
			}
		case spool.Deferred:
			deferred = e.ID
			if !strings.HasPrefix(e.Reason, "deferred by policy until ") || !strings.Contains(e.Reason, "Z: rate limit messages_per_hour=1 reached") {
				t.Errorf("queue list --json: deferred reason %q", e.Reason)
			}
		}
	}
	if held == "" || deferred == "" {
		t.Fatalf("want one held and one deferred message of nobody: %+v\n%s", s.queueJSON("--user", "nobody"), s.log())
	}
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	list, _, _ := runCmd(t, env, relaydBin, "queue", "list", "--user", "nobody")
	showHeld, _, _ := runCmd(t, env, relaydBin, "queue", "show", held)
	showDeferred, _, _ := runCmd(t, env, relaydBin, "queue", "show", deferred)
	for what, text := range map[string]string{
		"relayd queue list --user":     list,
		"relayd queue show (held)":     showHeld,
		"relayd queue show (deferred)": showDeferred,
	} {
		if strings.Count(text, "by policy") != strings.Count(text, "rate limit messages_per_hour=1") || !strings.Contains(text, "by policy") {
			t.Errorf("%s does not give the policy's reason:\n%s", what, text)
		}
	}
	// The log names the limit in keys (event=policy): it may not say it
	// twice either.
	for what, text := range map[string]string{
		"relayd queue list --user":     list,
		"relayd queue show (held)":     showHeld,
		"relayd queue show (deferred)": showDeferred,
		"the log":                      s.log(),
	} {
		if strings.Contains(text, "policy: policy:") || strings.Contains(text, "Z: policy:") {
			t.Errorf("%s says \"policy\" twice:\n%s", what, text)
		}
	}
}

// reloadPolicy sighups d after rewriting the configuration with
// nobody's table holding rules, and waits for the reload's log line.
func (s *site) reloadPolicy(d *daemon, rules string) {
	s.t.Helper()
	before := strings.Count(s.log(), "event=reload status=ok")
	s.writeConfig("\n[policy]\nnotice_to = \"\"\n[policy.nobody]" + rules)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitForReload(s, before)
}
