package main

// The delivery engine through the real relayd process: outages under
// steady traffic, long outages with the default retry schedule, sessions
// the upstream closed behind relayd's back.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// dropSubject writes one message with the given Subject into the maildrop,
// as sendmail does, and returns the time it was committed (its arrival).
func (s *site) dropSubject(subject string) time.Time {
	s.t.Helper()
	s.dropEnv(spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t"},
		spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}}, 1, func(int) string {
			return fmt.Sprintf("From: app@example.org\nTo: rcpt@example.net\nSubject: %s\n\nbody\n", subject)
		})
	return time.Now()
}

// deliveredAt returns when the upstream accepted each Subject (first copy).
func deliveredAt(up *smtptest.Server) map[string]time.Time {
	out := map[string]time.Time{}
	for _, m := range up.Messages() {
		for _, l := range strings.Split(string(m.Data), "\r\n") {
			if v, ok := strings.CutPrefix(l, "Subject: "); ok {
				if _, seen := out[v]; !seen {
					out[v] = m.Time
				}
				break
			}
			if l == "" {
				break
			}
		}
	}
	return out
}

// logTail is the end of relayd's log, for failure messages.
func (s *site) logTail(n int) string {
	l := s.log()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return l
}

// An upstream outage of 3 s under steady traffic (one message every 0.6 s,
// concurrency 1, retry every second): every message that arrives after the
// upstream is back is delivered within 2 s of its arrival while the
// traffic goes on, and nothing is lost.
func TestOutageUnderSteadyTraffic(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1, retry: `["1s"]`})
	s.start()
	const (
		tick      = 600 * time.Millisecond
		before    = 5  // ticks before the outage
		outage    = 5  // ticks down (3 s)
		after     = 20 // ticks of traffic after the upstream is back (12 s)
		lagLimit  = 2 * time.Second
		drainTime = 30 * time.Second
	)
	arrived := map[string]time.Time{}
	var back time.Time
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for i := 0; i < before+outage+after; i++ {
		switch i {
		case before:
			up.Stop()
		case before + outage:
			if err := up.Restart(); err != nil {
				t.Fatal(err)
			}
			back = time.Now()
		}
		subj := fmt.Sprintf("steady %d", i)
		arrived[subj] = s.dropSubject(subj)
		<-ticker.C
	}
	var worst time.Duration
	var late []string
	check := func() bool {
		got := deliveredAt(up)
		worst, late = 0, nil
		for subj, at := range arrived {
			if at.Before(back) {
				continue
			}
			d, ok := got[subj]
			if !ok {
				late = append(late, subj+" (not delivered)")
				continue
			}
			lag := d.Sub(at)
			worst = max(worst, lag)
			if lag > lagLimit {
				late = append(late, fmt.Sprintf("%s (after %v)", subj, lag.Round(time.Millisecond)))
			}
		}
		sort.Strings(late)
		return len(got) >= len(arrived)
	}
	waitfor.True(t, "every message delivered", drainTime, func() bool { check(); return len(deliveredAt(up)) >= len(arrived) && len(s.leftovers()) == 0 })
	check()
	if len(late) > 0 {
		t.Fatalf("%d messages that arrived after the upstream was back were not delivered within %v: %v\nlog tail:\n%s", len(late), lagLimit, late, s.logTail(4000))
	}
	t.Logf("%d messages, worst delivery lag after the upstream came back: %v", len(arrived), worst.Round(time.Millisecond))
}

// outageLength is how long TestLongOutageDefaultSchedule keeps the upstream
// down: 62 s (just over the default schedule's first interval, 1m), or
// MAILSHIM_OUTAGE (a Go duration) to try other lengths.
func outageLength(t *testing.T) time.Duration {
	if v := os.Getenv("MAILSHIM_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("MAILSHIM_OUTAGE: %v", err)
		}
		return d
	}
	return 62 * time.Second
}

