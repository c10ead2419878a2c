package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// pyScrape fetches http://ADDR/metrics and prints the status code, then
// the body (an error's body too).
const pyScrape = `
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=20)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
except Exception as e:
    print("error", e)
`

// On a shared host every customer reaches the loopback: the metrics on
// 127.0.0.1 name the accounts and count each one's mail (what relayd
// stats, an admin verb, refuses them). Another user (nobody) scraping
// while www-data's mail is counted is refused (403) and learns nothing
// of www-data; root still scrapes.
func TestMetricsTCPNotForOtherUsers(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
	s.dropAs(33, "site-a", 1)
	d := s.start()
	defer d.term(t)
	re := regexp.MustCompile(`event=metrics listen=(127\.0\.0\.1:\d+)`)
	var m []string
	waitfor.True(t, "the metrics line", 10*time.Second, func() bool {
		m = re.FindStringSubmatch(s.log())
		return m != nil
	})
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitfor.True(t, "www-data's message counted", 10*time.Second, func() bool {
		return value(scrape(t, m[1]), metrics.PickedUp, map[string]string{"account": "www-data"}) == 1
	})
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", pyScrape, m[1])
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scrape as nobody: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "403\n") || strings.Contains(string(out), "www-data") || strings.Contains(string(out), "mailshim_") {
		t.Errorf("nobody scraped the metrics:\n%.600s", out)
	}
}
