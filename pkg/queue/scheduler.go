package queue

// The scheduler: one goroutine (loop) owns the queue's state — the due
// index (deferred, shared with the control verbs under q.mu), the
// in-flight set, the per-upstream circuit breakers and the routes it has
// learned. Workers get jobs (a batch of message IDs and the upstreams not
// to use) over a channel and report each job's result over another; only
// the loop applies results. Run runs it until stopped, waking on Kick, on
// the next due time and on breaker expiry, on the clock given to New (the
// package's tests drive Run with a clock of their own, seeing each time it
// falls idle through onIdle).
//
// # Circuit breaker
//
// Each upstream (upKey: its name, else its address and account) has a
// breaker. A failure that is the
// upstream's own trouble (connect, TLS, greeting, AUTH, 421, 4.3.x/4.4.x
// before the data: relay.Error.UpstreamTrouble), but not a reply to a
// message's own MAIL, RCPT or DATA (relay.RefusedMessage), opens it: no new session
// is tried on that upstream for a backoff of a quarter of how long it has
// been failing, at least MinBackoff and at most MaxBackoff (so a 3 s
// outage is retried every second, a long one every 30 s — well under the
// retry schedule); a login refused again (5xx to AUTH) after a minute at
// first, at most every 10 minutes (backoffAfter). When the backoff expires, one job of one message probes
// it (half-open); a success closes it at once and makes every message that
// was waiting for it due.
//
// Messages whose every candidate upstream is open are not dispatched: they
// are not charged an attempt and not deferred by the retry schedule. The
// messages of a job whose upstreams all failed keep their attempt count
// (the failure is the upstream's, not theirs) and wait for the breaker —
// except a message an upstream answered with a 4xx to its own MAIL, RCPT
// or DATA, or after its data (relay.RefusedMessage): that is the
// message's trouble, not the upstream's; it does not open the breaker
// (the link reports the upstream working), and the message is charged
// and follows the retry schedule.

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// The circuit breaker's backoff bounds.
const (
	MinBackoff = time.Second
	MaxBackoff = 30 * time.Second
)

// The backoff bounds after the upstream refused relayd's login (a 5xx to
// AUTH): the same credentials fail every time until the administrator
// changes them (a reload that does so retries at once; a flush tries them
// once), and providers lock an account out after a few failed logins.
const (
	MinAuthBackoff = time.Minute
	MaxAuthBackoff = 10 * time.Minute
)

// backoff is how long an upstream failing since since is left alone
// after a failure at now.
func backoff(since, now time.Time) time.Duration {
	return min(max(now.Sub(since)/4, MinBackoff), MaxBackoff)
}

// backoffAfter is backoff for the failure e, the fails-th of the
// outage: longer (MinAuthBackoff to MaxAuthBackoff) when the upstream
// refused the login again. The first refusal keeps the short backoff: an
// OAuth2 access token the upstream refused is replaced by a new one for
// the next login (oauth.Source.Forget), which deserves its chance at once.
func backoffAfter(e *relay.Error, fails int, since, now time.Time) time.Duration {
	if fails > 1 && refusedLogin(e) {
		return min(max(now.Sub(since)/4, MinAuthBackoff), MaxAuthBackoff)
	}
	return backoff(since, now)
}

// refusedLogin reports whether e is the upstream refusing our login (a
// 5xx to AUTH).
func refusedLogin(e *relay.Error) bool {
	return e != nil && e.Class == relay.AuthFailure && e.Stage == relay.StageAuth && e.Code >= 500 && e.Code < 600
}

// breaker is one upstream's health.
type breaker struct {
	since   time.Time // first failure of the current outage
	until   time.Time // no new session before this
	probing bool      // a job is trying it
	fails   int
	reason  string
	last    *relay.Error // the last failure
}