// A long outage with the default retry schedule (1m, 5m, ...): messages
// queued while the upstream is down are delivered within the circuit
// breaker's backoff (capped at 30 s) of its return, not after the next
// retry interval (5 minutes for the messages tried twice).
func TestLongOutageDefaultSchedule(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 2, retry: `["1m", "5m", "15m", "1h", "4h"]`})
	s.start()
	s.dropSubject("warm-up")
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	down := outageLength(t)
	up.Stop()
	stopped := time.Now()
	n := 0
	for _, at := range []time.Duration{0, down / 3, 2 * down / 3} {
		time.Sleep(time.Until(stopped.Add(at)))
		for j := 0; j < 3; j++ {
			s.dropSubject(fmt.Sprintf("outage %d", n))
			n++
		}
	}
	time.Sleep(time.Until(stopped.Add(down)))
	if err := up.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	const backoffCap = 30 * time.Second
	limit := backoffCap + 10*time.Second
	if _, err := up.WaitFor(1+n, limit); err != nil {
		t.Fatalf("after an outage of %v, not every message was delivered within %v of the upstream's return (the breaker's backoff is capped at %v): %v\nlog tail:\n%s",
			down, limit, backoffCap, err, s.logTail(4000))
	}
	last := time.Time{}
	for _, at := range deliveredAt(up) {
		if at.After(last) {
			last = at
		}
	}
	waitfor.True(t, "an empty spool", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
	t.Logf("outage %v: %d messages, all delivered %v after the upstream came back", down, n, last.Sub(back).Round(time.Millisecond))
}

// The upstream restarts and so closes the session relayd keeps open: the
// next message goes out at once on a fresh connection, not deferred by a
// retry interval ("EOF at mail").
func TestClosedSessionIsRedialed(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1, retry: `["1h"]`})
	s.start()
	s.dropSubject("first")
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	up.Stop()
	if err := up.Restart(); err != nil {
		t.Fatal(err)
	}
	s.dropSubject("second")
	if _, err := up.WaitFor(2, 10*time.Second); err != nil {
		t.Fatalf("the message after the upstream's restart was not sent at once: %v\n%s", err, s.log())
	}
	if strings.Contains(s.log(), "event=deferred") {
		t.Errorf("a message was deferred:\n%s", s.log())
	}
	if c := up.Connections(); c < 2 {
		t.Errorf("%d connections, want a fresh one after the restart", c)
	}
}

// upstreamTOML is an [[upstream]] table for srv, with the site's secret.
func (s *site) upstreamTOML(srv *smtptest.Server) string {
	u := srv.Upstream()
	return fmt.Sprintf("\n[[upstream]]\nhost = %q\nport = %d\ntls = \"starttls\"\nca_file = %q\nusername = %q\npassword_file = %q\n",
		u.Host, u.Port, u.CAFile, u.Username, filepath.Join(s.dir, "secret"))
}

// Failover through relayd with three upstreams: the first refuses
// connections, the second answers 421 to MAIL, the third takes the mail.
// When the first comes back it is used again (it is first in the list);
// a 5xx about the sender is the message's and is not failed over.
func TestFailoverThreeUpstreams(t *testing.T) {
	first := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail && arg == "forbidden@example.org" {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address rejected: not owned by user"}
		}
		return nil
	}})
	second := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, closing transmission channel"}
		}
		return nil
	}})
	third := newUpstream(t, smtptest.Options{})
	first.Stop()
	s := newSite(t, first, siteOpts{concurrency: 2, retry: `["1h"]`})
	s.writeConfig(s.upstreamTOML(second) + s.upstreamTOML(third))
	s.start()
	s.drop("failover", 3)
	if _, err := third.WaitFor(3, 30*time.Second); err != nil {
		t.Fatalf("not delivered through the third upstream: %v\n%s", err, s.log())
	}
	log := s.log()
	for _, want := range []string{"event=upstream-down upstream=" + first.Addr, "event=upstream-down upstream=" + second.Addr, "upstream=" + third.Addr + " status=sent"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "event=deferred") {
		t.Errorf("a message was deferred although the third upstream took it:\n%s", log)
	}
	if second.Count() != 0 {
		t.Errorf("the second upstream got %d messages", second.Count())
	}

	// The first upstream is back: after its breaker's backoff, new mail
	// goes to it again.
	if err := first.Restart(); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "new mail through the first upstream again", 30*time.Second, func() bool {
		s.dropSubject("failback")
		time.Sleep(500 * time.Millisecond)
		return first.Count() > 0
	})
	waitfor.True(t, "the upstream-up line", 10*time.Second, func() bool {
		return strings.Contains(s.log(), "event=upstream-up upstream="+first.Addr)
	})

	// A permanent refusal of the sender: bounced, not failed over.
	before := third.Count() + second.Count()
	ids := s.dropFrom("forbidden@example.org", "refused sender")
	waitfor.True(t, "the bounce", 30*time.Second, func() bool {
		return strings.Contains(s.log(), "event=bounced id="+ids)
	})
	if n := third.Count() + second.Count(); n != before {
		t.Errorf("a 5xx about the sender failed over (%d more messages elsewhere):\n%s", n-before, s.log())
	}
	waitfor.True(t, "an empty spool", 30*time.Second, func() bool { return len(s.leftovers()) == 0 })
}

