// Package queue is relayd's scheduler: it takes messages from the spool's
// incoming and deferred states, delivers them through upstream sessions,
// and moves each to its next state. docs/ARCHITECTURE.md ("The delivery
// engine") draws the scheduler, the upstream component and the state
// machine together.
//
// # Parts
//
//   - the scheduler (scheduler.go): one goroutine owning the due index,
//     the in-flight set and each upstream's circuit breaker; it hands
//     batches to workers and applies their reports;
//   - the workers (worker.go): claim, record the attempt, send, and apply
//     each recipient's outcome to the spool;
//   - the upstream component (upstream.go): which upstreams may carry a
//     message and in which order, failover, session reuse and redial.
//
// # States and transitions
//
// The states are those of the spool's queue store (see package spool: a
// state journal plus message segments, no file or directory per state):
// incoming → active → deferred | done | failed; held and quarantine on the
// side. docs/ARCHITECTURE.md ("The delivery engine") draws the state
// machine; it is the one description of it. The queued message is
// immutable; the delivery record (attempts, first/last/next attempt, last
// reply, recipients sent and failed) is replaced whole by a journal line
// (spool.Queue.WriteState).
//
// # One attempt
//
// A worker claims a batch of due messages (→ active) and records each
// attempt — attempts+1 and the next attempt time — in its delivery
// record, then makes all of them durable with ONE spool.Queue.Sync (group
// commit), BEFORE sending any of them on its session, so a crash
// mid-delivery is retried on its normal schedule, never in a hot loop
// (spool.Queue.Recover at start puts active back into deferred or
// incoming). It sends to the recipients not yet done, and handles each
// recipient's outcome:
//
//   - accepted: recorded in the delivery record, never sent again;
//   - permanent refusal (5xx, or a message the upstream can never take):
//     bounced at once;
//   - temporary (4xx, network, TLS, timeouts, anything unknown): retried
//     after the [queue] retry schedule (then every last interval) until
//     [queue] lifetime after arrival, when it is bounced;
//   - every upstream down (the upstreams' trouble, not the message's:
//     relay.Error.UpstreamTrouble on each candidate): the attempt is not
//     charged, and the message waits for an upstream's circuit breaker
//     (seconds), not the retry schedule — unless an upstream answered
//     the message's own MAIL, RCPT or DATA with a 4xx (not 421), or
//     after its data (relay.RefusedMessage), which is an attempt, charged and retried
//     on the schedule;
//   - authentication failure: temporary but loud (event=auth-failed with
//     the fix on every attempt) and never bounced, so a rotated password
//     does not bounce the whole queue.
//
// A bounce is an RFC 3464 DSN (multipart/report: an explanation with the
// known cause and fix, message/delivery-status, the original headers)
// queued as a new message from the null sender "<>" to the envelope
// sender. A bounce is never bounced: a message from "<>" that fails is
// logged and kept in the failed state. Reject queues the same kind of DSN for a
// message pickup refused before it entered the queue (no upstream named).
//
// Every refusal's log line carries the upstream's reply and, when the
// cause is known, cause= and fix= in plain words; the DSN's explanation
// part says the same.
//
// # The durability promise
//
// A message leaves the spool only after the upstream accepted it for every
// recipient (or it was bounced): at-least-once. A crash between the
// upstream's acceptance and Done delivers it again: at worst one duplicate
// per crash.
//
// Time comes from an injected clock and scheduling from explicit Kick
// calls, so tests drive retries and lifetimes without sleeping.
//
// Its Go API is not stable.
package queue

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Settings are the parts of the configuration the queue uses; they can be
// replaced at run time (SIGHUP).
type Settings struct {
	Retry       []time.Duration
	Lifetime    time.Duration
	Concurrency int
	// DelayNotice is how long after arrival a message still deferred
	// earns its sender one "delayed" DSN (noteDelay); 0 sends none.
	DelayNotice time.Duration
	Hostname    string
	// Aliases expands the recipient of a notice (a bounce, a delay
	// notice: the message's envelope sender) as pickup expands a
	// message's (pickup.Rewriter.Recipients): root@hostname, the sender
	// of cron's, sudo's and atd's mail, goes to the admin through
	// [aliases], not to this send-only host. nil leaves it as it is.
	Aliases func(rcpts []string) []string
	// Upstreams chooses the upstreams of each message and opens the
	// sessions (the upstream component).
	Upstreams *Upstreams
}

