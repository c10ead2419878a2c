package queue

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// hosts is a set of scripted upstreams keyed by host name: each may refuse
// connections or answer MAIL with an error; the others deliver through
// a fakeUp of its own.
type hosts struct {
	mu      sync.Mutex
	dialErr map[string]*relay.Error
	mailErr map[string]*relay.Error
	dials   map[string]int
	ups     map[string]*fakeUp
}

func newHosts(names ...string) *hosts {
	h := &hosts{dialErr: map[string]*relay.Error{}, mailErr: map[string]*relay.Error{}, dials: map[string]int{}, ups: map[string]*fakeUp{}}
	for _, n := range names {
		h.ups[n] = &fakeUp{}
	}
	return h
}

func (h *hosts) set(host string, dial, mail *relay.Error) {
	h.mu.Lock()
	h.dialErr[host], h.mailErr[host] = dial, mail
	h.mu.Unlock()
}

func (h *hosts) dialCount(host string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dials[host]
}

func (h *hosts) dial(ctx context.Context, up config.Upstream) (Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dials[up.Host]++
	if e := h.dialErr[up.Host]; e != nil {
		return nil, e
	}
	return &hostSess{h: h, host: up.Host, addr: relay.Addr(up), fakeSess: fakeSess{up: h.ups[up.Host]}}, nil
}

type hostSess struct {
	fakeSess
	h          *hosts
	host, addr string
}

func (s *hostSess) Upstream() string { return s.addr }

func (s *hostSess) Send(ctx context.Context, m *relay.Message) *relay.Result {
	s.h.mu.Lock()
	e := s.h.mailErr[s.host]
	s.h.mu.Unlock()
	if e != nil {
		return failedResult(m, s.addr, e)
	}
	res := s.fakeSess.Send(ctx, m)
	res.Upstream = s.addr
	return res
}

func refused() *relay.Error {
	return &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: errors.New("connection refused"), Cause: "the upstream refused the connection"}
}

