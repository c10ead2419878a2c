package main

import (
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// pacedOf returns nobody's deferred messages, oldest first.
func (s *site) pacedOf() []queue.ListEntry {
	s.t.Helper()
	var l []queue.ListEntry
	for _, e := range s.queueJSON("--user", "nobody") {
		if e.State == spool.Deferred {
			l = append(l, e)
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	return l
}

// deferNobody writes nobody's table: messages_per_hour at perHour,
// action defer.
func deferNobody(perHour int) string {
	return fmt.Sprintf("\nmessages_per_hour = %d\naction = \"defer\"\n", perHour)
}

// waitDelivered waits until n messages reached the upstream.
func (s *site) waitDelivered(n int, what string) {
	s.t.Helper()
	if !waitfor.Poll(20*time.Second, func() bool { return s.up.Count() >= n }) {
		s.t.Fatalf("%s: %d message(s) delivered within 20 s, want %d; nobody's deferred: %+v\n%s", what, s.up.Count(), n, s.pacedOf(), s.log())
	}
}

// An admin who raises the rate of an account whose action is "defer"
// lets its backlog out at the new pace, oldest first: nobody, allowed 1
// an hour, sends 4; the first goes and 3 wait (slots an hour apart).
// Raised to 3 an hour and reloaded, the bucket holds 4 of 3 (1 sent, 3
// waiting: the count is kept), so the 2 oldest waiting go at once and the
// third is due 20 minutes on (one new slot), not in 3 hours; a message
// sent now comes after it. Raised to 100, both go at once. Nothing is
// sent twice.
func TestPolicyReloadRaisedRateRetimesDeferred(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", deferNobody(1))
	d := s.start()
	for i := 1; i <= 4; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
	}
	s.waitDelivered(1, "within the rate")
	before := s.pacedOf()
	if len(before) != 3 {
		t.Fatalf("nobody's deferred: %+v; want 3\n%s", before, s.log())
	}
	s.reloadPolicy(d, deferNobody(3))
	reloaded := time.Now()
	s.waitDelivered(3, "raised from 1 to 3 an hour")
	left := s.pacedOf()
	if len(left) != 1 || left[0].ID != before[2].ID {
		t.Fatalf("deferred after the raise: %+v; want only the newest of %+v", left, before)
	}
	if got := s.subjects(); got["m2"] != 1 || got["m3"] != 1 || got["m4"] != 0 {
		t.Errorf("delivered after the raise: %v; want m2 and m3 once, not m4", got)
	}
	next := left[0].Next
	if w := next.Sub(reloaded); w < 15*time.Minute || w > 21*time.Minute {
		t.Errorf("the last deferred message is due %s after the reload (was %s); want 20 minutes, the new pace", w.Round(time.Second), before[2].Next.Sub(reloaded).Round(time.Second))
	}
	if want := "event=policy-retime account=nobody uid=65534 retimed=3 due=2 last=" + next.UTC().Format(time.RFC3339) + "\n"; !strings.Contains(s.log(), want) {
		t.Errorf("no log line %q:\n%s", want, s.log())
	}
	if want := "deferred by policy until " + next.UTC().Format(time.RFC3339) + ": "; !strings.HasPrefix(left[0].Reason, want) {
		t.Errorf("its reason %q; want it to start %q", left[0].Reason, want)
	}
	s.sendNobody("m5")
	now := s.pacedOf()
	if len(now) != 2 || now[0].ID != left[0].ID || !now[1].Next.After(now[0].Next) {
		t.Errorf("after a new message: %+v; want it after the one waiting", now)
	}

	s.reloadPolicy(d, deferNobody(100))
	s.waitDelivered(5, "raised to 100 an hour")
	if got := s.subjects(); len(got) != 5 || got["m4"] != 1 || got["m5"] != 1 {
		t.Errorf("delivered: %v; want m1..m5 once each", got)
	}
	if l := s.pacedOf(); len(l) != 0 {
		t.Errorf("still deferred: %+v", l)
	}
}

// The same across a restart: 1 an hour, 3 sent (2 waiting), relayd
// stopped, the rate raised to 100, relayd started: both go at once.
func TestPolicyRestartWithRaisedRateRetimesDeferred(t *testing.T) {
	needRoot(t)
	_, s := newPolicySite(t, "nobody", deferNobody(1))
	d := s.start()
	for i := 1; i <= 3; i++ {
		s.sendNobody(fmt.Sprintf("m%d", i))
	}
	s.waitDelivered(1, "within the rate")
	if l := s.pacedOf(); len(l) != 2 {
		t.Fatalf("nobody's deferred: %+v; want 2", l)
	}
	if code := d.term(t); code != 0 {
		t.Fatalf("relayd exit %d", code)
	}
	s.writeConfig("\n[policy]\nnotice_to = \"\"\n[policy.nobody]" + deferNobody(100))
	s.start()
	s.waitDelivered(3, "restarted with the rate raised to 100")
	if got := s.subjects(); len(got) != 3 || got["m2"] != 1 || got["m3"] != 1 {
		t.Errorf("delivered: %v; want m1..m3 once each", got)
	}
}

// relayd killed (SIGKILL) at some point of the re-timing a reload does,
// then started again: every message is delivered, and none twice but
// one the upstream had taken before the kill (at-least-once: relayd may
// be killed after the upstream's 250 and before it removes the message,
// which it then sends again once). (The delays only place the kill at
// different points of the reload; from 10 ms on, the re-timed messages
// are being sent.)
func TestPolicyRetimeKilled(t *testing.T) {
	needRoot(t)
	for _, delay := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			_, s := newPolicySite(t, "nobody", deferNobody(1))
			d := s.start()
			for i := 1; i <= 4; i++ {
				s.sendNobody(fmt.Sprintf("m%d", i))
			}
			s.waitDelivered(1, "within the rate")
			s.writeConfig("\n[policy]\nnotice_to = \"\"\n[policy.nobody]" + deferNobody(100))
			d.cmd.Process.Signal(syscall.SIGHUP)
			time.Sleep(delay)
			d.kill()
			// What the upstream took before the kill (a session the
			// kill cut after its end of data may still be counted).
			time.Sleep(200 * time.Millisecond)
			before := s.subjects()
			s.start()
			want := map[string]bool{"m1": true, "m2": true, "m3": true, "m4": true}
			got, _ := s.waitDrained("every message after the kill", 20*time.Second, want)
			for subj := range want {
				if before[subj] > 1 || got[subj]-before[subj] > 1 {
					t.Errorf("%s delivered %d time(s) before the kill and %d after; want once, and again at most once after the kill if it was taken before", subj, before[subj], got[subj]-before[subj])
				}
			}
			if len(got) != 4 {
				t.Errorf("delivered %v; want m1..m4", got)
			}
			if t.Failed() {
				t.Logf("before the kill: %v\n%s", before, s.log())
			}
		})
	}
}
