package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// scrape reads the metrics endpoint at a Unix socket path or a TCP
// address and parses it with Prometheus' own text parser.
func scrape(t *testing.T, listen string) map[string]*dto.MetricFamily {
	t.Helper()
	tr := &http.Transport{}
	url := "http://" + listen + "/metrics"
	if strings.HasPrefix(listen, "/") {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", listen)
		}
		url = "http://relayd/metrics"
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the sum of the samples of family name whose labels
// include want (a histogram's sample count for histograms).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	sum := 0.0
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// The endpoint, scraped with Prometheus' parser, serves every metric the
// README names, with the values this test caused: pickups by account and
// door, sent/deferred/bounced recipients, policy holds and the trip, the
// held queue's depth, upstream errors by class and stage, latency and
// lag observations, build info.
func TestMetricsEndpoint(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		switch {
		case stage == smtptest.StageRcpt && arg == "bad@example.net":
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case stage == smtptest.StageRcpt && arg == "later@example.net":
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`})
	sock := filepath.Join(s.dir, "metrics.sock")
	s.writeConfig(fmt.Sprintf(`
[metrics]
listen = %q
[policy]
notice_to = ""
[policy.nobody]
messages_per_hour = 3
`, sock))
	s.dropAs(nobodyUID, "metrics", 5)
	s.start()
	for _, rcpt := range []string{"ok@example.net", "bad@example.net", "later@example.net"} {
		m := &spool.Meta{Env: spool.Envelope{Sender: "app@example.org", Recipients: []string{rcpt}}}
		if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: "+rcpt+"\n\nx\n")); err != nil {
			t.Fatal(err)
		}
	}
	// 3 of nobody's + ok@ + the bounce for bad@.
	if _, err := up.WaitFor(5, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitFor(t, "the deferral", 20*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred ") })
	waitFor(t, "the bounce's delivery", 20*time.Second, func() bool { return strings.Count(s.log(), "status=sent") >= 5 })
	fams := scrape(t, sock)

	upstream := fmt.Sprintf("%s:%d", s.up.Upstream().Host, s.up.Upstream().Port)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{metrics.PickedUp, map[string]string{"account": "nobody", "via": "maildrop"}, 5},
		{metrics.PickedUp, map[string]string{"account": "root", "via": "socket"}, 3},
		{metrics.Deliveries, map[string]string{"account": "nobody", "status": "sent", "upstream": upstream}, 3},
		{metrics.Deliveries, map[string]string{"account": "root", "status": "sent"}, 2}, // ok@ and the bounce (relayd runs as root here)
		{metrics.Deliveries, map[string]string{"account": "root", "status": "bounced"}, 1},
		{metrics.Deliveries, map[string]string{"account": "root", "status": "deferred"}, 1},
		{metrics.Deliveries, map[string]string{"status": "sent"}, 5}, // with the bounce
		{metrics.Held, map[string]string{"account": "nobody", "reason": "messages_per_hour"}, 2},
		{metrics.PolicyActions, map[string]string{"account": "nobody", "action": "hold", "limit": "messages_per_hour"}, 2},
		{metrics.PolicyTrips, map[string]string{"account": "nobody", "limit": "messages_per_hour"}, 1},
		{metrics.QueueMessages, map[string]string{"state": "held"}, 2},
		{metrics.QueueMessages, map[string]string{"state": "deferred"}, 1},
		{metrics.QueueMessages, map[string]string{"state": "incoming"}, 0},
		{metrics.UpstreamErrors, map[string]string{"upstream": upstream, "class": "permanent", "stage": "rcpt"}, 1},
		{metrics.UpstreamErrors, map[string]string{"class": "temporary", "stage": "rcpt"}, 1},
		{metrics.DeliveryLatency, map[string]string{"upstream": upstream}, 5},
		{metrics.PickupLag, nil, 8},
		{metrics.BuildInfo, nil, 1},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// Every metric the README names is served, and nothing else.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, n := range regexp.MustCompile("`(mailshim_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		named[n[1]] = true
	}
	for n := range named {
		if fams[n] == nil {
			t.Errorf("the README names %s, which the endpoint does not serve", n)
		}
	}
	for _, n := range metrics.Names {
		if !named[n] {
			t.Errorf("%s is served but the README does not name it", n)
		}
	}
}

// The endpoint on a TCP loopback address (port 0: the bound address is
// logged), and nothing is served without [metrics] listen.
func TestMetricsTCP(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
	s.start()
	// The control socket answers before the log's writer has flushed
	// the metrics line (it writes in batches of a few ms): wait for it.
	re := regexp.MustCompile(`event=metrics listen=(127\.0\.0\.1:\d+)`)
	var m []string
	waitfor.True(t, "the metrics line", 10*time.Second, func() bool {
		m = re.FindStringSubmatch(s.log())
		return m != nil
	})
	if fams := scrape(t, m[1]); value(fams, metrics.BuildInfo, nil) != 1 {
		t.Errorf("build info: %v", fams[metrics.BuildInfo])
	}
}

// The Grafana dashboard is valid JSON and every query in it names only
// metrics the endpoint serves.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../packaging/grafana/mailshim-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && (k == "expr" || k == "query") {
					exprs = append(exprs, s)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(d)
	if len(exprs) < 10 {
		t.Fatalf("only %d queries", len(exprs))
	}
	known := map[string]bool{}
	for _, n := range metrics.Names {
		known[n] = true
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range regexp.MustCompile(`mailshim_[a-z_]+`).FindAllString(e, -1) {
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b := strings.TrimSuffix(n, suf); b != n && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("the dashboard queries %s, which is not a metric (%q)", n, e)
			}
			used[base] = true
		}
	}
	var unused []string
	for _, n := range metrics.Names {
		if !used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("metrics the dashboard does not show: %v", unused)
	}
}