func (e *env) deliveryState(t *testing.T, id string) *spool.Delivery {
	t.Helper()
	st := e.state(t, id)
	d, err := e.sp.ReadState(st, id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type events struct {
	mu  sync.Mutex
	evs []Event
}

func (o *events) Observe(ev Event) { o.mu.Lock(); o.evs = append(o.evs, ev); o.mu.Unlock() }

func (o *events) kinds() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var k []string
	for _, ev := range o.evs {
		k = append(k, string(ev.Kind))
	}
	return strings.Join(k, ",")
}

// The circuit breaker, driven with the injected clock through the
// scheduler's loop (Queue.Run): a failed dial opens it; messages that arrive
// while it is open are neither tried nor charged an attempt nor deferred
// by the retry schedule; when the backoff is over one message probes the
// upstream; a success closes the breaker and everything goes at once.
func TestBreakerHoldsMessagesWithoutCharging(t *testing.T) {
	h := newHosts("a.example")
	ups := []config.Upstream{{Host: "a.example", Port: 587}}
	e := newEnv(t, Settings{Concurrency: 2, Retry: []time.Duration{time.Hour}, Lifetime: 24 * time.Hour,
		Upstreams: NewUpstreams(ups, relay.Options{}, h.dial)})
	obs := &events{}
	e.q.Observer = obs
	h.set("a.example", refused(), nil)

	first := e.enqueue(t, 1001, "a@example.org", "x@example.net")
	next := e.run()
	if d := e.deliveryState(t, first); d.Attempts != 0 || e.state(t, first) != spool.Deferred || !d.Next.Equal(t0.Add(MinBackoff)) {
		t.Fatalf("after a refused connection: %s attempts=%d next=%v", e.state(t, first), d.Attempts, d.Next)
	}
	if !next.Equal(t0.Add(MinBackoff)) {
		t.Errorf("next %v, want the breaker's expiry %v", next, t0.Add(MinBackoff))
	}
	if !strings.Contains(e.log.String(), "event=upstream-down upstream=a.example:587 retry_in=1s") {
		t.Errorf("no upstream-down line:\n%s", e.log)
	}

	// While the breaker is open, new mail is not tried at all.
	var later []string
	for i := 0; i < 5; i++ {
		later = append(later, e.enqueue(t, 1001, "a@example.org", "x@example.net"))
	}
	e.run()
	if n := h.dialCount("a.example"); n != 1 {
		t.Fatalf("%d dials while the breaker is open, want 1", n)
	}
	for _, id := range later {
		if st := e.state(t, id); st != spool.Incoming {
			t.Errorf("%s is %s, want incoming (untouched)", id, st)
		}
	}

	// The backoff is over: one message probes, and fails again.
	e.clk.Set(t0.Add(MinBackoff))
	e.run()
	if n := h.dialCount("a.example"); n != 2 {
		t.Fatalf("%d dials after the backoff, want 2 (one probe)", n)
	}
	attempted := 0
	for _, id := range append(later, first) {
		if e.state(t, id) == spool.Deferred {
			attempted++
			if d := e.deliveryState(t, id); d.Attempts != 0 {
				t.Errorf("%s charged %d attempts for a dead upstream", id, d.Attempts)
			}
		}
	}
	if attempted != 2 {
		t.Errorf("%d messages touched, want the first and one probe", attempted)
	}

	// The upstream is back: the next probe succeeds, the breaker closes,
	// and everything goes at once (no retry interval).
	h.set("a.example", nil, nil)
	e.clk.Set(t0.Add(10 * time.Second))
	e.run()
	e.run()
	if got := len(h.ups["a.example"].sent()); got != 6 {
		t.Fatalf("%d delivered after the upstream came back, want 6\n%s", got, e.log)
	}
	if !strings.Contains(e.log.String(), "event=upstream-up upstream=a.example:587 down_for=10s failures=2") {
		t.Errorf("no upstream-up line:\n%s", e.log)
	}
	if k := obs.kinds(); !strings.HasPrefix(k, "upstream-down,deferred,") || !strings.Contains(k, "upstream-up,sent,removed") {
		t.Errorf("observer saw %s", k)
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		failing time.Duration
		want    time.Duration
	}{{0, time.Second}, {3 * time.Second, time.Second}, {8 * time.Second, 2 * time.Second}, {60 * time.Second, 15 * time.Second}, {time.Hour, MaxBackoff}} {
		if got := backoff(t0, t0.Add(c.failing)); got != c.want {
			t.Errorf("failing for %v: backoff %v, want %v", c.failing, got, c.want)
		}
	}
}

// Failover in the production path (the link every worker uses): a refused
// connection, then a 421 at MAIL, then an upstream that takes the message;
// a 5xx about the sender does not fail over.
func TestFailoverAcrossUpstreams(t *testing.T) {
	h := newHosts("a.example", "b.example", "c.example")
	ups := []config.Upstream{{Host: "a.example", Port: 587}, {Host: "b.example", Port: 587}, {Host: "c.example", Port: 587}}
	e := newEnv(t, Settings{Concurrency: 1, Upstreams: NewUpstreams(ups, relay.Options{}, h.dial)})
	h.set("a.example", refused(), nil)
	h.set("b.example", nil, &relay.Error{Class: relay.Temporary, Stage: relay.StageMail, Code: 421, Enhanced: "4.3.2", Text: "Service shutting down"})
	id := e.enqueue(t, 1001, "a@example.org", "x@example.net")
	e.run()
	if e.state(t, id) != "" || len(h.ups["c.example"].sent()) != 1 {
		t.Fatalf("not delivered through the third upstream:\n%s", e.log)
	}
	if !strings.Contains(e.log.String(), "upstream=c.example:587 status=sent") {
		t.Errorf("log:\n%s", e.log)
	}
	// a and b are now open: the next message goes straight to c.
	id = e.enqueue(t, 1001, "a@example.org", "x@example.net")
	e.run()
	if h.dialCount("a.example") != 1 || h.dialCount("b.example") != 1 || len(h.ups["c.example"].sent()) != 2 {
		t.Errorf("dials a=%d b=%d, c got %d", h.dialCount("a.example"), h.dialCount("b.example"), len(h.ups["c.example"].sent()))
	}

	// A permanent refusal of the sender is the message's: no failover.
	e.clk.Set(t0.Add(time.Hour))
	h.set("a.example", nil, &relay.Error{Class: relay.Permanent, Stage: relay.StageMail, Code: 553, Enhanced: "5.7.1", Text: "Sender address rejected: not owned by user"})
	id = e.enqueue(t, 1001, "a@example.org", "x@example.net")
	e.run()
	if len(h.ups["c.example"].sent()) != 2 {
		t.Errorf("c got %d messages, want still 2", len(h.ups["c.example"].sent()))
	}
	if !strings.Contains(e.log.String(), "event=delivery id="+id+" to=x@example.net upstream=a.example:587 status=bounced") {
		t.Errorf("a 5xx failed over:\n%s", e.log)
	}
}

// A reused session found dead before the data (the upstream restarted) is
// replaced at once and the message sent: not deferred.
func TestDeadReusedSessionIsRedialed(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1})
	e.up.dropNext = 1
	ids := []string{e.enqueue(t, 1001, "a@example.org", "x@example.net"), e.enqueue(t, 1001, "a@example.org", "y@example.net")}
	e.run()
	for _, id := range ids {
		if st := e.state(t, id); st != "" {
			t.Errorf("%s left in %s:\n%s", id, st, e.log)
		}
	}
	if e.up.dials != 2 || len(e.up.sent()) != 2 {
		t.Errorf("%d dials, %d sent", e.up.dials, len(e.up.sent()))
	}
}