// Queue schedules and runs deliveries.
type Queue struct {
	sp  *spool.Queue
	log *maillog.Logger
	now func() time.Time

	mu  sync.Mutex
	set Settings
	gen int // bumped by SetSettings
	// deferred is the due index: the next attempt of each deferred
	// message (incoming is listed from the store). Only the scheduler
	// changes it, besides Load and the control verbs (Flush, forget).
	deferred map[string]time.Time
	// forgotten holds the IDs the control verbs took out of the queue's
	// hands (forget), for the loop to drop its state of them
	// (dropForgotten).
	forgotten []string
	// unsaved holds the delivery records that could not be written (a
	// full spool). They win over the store's records until a
	// write succeeds, so a recipient the upstream accepted is never sent
	// the message again because the spool was full.
	unsaved map[string]*spool.Delivery
	runMu   sync.Mutex // one scheduler loop at a time
	// sched is the scheduler's own state (in-flight set, per-upstream
	// health, routes); only the loop holding runMu touches it.
	sched   *sched
	decodes atomic.Int64 // messages decoded for listings (tests)
	// names is the account name of each UID AccountOf was asked about.
	nameMu sync.Mutex
	names  map[int]string
	kick   chan struct{}
	kicks  atomic.Uint64 // Kick calls so far
	stop   chan struct{} // closed by Stop: no new deliveries
	// onIdle, when set (tests, before Run), is called by the scheduler
	// each time it has nothing left to start or wait for: kicks is the
	// Kick count its last look at the queue covers, next the time of the
	// next deferred attempt (zero if none). Tests drive Run with the
	// injected clock through it.
	onIdle func(kicks uint64, next time.Time)
	// Frozen, when set, reports whether the account with a UID is frozen
	// (relayd queue freeze): "delete --user --confirm N" then deletes
	// the N oldest when newer ones arrived since they were counted.
	Frozen func(uid int) bool
	// Holds, when set (before Run), names incoming messages not to
	// deliver yet: pickup's (pickup.Pickup.Holds) whose maildrop file is
	// not removed yet.
	Holds func(id string) bool
	// Observer, when set (before Run), receives the scheduler's events
	// (metrics).
	Observer Observer
	stopOnce sync.Once
	// resetHealth asks the scheduler to close the upstreams' breakers
	// (Flush; see the scheduler's loop for a refused login's).
	resetHealth atomic.Bool
}

// New returns a Queue over the open spool queue sp. now is the clock
// (time.Now when nil).
func New(sp *spool.Queue, log *maillog.Logger, now func() time.Time, set Settings) *Queue {
	if now == nil {
		now = time.Now
	}
	return &Queue{sp: sp, log: log, now: now, set: set, sched: newSched(), unsaved: map[string]*spool.Delivery{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// readState returns the delivery record of id (in state): the one kept in
// memory when its last write failed, else the store's.
func (q *Queue) readState(state, id string) (*spool.Delivery, error) {
	q.mu.Lock()
	u := q.unsaved[id]
	q.mu.Unlock()
	if u != nil {
		return cloneDelivery(u), nil
	}
	return q.sp.ReadState(state, id)
}

// recordState writes the delivery record of id in state, durable after
// the next q.sp.Sync (a batch's group commit, or the Sync of the
// transition that follows the record). When the write fails, the record
// is kept in memory (readState returns it) and written at the next
// change, so what it says — recipients already sent above all — is not
// forgotten while the process lives; but not when the message is no
// longer in state (spool.ErrNotFound): d is then a record it has left.
func (q *Queue) recordState(state, id string, d *spool.Delivery) error {
	err := q.sp.WriteStateNoSync(state, id, d)
	if errors.Is(err, spool.ErrNotFound) {
		// The message is no longer in state (taken by a worker, gone):
		// d is not its record, and must not win over the one it has.
		return err
	}
	q.mu.Lock()
	if err != nil {
		q.unsaved[id] = cloneDelivery(d)
	} else {
		delete(q.unsaved, id)
	}
	q.mu.Unlock()
	return err
}

// dropUnsaved forgets the in-memory record of a message that is gone.
func (q *Queue) dropUnsaved(id string) {
	q.mu.Lock()
	delete(q.unsaved, id)
	q.mu.Unlock()
}

func cloneDelivery(d *spool.Delivery) *spool.Delivery {
	c := *d
	c.Sent = append([]string(nil), d.Sent...)
	c.Failed = append([]spool.RcptFailure(nil), d.Failed...)
	c.Bounces = append([]string(nil), d.Bounces...)
	return &c
}

// SetSettings replaces the settings (config reload); running deliveries
// finish with the old ones.
func (q *Queue) SetSettings(s Settings) {
	q.mu.Lock()
	q.set = s
	q.gen++
	q.mu.Unlock()
}

func (q *Queue) settings() Settings {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.set
}

// Kick asks Run for a pass now (new mail, flush). It never blocks.
func (q *Queue) Kick() {
	q.kicks.Add(1)
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Stop makes workers take no new message; deliveries in flight go on
// until their context ends.
func (q *Queue) Stop() { q.stopOnce.Do(func() { close(q.stop) }) }

func (q *Queue) stopped() bool {
	select {
	case <-q.stop:
		return true
	default:
		return false
	}
}

// Load reads the deferred states' next attempt times into memory. Call it
// once after spool recovery, before Run.
func (q *Queue) Load() error {
	ids, err := q.sp.List(spool.Deferred)
	if err != nil {
		return err
	}
	m := map[string]time.Time{}
	for _, id := range ids {
		d, err := q.sp.ReadState(spool.Deferred, id)
		if err != nil {
			q.log.MessageError(id, "unreadable delivery record; retrying now", err)
			m[id] = time.Time{}
			continue
		}
		m[id] = d.Next
	}
	q.mu.Lock()
	q.deferred = m
	q.mu.Unlock()
	return nil
}

// Flush makes every deferred message due now, closes the upstreams'
// circuit breakers (but one that refused our login again and again only
// lets one try through: see the scheduler's resetHealth), and kicks the
// queue.
func (q *Queue) Flush() int {
	q.mu.Lock()
	n := len(q.deferred)
	for id := range q.deferred {
		q.deferred[id] = time.Time{}
	}
	q.mu.Unlock()
	q.resetHealth.Store(true)
	q.Kick()
	return n
}