func (s *site) stats() map[string]metrics.AccountStats {
	s.t.Helper()
	out, stderr, code := runCmd(s.t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "stats", "--json")
	if code != 0 {
		s.t.Fatalf("relayd stats: %d %s", code, stderr)
	}
	var l []metrics.AccountStats
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	m := map[string]metrics.AccountStats{}
	for _, a := range l {
		m[a.Account] = a
	}
	return m
}

// relayd stats counts, per account, what the log says for the last hour
// and day (picked up, sent, held, refused; top scripts), and keeps it
// across a restart.
func TestStats(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "nobody", `
messages_per_hour = 3
`)
	s.dropAs(nobodyUID, "stats", 5)
	d := s.start()
	m := &spool.Meta{Env: spool.Envelope{Sender: "app@example.org", Recipients: []string{"a@example.net", "b@example.net"}},
		Origin: spool.Origin{Script: "/srv/admin/cron.php", ScriptSource: "SCRIPT_FILENAME"}}
	if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: root\n\nx\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := up.WaitFor(4, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitFor(t, "5 sent", 20*time.Second, func() bool { return strings.Count(s.log(), "status=sent") >= 5 })
	check := func(when string) {
		st := s.stats()
		n, r := st["nobody"], st["root"]
		want := metrics.Counts{PickedUp: 5, Sent: 3, Held: 2}
		if n.Hour != want || n.Day != want || len(n.Scripts) != 1 || n.Scripts[0] != (metrics.Script{Path: "/srv/www/stats.php", Messages: 5}) {
			t.Errorf("%s: nobody %+v", when, n)
		}
		want = metrics.Counts{PickedUp: 1, Sent: 2}
		if r.Hour != want || r.Day != want || len(r.Scripts) != 1 || r.Scripts[0].Path != "/srv/admin/cron.php" {
			t.Errorf("%s: root %+v", when, r)
		}
	}
	check("running")
	out, _, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "stats")
	if code != 0 || !strings.Contains(out, "/srv/www/stats.php (5)") || !strings.HasPrefix(out, "ACCOUNT") {
		t.Errorf("relayd stats:\n%s", out)
	}
	if code := d.term(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s.start()
	check("after a restart")
}

// The policy's accounts keep their own metrics label under the name the
// metrics use: a "uid:N" table's UID by its user name.
func TestNamedAccounts(t *testing.T) {
	got := namedAccounts(&policy.Policy{Rules: map[string]policy.Rule{"*": {}, "group:web": {}, "alice": {}, "uid:0": {}, "uid:4294967": {}}})
	sort.Strings(got)
	if strings.Join(got, ",") != "alice,root,uid:4294967" {
		t.Errorf("named accounts %q", got)
	}
}

// The relayd that `make build` makes (the one in the .deb and the RPM)
// says which release it is in mailshim_build_info: packaging/VERSION, not
// Go's "(devel)" of a build outside a module proxy.
func TestMetricsBuildInfoVersionOfMakeBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds relayd through make")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	want, err := os.ReadFile("../../packaging/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	os.Chmod(bin, 0o755)
	if out, err := exec.Command("make", "-C", "../..", "--no-print-directory", "BIN="+bin, bin+"/relayd").CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
	lf, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(filepath.Join(bin, "relayd"), "--config", s.cfgPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	re := regexp.MustCompile(`event=metrics listen=(127\.0\.0\.1:\d+)`)
	waitFor(t, "the metrics line", 20*time.Second, func() bool { return re.MatchString(s.log()) })
	fams := scrape(t, re.FindStringSubmatch(s.log())[1])
	v := strings.TrimSpace(string(want))
	if value(fams, metrics.BuildInfo, map[string]string{"version": v}) != 1 {
		t.Errorf("mailshim_build_info of make's relayd has no version=%q: %v", v, fams[metrics.BuildInfo])
	}
}

// relayd stats refused to a user names the verb once: "relayd: stats:
// permission denied: ...", as relayd queue list does, not "stats: stats:".
func TestStatsDeniedSaysStatsOnce(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	_, stderr, code := s.runAs(nobodyUID, relaydBin, "stats")
	if code != 77 || !strings.HasPrefix(stderr, "relayd: stats: permission denied: ") {
		t.Errorf("relayd stats as nobody: exit %d, stderr %q", code, stderr)
	}
}