// Breakers are per upstream: one route's dead upstream does not hold the
// mail of another route, and its own mail is held without being tried.
func TestBreakerPerRoute(t *testing.T) {
	h := newHosts("a.example", "b.example")
	ups := []config.Upstream{
		{Name: "a", Host: "a.example", Port: 587},
		{Name: "b", RoutedOnly: true, Host: "b.example", Port: 587},
	}
	routes := []config.Route{{SenderDomains: []string{"b.example.org"}, Upstream: []string{"b"}}}
	e := newEnv(t, Settings{Concurrency: 1, Upstreams: NewUpstreams(ups, relay.Options{}, h.dial).WithRoutes(routes)})
	h.set("a.example", refused(), nil)
	e.enqueue(t, 1001, "x@a.example.org", "r@example.net")
	e.run()
	if !strings.Contains(e.log.String(), "event=upstream-down upstream=a.example:587 name=a retry_in=1s") {
		t.Fatalf("log:\n%s", e.log)
	}
	held := e.enqueue(t, 1001, "y@a.example.org", "r@example.net")
	routed := e.enqueue(t, 1001, "z@b.example.org", "r@example.net")
	e.run()
	if len(h.ups["b.example"].sent()) != 1 || e.state(t, routed) != "" {
		t.Errorf("route b's mail held by a's breaker:\n%s", e.log)
	}
	if e.state(t, held) != spool.Incoming || h.dialCount("a.example") != 1 {
		t.Errorf("a's mail: %s, %d dials", e.state(t, held), h.dialCount("a.example"))
	}
}

