package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// counters returns every sample of the account-labelled counters, by
// family and labels.
func counters(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, name := range []string{metrics.PickedUp, metrics.Deliveries, metrics.PolicyActions, metrics.Held} {
		f := fams[name]
		if f == nil {
			continue
		}
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[name+"{"+strings.Join(ls, ",")+"}"] = m.Counter.GetValue()
		}
	}
	return out
}

// Counters never go down, also when a reload names an account in
// [policy] (the admin's first move against a compromised site) whose
// counts were served under account="other" until then, and when a later
// reload drops the table again: Prometheus would take a decrease for a
// counter reset and graph the whole remaining count as a spike.
func TestMetricsCountersMonotonicAcrossReload(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	sock := filepath.Join(s.dir, "metrics.sock")
	base := fmt.Sprintf("\n[metrics]\nlisten = %q\ntop_accounts = 1\n[policy]\nnotice_to = \"\"\n", sock)
	s.writeConfig(base)
	s.drop("root", 3)
	s.dropAs(nobodyUID, "nobody", 2)
	s.dropAs(1, "daemon", 1)
	d := s.start()
	if _, err := up.WaitFor(6, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitfor.True(t, "6 deliveries logged", 20*time.Second, func() bool { return strings.Count(s.log(), "status=sent") >= 6 })
	prev := counters(scrape(t, sock))
	if prev[metrics.PickedUp+"{account=other,via=maildrop}"] != 3 {
		t.Fatalf("before the reload: %v", prev)
	}
	reloads := 0
	reload := func(cfg string) {
		t.Helper()
		s.writeConfig(cfg)
		reloads++
		d.cmd.Process.Signal(syscall.SIGHUP)
		waitfor.True(t, "the reload", 10*time.Second, func() bool { return strings.Count(s.log(), "event=reload status=ok") >= reloads })
	}
	check := func(when string) {
		t.Helper()
		now := counters(scrape(t, sock))
		for k, v := range prev {
			if now[k] < v {
				t.Errorf("%s: %s went down from %v to %v", when, k, v, now[k])
			}
		}
		prev = now
	}
	reload(base + "[policy.nobody]\nmessages_per_hour = 100\n")
	check("nobody named in [policy]")
	if code, stderr := s.sendmailAs(nobodyUID, "nobody named"); code != 0 {
		t.Fatalf("sendmail as nobody: %d %s", code, stderr)
	}
	if _, err := up.WaitFor(7, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "7 deliveries logged", 20*time.Second, func() bool { return strings.Count(s.log(), "status=sent") >= 7 })
	check("nobody's message after it was named")
	if got := prev[metrics.PickedUp+"{account=nobody,via=socket}"]; got != 1 {
		t.Errorf("nobody's own series: %v, want its 1 message since it was named (%v)", got, prev)
	}
	reload(base)
	check("nobody's table dropped")
}