// sched is the scheduler's state, owned by the loop.
type sched struct {
	inflight map[string]bool
	health   map[string]*breaker // by upKey; absent = closed
	// routes caches the candidate addresses of messages whose route was
	// needed (some breaker open, several routes).
	routes map[string][]string
	// waiting holds the deferred messages whose upstreams were all
	// down: due again as soon as one comes back, but not before the time
	// given (see strikes).
	waiting map[string]time.Time
	// strikes counts, per message, the times its upstreams all failed on
	// it: it then waits 1 s, 2 s, 4 s ... up to MaxBackoff before it may
	// go again, even when an upstream comes back. So the next probe of a
	// failing upstream is another message, and a message that keeps
	// tripping a working upstream (a refusal that is really about it)
	// can neither keep its breaker open for everyone else nor be retried
	// every second.
	strikes map[string]int
	// lost holds the messages whose last attempt lost its connection
	// during the data (msgResult.lost). Such a message waits for its
	// retry time, and also for an upstream to come back, as an upstream
	// going down mid-transaction cuts it so; a second loss in a row
	// leaves it to the retry schedule alone: a message that breaks the
	// connection itself is not sent again at every recovery.
	lost map[string]bool
	// swept holds the messages held by open breakers that were handed to
	// a worker anyway, to be bounced at the end of their lifetime or to
	// get their delay notice (see sweep).
	swept map[string]*sweepState
	// ups is the upstream component the breakers and routes are about,
	// and defs what each of its upstreams is (upDefs): a reload that
	// changes an upstream forgets what its old definition earned.
	ups  *Upstreams
	defs map[string]string
	// fixed holds, by the key of the upstream that replaced it, the
	// breaker of an upstream a reload changed while it was down (a wrong
	// password or port put right): closed — it blocks nothing — but its
	// outage is not over until the new definition works, and then
	// upstream-up is logged as after any outage. A failure of the new
	// definition drops it (the failure opens a breaker of its own).
	fixed map[string]*breaker
}

type sweepState struct {
	at     time.Time // last handed over for the lifetime
	notice bool      // handed over for the delay notice
}

// forget drops what s keeps about message id (gone, deleted or held).
func (s *sched) forget(id string) {
	delete(s.routes, id)
	delete(s.waiting, id)
	delete(s.strikes, id)
	delete(s.lost, id)
	delete(s.swept, id)
}

// dropForgotten drops the scheduler's state of the messages the control
// verbs deleted, held or released (forget) since the last call: such a
// message may never come back through a worker's report, and its state
// would stay for the life of relayd. One being delivered keeps it: its
// worker's report settles it.
func (q *Queue) dropForgotten() {
	q.mu.Lock()
	ids := q.forgotten
	q.forgotten = nil
	q.mu.Unlock()
	for _, id := range ids {
		if !q.sched.inflight[id] {
			q.sched.forget(id)
		}
	}
}

func newSched() *sched {
	return &sched{inflight: map[string]bool{}, health: map[string]*breaker{}, routes: map[string][]string{}, waiting: map[string]time.Time{}, strikes: map[string]int{}, lost: map[string]bool{}, swept: map[string]*sweepState{}}
}

// EventKind names an Observer event.
type EventKind string

// Observer events.
const (
	EventSent         EventKind = "sent"          // recipients accepted (Rcpts of them)
	EventDeferred     EventKind = "deferred"      // a message stays queued for a later attempt
	EventBounced      EventKind = "bounced"       // recipients failed for good; a DSN was queued
	EventFailed       EventKind = "failed"        // an undeliverable bounce kept in state failed
	EventRemoved      EventKind = "removed"       // a message left the queue
	EventUpstreamDown EventKind = "upstream-down" // a breaker opened
	EventUpstreamUp   EventKind = "upstream-up"   // a breaker closed
)

// Event is one thing the scheduler did or learned.
type Event struct {
	Kind     EventKind
	ID       string // the message ("" for upstream events)
	Upstream string // host:port
	Rcpts    int    // recipients concerned
	Err      *relay.Error
}

// Observer receives the scheduler's events (metrics). Calls come from the
// scheduler goroutine, one at a time, in order; Observe must not block.
type Observer interface {
	Observe(Event)
}