// A backup upstream that is down is not probed while the first upstream
// works: its breaker waits for a message that needs it.
func TestDownBackupIsLeftAlone(t *testing.T) {
	h := newHosts("a.example", "b.example")
	ups := []config.Upstream{{Host: "a.example", Port: 587}, {Host: "b.example", Port: 587}}
	e := newEnv(t, Settings{Concurrency: 1, Upstreams: NewUpstreams(ups, relay.Options{}, h.dial)})
	h.set("a.example", refused(), nil)
	h.set("b.example", refused(), nil)
	first := e.enqueue(t, 1001, "x@example.org", "r@example.net")
	e.run()
	if e.state(t, first) != spool.Deferred || h.dialCount("a.example") != 1 || h.dialCount("b.example") != 1 {
		t.Fatalf("both down: %s, dials a=%d b=%d", e.state(t, first), h.dialCount("a.example"), h.dialCount("b.example"))
	}
	h.set("a.example", nil, nil)
	e.clk.Set(t0.Add(10 * time.Second))
	for i := 0; i < 5; i++ {
		e.enqueue(t, 1001, "x@example.org", "r@example.net")
	}
	e.run()
	if got := len(h.ups["a.example"].sent()); got != 6 {
		t.Errorf("a took %d messages, want 6:\n%s", got, e.log)
	}
	if n := h.dialCount("b.example"); n != 1 {
		t.Errorf("the down backup was dialed %d times, want 1 (left alone while a works)", n)
	}
}

// Messages held by an open breaker still get their delay notice and are
// still bounced at the end of their lifetime, without a connection.
func TestBreakerHeldMessagesAgeOut(t *testing.T) {
	h := newHosts("a.example")
	ups := []config.Upstream{{Host: "a.example", Port: 587}}
	e := newEnv(t, Settings{Concurrency: 1, Lifetime: time.Hour, DelayNotice: 10 * time.Minute,
		Upstreams: NewUpstreams(ups, relay.Options{}, h.dial)})
	h.set("a.example", refused(), nil)
	old := e.enqueue(t, 1001, "old@example.org", "r@example.net")
	e.run()
	// 11 minutes later a probe fails again; the old message, held by the
	// breaker, gets its delay notice all the same.
	e.clk.Set(t0.Add(11 * time.Minute))
	e.enqueue(t, 1001, "probe@example.org", "r@example.net")
	e.run()
	if n := strings.Count(e.log.String(), "event=delay-notice id="+old+" "); n != 1 {
		t.Fatalf("%d delay notices for the held message, want 1:\n%s", n, e.log)
	}
	dials := h.dialCount("a.example")
	e.run() // the breaker still holds it: no second notice, no dial
	if n := strings.Count(e.log.String(), "event=delay-notice id="+old+" "); n != 1 || h.dialCount("a.example") != dials {
		t.Errorf("%d notices, %d dials (was %d)", n, h.dialCount("a.example"), dials)
	}
	// After its lifetime it is bounced, while the upstream is still down.
	e.clk.Set(t0.Add(61 * time.Minute))
	e.enqueue(t, 1001, "probe2@example.org", "r@example.net")
	e.run()
	if st := e.state(t, old); st != "" {
		t.Errorf("the held message is %s after its lifetime:\n%s", st, e.log)
	}
	if !strings.Contains(e.log.String(), "event=delivery id="+old+" to=r@example.net upstream=a.example:587 status=bounced reply=\"dial tcp") &&
		!strings.Contains(e.log.String(), "event=delivery id="+old+" to=r@example.net upstream=a.example:587 status=bounced") {
		t.Errorf("no bounce line:\n%s", e.log)
	}
}

// A breaker held for an authentication failure never bounces what it
// holds: a rotated password must not bounce the queue.
func TestBreakerAuthFailureNeverBounces(t *testing.T) {
	h := newHosts("a.example")
	ups := []config.Upstream{{Host: "a.example", Port: 587}}
	e := newEnv(t, Settings{Concurrency: 1, Lifetime: time.Hour, Upstreams: NewUpstreams(ups, relay.Options{}, h.dial)})
	h.set("a.example", &relay.Error{Class: relay.AuthFailure, Stage: relay.StageAuth, Code: 535, Enhanced: "5.7.8", Text: "authentication failed"}, nil)
	held := e.enqueue(t, 1001, "x@example.org", "r@example.net")
	e.run()
	e.clk.Set(t0.Add(2 * time.Hour))
	e.enqueue(t, 1001, "y@example.org", "r@example.net")
	e.run()
	e.run()
	if st := e.state(t, held); st != spool.Deferred || strings.Contains(e.log.String(), "bounced") {
		t.Errorf("held message %s; log:\n%s", st, e.log)
	}
}

