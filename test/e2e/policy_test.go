//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// A site's PHP sending through the installed, setgid sendmail (the
// maildrop door) is stopped at its account's limit: what fits reaches
// Postfix, the rest waits in the held queue, the admin notice arrives
// once, and "relayd queue release --user" sends the rest; each message
// reaches Postfix exactly once.
func TestPolicyThroughSetgidSendmail(t *testing.T) {
	s := setup(t)
	php, err := exec.LookPath("php")
	if err != nil {
		t.Skip("php-cli is not installed")
	}
	site := ensureUser(t, "e2e-shop")
	defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())
	// A fresh count for this account: earlier runs' counters are in the
	// queue journal (relayd stopped: a line forgetting the account).
	s.Relayd.Stop(t)
	if q, err := spool.OpenQueue("/var/spool/mailshim"); err == nil {
		if err := q.AppendPolicy(map[string][]byte{site.Uid: nil}, true); err != nil {
			t.Fatal(err)
		}
		q.Close()
	}
	cfg := s.Relayd.DefaultConfig()
	cfg.Extra = fmt.Sprintf(`
[policy]
notice_to = "ops@example.com"
[policy.%s]
messages_per_minute = 0
messages_per_hour = 5
action = "hold"
`, site.Username)
	s.Relayd.Start(t, cfg)

	tok := token(t)
	script := fmt.Sprintf(`for ($i = 0; $i < 12; $i++) { if (!mail("x@example.org", "%s $i", "burst $i\n", "From: shop@example.org")) { exit(1); } }`, tok)
	runAs(t, site, nil, nil, php, "-r", script)

	// 5 and the notice arrive; 7 are held.
	s.Upstream.WaitMessages(t, 5, deliveryLimit, "the 5 within the limit", func(d *Delivered) bool {
		return strings.HasPrefix(d.Header.Get("Subject"), tok+" ")
	})
	notice := s.Upstream.WaitMessages(t, 1, deliveryLimit, "the admin notice", func(d *Delivered) bool {
		return strings.Contains(d.Header.Get("Subject"), "account "+site.Username+" tripped messages_per_hour")
	})
	if !strings.Contains(string(notice[0].Body), "messages_per_hour=5") {
		t.Errorf("notice:\n%s", notice[0].Raw)
	}
	var held []map[string]any
	waitHeld := time.Now().Add(30 * time.Second)
	for {
		out := run(t, "/usr/sbin/relayd", "queue", "list", "--held", "--user", site.Username, "--json")
		held = nil
		if err := json.Unmarshal([]byte(out), &held); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if len(held) == 7 || time.Now().After(waitHeld) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(held) != 7 {
		t.Fatalf("%d held, want 7\n%s", len(held), tail(s.Relayd.Log(), 40))
	}
	for _, e := range held {
		if e["via"] != "maildrop" {
			t.Errorf("held message did not come through the maildrop: %v", e)
		}
	}
	if out := run(t, "/usr/sbin/relayd", "queue", "release", "--user", site.Username); out != "7 held message(s) of "+site.Username+" released\n" {
		t.Errorf("release: %q", out)
	}
	all := s.Upstream.WaitMessages(t, 12, deliveryLimit, "all 12 after the release", func(d *Delivered) bool {
		return strings.HasPrefix(d.Header.Get("Subject"), tok+" ")
	})
	seen := map[string]int{}
	for _, d := range all {
		seen[d.Header.Get("Subject")]++
	}
	for i := 0; i < 12; i++ {
		if n := seen[fmt.Sprintf("%s %d", tok, i)]; n != 1 {
			t.Errorf("message %d reached Postfix %d times", i, n)
		}
	}
}