// job is one batch for a worker.
type job struct {
	ids []string
	// skip holds the upstreams not to use: their breaker is open, or
	// another job is probing them.
	skip map[string]bool
	// probes are the upstreams this job may use although they failed
	// lately (half-open).
	probes []string
	// down holds the last failure of each upstream in skip (for the
	// messages handed over while all their upstreams are down: swept).
	down  map[string]*relay.Error
	swept map[string]bool
	// hint is the breaker's backoff if this job's upstreams fail: the
	// next attempt recorded for messages whose upstreams were all down.
	hint time.Duration
	// strikes holds the strikes of the job's messages that have any
	// (sched.strikes), so that the next attempt a worker records for a
	// message whose upstreams were all down is the one apply gives it.
	strikes map[string]int
	set     Settings
	gen     int
}

// msgResult is what became of one message of a job.
type msgResult struct {
	id       string
	deferred bool      // deferred (else incoming, or gone)
	next     time.Time // when deferred: the next attempt
	waiting  bool      // deferred because every upstream was down
	// lost: deferred by the retry schedule after its connection was
	// lost during its data (relay.LostInData); also due when an
	// upstream comes back, unless its previous attempt ended so too.
	lost  bool
	gone  bool     // left the queue (done, failed, quarantined, deleted)
	route []string // candidate addresses, when known
}

// jobResult is a worker's report on a job.
type jobResult struct {
	job    *job
	msgs   []msgResult
	health []healthReport
	events []Event
}

// Run delivers until ctx is done: Concurrency workers (fixed for the
// life of Run) take messages as they become due — at start, on Kick, when
// the next deferred message's time comes and when an upstream's breaker
// expires — so a session stuck on one message never holds up the others.
// sendCtx bounds the deliveries in flight (cancel it to abort them). After
// ctx is done (or Stop) no message is started; Run returns when the
// workers have finished theirs.
func (q *Queue) Run(ctx, sendCtx context.Context) error {
	if q.deferred == nil {
		if err := q.Load(); err != nil {
			return err
		}
	}
	q.loop(ctx, sendCtx)
	return nil
}

// idleHangup is how long a Run worker keeps its session open without work.
const idleHangup = 2 * time.Second

// loop is the scheduler.
func (q *Queue) loop(ctx, sendCtx context.Context) {
	q.runMu.Lock()
	defer q.runMu.Unlock()
	set, gen := q.settingsGen()
	n := max(set.Concurrency, 1)
	jobs := make(chan *job)
	results := make(chan *jobResult, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.work(sendCtx, jobs, results)
		}()
	}
	busy, size := 0, 1
	var pending []string
	var wake time.Time
	relist, stopping := true, false
	var seen uint64 // the Kick count the last listing covers
	for {
		if !stopping && (ctx.Err() != nil || q.stopped()) {
			stopping = true
		}
		if q.resetHealth.Swap(false) {
			// A flush: the operator says the upstreams are worth
			// trying now. An upstream that has refused our login
			// again and again is tried once now (half-open) and keeps
			// its count: a refusal goes back to the long backoff
			// instead of earning a second try a second later with the
			// same password (see backoffAfter).
			now := q.now()
			for k, b := range q.sched.health {
				if b.fails > 1 && refusedLogin(b.last) {
					if !b.probing {
						b.until = now
					}
					continue
				}
				delete(q.sched.health, k)
			}
		}
		q.dropForgotten()
		set, gen = q.settingsGen()
		q.adopt(set.Upstreams)
		if !stopping {
			if relist && len(pending) == 0 {
				seen = q.kicks.Load()
				pending, wake = q.due()
				size = batchSize(len(pending), n)
				relist = false
			}
			for busy < n && len(pending) > 0 {
				var j *job
				var w time.Time
				j, pending, w = q.plan(pending, size, set, gen)
				wake = earliest(wake, w)
				if j == nil {
					break
				}
				jobs <- j // a worker is free: busy < n
				busy++
			}
		}
		if busy == 0 && stopping {
			break
		}
		if busy == 0 && len(pending) == 0 && q.onIdle != nil {
			q.onIdle(seen, q.nextAttempt())
		}
		var timer *time.Timer
		var tc <-chan time.Time
		if !stopping && len(pending) == 0 && !wake.IsZero() {
			timer = time.NewTimer(max(wake.Sub(q.now()), 0))
			tc = timer.C
		}
		kick := q.kick
		var done, stop <-chan struct{}
		if !stopping {
			done, stop = ctx.Done(), q.stop
		}
		select {
		case r := <-results:
			busy--
			q.apply(r)
			// The outcome may have set a new next-attempt time that the
			// timer, computed before, does not know: look again.
			relist = true
		case <-kick:
			relist = true
		case <-tc:
			relist = true
		case <-done:
			stopping = true
		case <-stop:
			stopping = true
		}
		if timer != nil {
			timer.Stop()
		}
	}
	close(jobs)
	wg.Wait()
}