// A message whose refusal looks like the upstream's trouble but is its
// own (a 421 for this sender only) cannot starve the others: it is not
// the probe every time, the others get through, and it backs off.
func TestMisleadingRefusalDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1, Retry: []time.Duration{time.Hour}, Lifetime: 24 * time.Hour})
	e.up.respond = func(from, rcpt string) *relay.Error {
		if from == "bad@example.org" {
			return &relay.Error{Class: relay.Temporary, Stage: relay.StageMail, Code: 421, Enhanced: "4.3.2", Text: "too busy for you"}
		}
		return nil
	}
	bad := e.enqueue(t, 1001, "bad@example.org", "r@example.net")
	var good []string
	for i := 0; i < 3; i++ {
		good = append(good, e.enqueue(t, 1001, "good@example.org", "r@example.net"))
	}
	for _, at := range []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second} {
		e.clk.Set(t0.Add(at))
		e.run()
	}
	for _, id := range good {
		if st := e.state(t, id); st != "" {
			t.Errorf("good message %s still %s:\n%s", id, st, e.log)
		}
	}
	if st := e.state(t, bad); st != spool.Deferred {
		t.Errorf("bad message %s", st)
	}
	// It backs off: over a minute it is tried a handful of times, not 60.
	for s := 4; s <= 60; s++ {
		e.clk.Set(t0.Add(time.Duration(s) * time.Second))
		e.run()
	}
	if n := strings.Count(e.log.String(), "event=delivery id="+bad+" "); n > 10 {
		t.Errorf("the bad message was tried %d times in a minute", n)
	}
}

// The next attempt a message records (queue show, mailq --json, the
// deferred line's next=) while its upstream is down is when it is tried
// again: the later of the breaker's backoff and the message's own wait
// (1 s, 2 s, 4 s ... after each try that found every upstream down), not
// the breaker's alone, which told the admin a time at which nothing
// happened.
func TestBreakerRecordedNextIsTheNextTry(t *testing.T) {
	h := newHosts("a.example")
	ups := []config.Upstream{{Host: "a.example", Port: 587}}
	e := newEnv(t, Settings{Concurrency: 1, Retry: []time.Duration{time.Hour}, Lifetime: 24 * time.Hour,
		Upstreams: NewUpstreams(ups, relay.Options{}, h.dial)})
	h.set("a.example", refused(), nil)
	id := e.enqueue(t, 1001, "a@example.org", "x@example.net")
	e.run()
	for i := 1; i <= 5; i++ {
		d := e.deliveryState(t, id)
		if !strings.Contains(e.log.String(), "next="+d.Next.UTC().Format(time.RFC3339)) {
			t.Fatalf("try %d: recorded next %v is not the deferred line's:\n%s", i, d.Next, e.log)
		}
		dials := h.dialCount("a.example")
		// Not before: a recorded next later than the try is as false.
		e.clk.Set(d.Next.Add(-time.Millisecond))
		e.run()
		if n := h.dialCount("a.example"); n != dials {
			t.Fatalf("try %d: recorded next attempt %v, but %d dials before it\n%s", i, d.Next.Sub(t0), n-dials, e.log)
		}
		e.clk.Set(d.Next)
		e.run()
		if n := h.dialCount("a.example"); n != dials+1 {
			t.Fatalf("try %d: recorded next attempt %v, but %d dials then, want 1\n%s", i, d.Next.Sub(t0), n-dials, e.log)
		}
	}
}