// Routing through relayd: a UID's mail goes through its own smarthost
// account (a routed_only upstream with its own credentials), mail from a
// sender domain through that domain's upstream, everything else (bounces
// included) through the main one. The UID is the maildrop file's owner,
// so the per-user part needs root (to give a file to nobody).
func TestRouting(t *testing.T) {
	main := newUpstream(t, smtptest.Options{})
	own := smtptest.New(t, smtptest.Options{Username: "nobody@example.com", Password: "nobody-" + testPassword})
	shop := smtptest.New(t, smtptest.Options{Username: "web1@shop.example", Password: "shop-" + testPassword})
	s := newSite(t, main, siteOpts{concurrency: 2, retry: `["1h"]`})
	secret := func(name, pw string) string {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	named := func(name string, routedOnly bool, srv *smtptest.Server, secretFile string) string {
		u := srv.Upstream()
		return fmt.Sprintf("\n[[upstream]]\nname = %q\nrouted_only = %v\nhost = %q\nport = %d\ntls = \"starttls\"\nca_file = %q\nusername = %q\npassword_file = %q\n",
			name, routedOnly, u.Host, u.Port, u.CAFile, u.Username, secretFile)
	}
	s.writeConfig(named("own", true, own, secret("own.secret", "nobody-"+testPassword)) +
		named("shop", true, shop, secret("shop.secret", "shop-"+testPassword)) + `
[[route]]
users = ["nobody", "uid:65534"]
upstream = ["own"]

[[route]]
sender_domains = ["shop.example"]
upstream = ["shop"]
`)
	s.prepareSpool()
	// Everything is in the maildrop (with its owner) before relayd starts.
	plain := s.dropFrom("app@example.org", "default")
	shopID := s.dropFrom("orders@shop.example", "shop's")
	want := map[*smtptest.Server][]string{main: {"default"}, shop: {"shop's"}}
	if os.Geteuid() == 0 {
		// Two files of nobody's: its own account, whatever the sender.
		for _, sender := range []string{"app@example.org", "orders@shop.example"} {
			id := s.dropFrom(sender, "nobody's from "+sender)
			if err := os.Chown(filepath.Join(s.spool, spool.DirMaildrop, id), 65534, 65534); err != nil {
				t.Fatal(err)
			}
			want[own] = append(want[own], "nobody's from "+sender)
		}
	} else {
		t.Log("not root: the per-user route is not tried (files cannot be given to nobody)")
	}
	s.start()
	for srv, subjects := range want {
		if _, err := srv.WaitFor(len(subjects), 30*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, s.log())
		}
		got := map[string]bool{}
		for _, m := range srv.Messages() {
			got[subjectOf(m)] = true
			if m.User != srv.Upstream().Username {
				t.Errorf("%s: logged in as %q", srv.Addr, m.User)
			}
		}
		for _, subj := range subjects {
			if !got[subj] {
				t.Errorf("%q not delivered through %s (got %v)\n%s", subj, srv.Addr, got, s.log())
			}
		}
	}
	if main.Count() != 1 || shop.Count() != 1 {
		t.Errorf("main got %d, shop %d: mail went through another route's upstream", main.Count(), shop.Count())
	}
	waitFor(t, "an empty spool", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
	for id, srv := range map[string]*smtptest.Server{plain: main, shopID: shop} {
		if !strings.Contains(s.log(), "event=delivery id="+id+" to=rcpt@example.net upstream="+srv.Addr+" status=sent") {
			t.Errorf("no delivery line for %s through %s:\n%s", id, srv.Addr, s.log())
		}
	}
}

// subjectOf returns a delivered message's Subject.
func subjectOf(m smtptest.Message) string {
	for _, l := range strings.Split(string(m.Data), "\r\n") {
		if v, ok := strings.CutPrefix(l, "Subject: "); ok {
			return v
		}
		if l == "" {
			break
		}
	}
	return ""
}