// nextAttempt is what onIdle reports: the earliest time a deferred message
// is due — for one already due but held by open breakers, when the first
// of them expires; for one due and free to go, now.
func (q *Queue) nextAttempt() time.Time {
	ids, next := q.due()
	now := q.now()
	set, _ := q.settingsGen()
	skip, _ := q.breakers(now)
	for _, id := range ids {
		q.mu.Lock()
		_, deferred := q.deferred[id]
		q.mu.Unlock()
		if !deferred {
			continue
		}
		if skip == nil {
			return now
		}
		if w, blocked := q.blocked(q.candidates(id, set), skip); blocked && !w.IsZero() {
			next = earliest(next, w)
		} else {
			next = now
		}
	}
	return next
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (q *Queue) settingsGen() (Settings, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.set, q.gen
}

// batchSize is how many of n due messages a worker takes at once out of
// workers: enough to share one Sync of attempt records (see
// deliverBatch), few enough that every worker gets some.
func batchSize(n, workers int) int {
	return min(max((n+workers-1)/max(workers, 1), 1), maxBatch)
}

// due returns the messages to try now that are not being delivered:
// incoming in arrival order, then the deferred ones whose time has come;
// and the earliest attempt time of the other deferred messages (zero if
// none).
func (q *Queue) due() ([]string, time.Time) {
	ids, err := q.sp.List(spool.Incoming)
	if err != nil {
		q.log.Error("cannot list incoming", err)
	}
	now := q.now()
	var next time.Time
	inflight := q.sched.inflight
	q.mu.Lock()
	in := ids[:0]
	for _, id := range ids {
		if !inflight[id] && (q.Holds == nil || !q.Holds(id)) {
			in = append(in, id)
		}
	}
	var ds []string
	for id, t := range q.deferred {
		if inflight[id] {
			continue
		}
		if !t.After(now) {
			ds = append(ds, id)
		} else {
			next = earliest(next, t)
		}
	}
	q.mu.Unlock()
	sort.Strings(ds)
	return append(in, ds...), next
}

// plan takes the next job from pending (due messages): up to size of
// them that are not in flight and have an upstream whose breaker lets it
// be tried. Messages whose upstreams are all open are dropped from
// pending (they come back at the next listing); wake is the earliest
// time one of their breakers expires. A message whose first usable
// upstream is half-open (its backoff over) goes alone, as that upstream's
// probe. j is nil when nothing can go.
func (q *Queue) plan(pending []string, size int, set Settings, gen int) (j *job, rest []string, wake time.Time) {
	s := q.sched
	now := q.now()
	skip, probes := q.breakers(now)
	var batch []string
	var swept map[string]bool
	probe := ""
	for len(pending) > 0 && len(batch) < size {
		id := pending[0]
		if s.inflight[id] {
			pending = pending[1:]
			continue
		}
		var cands []string
		if skip != nil || len(probes) > 0 {
			cands = q.candidates(id, set)
		}
		if w, blocked := q.blocked(cands, skip); blocked {
			pending = pending[1:]
			if q.sweep(id, set, now, q.bounceable(cands)) {
				// Its upstreams are down, but its lifetime is over or
				// its delay notice is due: the worker settles that
				// without dialing (relay.Error of the breaker).
				batch = append(batch, id)
				if swept == nil {
					swept = map[string]bool{}
				}
				swept[id] = true
				continue
			}
			wake = earliest(wake, w)
			continue
		}
		if first := firstFree(cands, skip); first != "" && contains(probes, first) {
			if len(batch) > 0 {
				break // it goes alone, in the next job
			}
			probe, size = first, 1
		}
		batch = append(batch, id)
		pending = pending[1:]
	}
	if len(batch) == 0 {
		return nil, pending, wake
	}
	j = &job{ids: batch, skip: skip, swept: swept, set: set, gen: gen, hint: MinBackoff}
	for k := range skip {
		if b := s.health[k]; b != nil && b.last != nil {
			if j.down == nil {
				j.down = map[string]*relay.Error{}
			}
			j.down[k] = b.last
		}
	}
	if probe != "" {
		b := s.health[probe]
		b.probing = true
		j.probes = []string{probe}
		j.hint = max(j.hint, backoff(b.since, now))
	}
	q.mu.Lock()
	for _, id := range batch {
		s.inflight[id] = true
		delete(q.deferred, id)
		if k := s.strikes[id]; k > 0 {
			if j.strikes == nil {
				j.strikes = map[string]int{}
			}
			j.strikes[id] = k
		}
	}
	q.mu.Unlock()
	return j, pending, wake
}

// sweep reports whether id, held by open breakers, should be handed to a
// worker all the same: its lifetime is over and it may be bounced (at most
// every MaxBackoff, should the worker not find it expired) or its delay
// notice is due (once). The message's arrival is the time its queue ID
// encodes. Without this a message that no probe happens to take would
// outlive its lifetime, and get no delay notice, for as long as the
// upstream stays down.
func (q *Queue) sweep(id string, set Settings, now time.Time, bounceable bool) bool {
	at, ok := spool.IDTime(id)
	if !ok {
		return false
	}
	age := now.Sub(at)
	st := q.sched.swept[id]
	if st == nil {
		st = &sweepState{}
	}
	switch {
	case bounceable && set.Lifetime > 0 && age >= set.Lifetime && now.Sub(st.at) >= MaxBackoff:
		st.at = now
	case set.DelayNotice > 0 && age >= set.DelayNotice && !st.notice:
		st.notice = true
	default:
		return false
	}
	q.sched.swept[id] = st
	return true
}

// bounceable reports whether a message whose upstreams (cands) are all
// held may be bounced at the end of its lifetime: not when every one of
// them is held for an authentication failure, which never bounces mail
// (a rotated password must not bounce the queue).
func (q *Queue) bounceable(cands []string) bool {
	for _, c := range cands {
		if b := q.sched.health[c]; b == nil || b.last == nil || b.last.Class != relay.AuthFailure {
			return true
		}
	}
	return false
}

// firstFree returns the first of cands not in skip ("" if none).
func firstFree(cands []string, skip map[string]bool) string {
	for _, c := range cands {
		if !skip[c] {
			return c
		}
	}
	return ""
}

// breakers returns the upstreams not to use now (breaker open, or being
// probed) and those to probe (half-open: the backoff is over).
func (q *Queue) breakers(now time.Time) (skip map[string]bool, probes []string) {
	for addr, b := range q.sched.health {
		switch {
		case b.probing || now.Before(b.until):
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[addr] = true
		default:
			probes = append(probes, addr)
		}
	}
	sort.Strings(probes)
	return skip, probes
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// candidates returns the candidate upstream addresses of message id, or
// nil when they are not known without reading the message (and its
// reading failed).
func (q *Queue) candidates(id string, set Settings) []string {
	ups := set.Upstreams
	if ups == nil {
		return []string{}
	}
	if ups.Single() {
		return ups.one.keys
	}
	if c, ok := q.sched.routes[id]; ok {
		return c
	}
	f, m, err := q.sp.OpenMessage(id)
	if err != nil {
		return nil
	}
	f.Close()
	c := ups.routeOf(m).keys
	q.sched.routes[id] = c
	return c
}

// blocked reports whether every one of cands (a message's candidate
// upstreams) is in skip, and then the earliest time one of their breakers
// expires (zero if all are being probed). Unknown candidates (nil) are
// never blocked: a worker finds out.
func (q *Queue) blocked(cands []string, skip map[string]bool) (time.Time, bool) {
	if skip == nil || len(cands) == 0 {
		return time.Time{}, false
	}
	var wake time.Time
	for _, a := range cands {
		if !skip[a] {
			return time.Time{}, false
		}
		if b := q.sched.health[a]; b != nil && !b.probing {
			wake = earliest(wake, b.until)
		}
	}
	return wake, true
}

// upDefs returns what each upstream of u is, by breaker key (upKey): its
// address, TLS settings and credentials (sessionKey).
func upDefs(u *Upstreams) map[string]string {
	defs := map[string]string{}
	if u != nil {
		for _, up := range u.list {
			defs[upKey(up)] += sessionKey(up) + ","
		}
	}
	return defs
}

// adopt makes u (the configuration in force, replaced by a reload) the one
// the scheduler's state is about. A breaker belongs to an upstream as it
// was configured: when a reload changes an upstream (its address, its
// credentials — a rotated password fixed) or removes it, its breaker is
// forgotten (its outage is kept in fixed, closed, under the upstream that
// replaced it, for the upstream-up line) and the messages waiting for the upstreams are due at once,
// without their strikes, instead of waiting up to MaxBackoff for what the
// old definition earned; the routes learned under the old [[route]]s are
// forgotten too.
func (q *Queue) adopt(u *Upstreams) {
	s := q.sched
	if u == s.ups {
		return
	}
	first, old, oldDefs := s.ups == nil, s.ups, s.defs
	defs := upDefs(u)
	s.ups, s.defs = u, defs
	clear(s.routes)
	if first {
		return
	}
	for key := range s.fixed {
		if d, ok := defs[key]; !ok || d != oldDefs[key] {
			delete(s.fixed, key)
		}
	}
	changed := false
	for key, b := range s.health {
		if d, ok := defs[key]; !ok || d != oldDefs[key] {
			delete(s.health, key)
			changed = true
			if nk := successor(old, u, key, oldDefs); nk != "" {
				if s.fixed == nil {
					s.fixed = map[string]*breaker{}
				}
				s.fixed[nk] = b
			}
		}
	}
	if !changed {
		return
	}
	q.mu.Lock()
	for id := range s.waiting {
		if _, ok := q.deferred[id]; ok {
			q.deferred[id] = time.Time{}
		}
		delete(s.strikes, id)
	}
	q.mu.Unlock()
	clear(s.waiting)
}

// successor returns the key, in the configuration new, of the upstream
// that replaced the one of key in old (a reload changed it): the same key
// (a named upstream, its settings changed), else the upstream at the same
// place in the list whose key is new (an unnamed one: its key is its
// address and account, which the fix changed). "" when none did (it was
// removed, or what is in its place was there before).
func successor(old, new *Upstreams, key string, oldDefs map[string]string) string {
	if old == nil || new == nil {
		return ""
	}
	for _, up := range new.list {
		if upKey(up) == key {
			return key
		}
	}
	for i, up := range old.list {
		if upKey(up) != key || i >= len(new.list) {
			continue
		}
		if nk := upKey(new.list[i]); oldDefs[nk] == "" {
			return nk
		}
	}
	return ""
}

// apply takes in a worker's report: health first (breakers), then each
// message's new place in the due index, then the observer's events.
func (q *Queue) apply(r *jobResult) {
	s := q.sched
	now := q.now()
	var events []Event
	var jobDefs map[string]string
	if u := r.job.set.Upstreams; u != s.ups && s.ups != nil {
		jobDefs = upDefs(u)
	}
	for _, h := range r.health {
		if jobDefs != nil && jobDefs[h.key] != s.defs[h.key] {
			// Learned with a definition a reload has replaced since:
			// not about the upstream as configured now.
			continue
		}
		b := s.health[h.key]
		name := h.name
		if f := s.fixed[h.key]; f != nil {
			delete(s.fixed, h.key)
			if h.err == nil && b == nil {
				b = f
				s.health[h.key] = b
			}
		}
		if h.err == nil {
			if b != nil {
				delete(s.health, h.key)
				q.log.UpstreamUp(h.addr, name, now.Sub(b.since).Round(time.Millisecond), b.fails)
				events = append(events, Event{Kind: EventUpstreamUp, Upstream: h.addr})
				// Everything that waited for an upstream is due now
				// (or when its strikes allow).
				q.mu.Lock()
				for id, notBefore := range s.waiting {
					if _, ok := q.deferred[id]; ok {
						q.deferred[id] = notBefore
					}
				}
				q.mu.Unlock()
				clear(s.waiting)
			}
			continue
		}
		if b == nil {
			b = &breaker{since: now}
			s.health[h.key] = b
		}
		first := b.fails == 0
		b.fails++
		b.probing = false
		d := backoffAfter(h.err, b.fails, b.since, now)
		b.until = now.Add(d)
		b.reason, b.last = errReply(h.err), h.err
		if first {
			q.log.UpstreamDown(h.addr, name, d, b.reason, maillog.Why{Cause: h.err.Cause, Fix: h.err.Fix})
			events = append(events, Event{Kind: EventUpstreamDown, Upstream: h.addr, Err: h.err})
		}
	}
	for _, addr := range r.job.probes {
		if b := s.health[addr]; b != nil {
			b.probing = false
		}
	}
	q.mu.Lock()
	for _, id := range r.job.ids {
		delete(s.inflight, id)
	}
	for _, m := range r.msgs {
		if m.route != nil {
			s.routes[m.id] = m.route
		}
		switch {
		case m.gone:
			s.forget(m.id)
			delete(q.deferred, m.id)
		case m.deferred && m.lost && s.lost[m.id]:
			// Lost in the data twice in a row: the retry schedule only.
			delete(s.waiting, m.id)
			delete(s.strikes, m.id)
			q.deferred[m.id] = m.next
		case m.deferred && (m.waiting || m.lost):
			// Only losses in a row count: an attempt that found every
			// upstream down ends the run.
			if m.lost {
				s.lost[m.id] = true
			} else {
				delete(s.lost, m.id)
			}
			var notBefore time.Time
			if !r.job.swept[m.id] {
				s.strikes[m.id]++
			}
			if k := s.strikes[m.id]; k > 0 {
				notBefore = now.Add(strikeWait(k))
			}
			s.waiting[m.id] = notBefore
			q.deferred[m.id] = latest(m.next, notBefore)
		case m.deferred:
			delete(s.waiting, m.id)
			delete(s.strikes, m.id)
			delete(s.lost, m.id)
			q.deferred[m.id] = m.next
		}
	}
	q.mu.Unlock()
	if q.Observer != nil {
		for _, ev := range append(events, r.events...) {
			q.Observer.Observe(ev)
		}
	}
}

// work is one worker: it takes jobs until jobs is closed, keeping its
// session between jobs and closing it after idleHangup without work.
func (q *Queue) work(ctx context.Context, jobs <-chan *job, results chan<- *jobResult) {
	w := &worker{q: q}
	defer w.link.close()
	for {
		var j *job
		var ok bool
		idle := time.NewTimer(idleHangup)
		select {
		case j, ok = <-jobs:
		case <-idle.C:
			w.link.close()
			j, ok = <-jobs
		}
		idle.Stop()
		if !ok {
			return
		}
		if w.link.ups != j.set.Upstreams || w.gen != j.gen {
			w.link.close()
			w.link = link{ups: j.set.Upstreams, log: q.log}
		}
		w.set, w.gen, w.job = j.set, j.gen, j
		w.res = &jobResult{job: j}
		w.link.down, w.link.downBy, w.link.health, w.link.jobDown = nil, nil, nil, j.down
		w.deliverBatch(ctx, j.ids)
		w.res.health = w.link.health
		results <- w.res
	}
}

// strikeWait is how long a message with k strikes (k > 0) waits before it
// may go again: 1 s, 2 s, 4 s ... at most MaxBackoff.
func strikeWait(k int) time.Duration {
	return min(MinBackoff<<min(k-1, 6), MaxBackoff)
}

// waitingNext is the next attempt of message id of job j whose upstreams
// were all down at now: the later of the breaker's backoff (hint) and the
// message's own wait after this try (the strike apply adds, unless the
// job swept it), as apply makes it due.
func (j *job) waitingNext(id string, now time.Time) time.Time {
	k := j.strikes[id]
	if !j.swept[id] {
		k++
	}
	wait := j.hint
	if k > 0 {
		wait = max(wait, strikeWait(k))
	}
	return now.Add(wait)
}
