// Package queue is relayd's scheduler: it takes messages from the spool's
// incoming/ and deferred/ states, delivers them through upstream sessions,
// and moves each to its next state.
//
// # States and transitions
//
// The states are directories of the spool (see package spool): incoming →
// active → deferred | done | failed; held and quarantine on the side. Each
// transition is one rename (spool.Queue.Claim, Defer, Fail, Done, Hold,
// Release, QuarantineMessage), fsync'd where durability needs it. The message file is
// immutable; the delivery record (attempts, first/last/next attempt, last
// reply, recipients sent and failed) is a small state file rewritten
// atomically.
//
// # One attempt
//
// A worker claims a batch of due messages (→ active) and records each
// attempt — attempts+1 and the next attempt time — in its state file, then
// makes all of them durable with ONE sync (group commit), BEFORE sending
// any of them on its session, so a crash
// mid-delivery is retried on its normal schedule, never in a hot loop
// (startup recovery puts active/ back into deferred/ or incoming/). It
// sends to the recipients not yet done, and handles each recipient's
// outcome:
//
//   - accepted: recorded in the state file, never sent again;
//   - permanent refusal (5xx, or a message the upstream can never take):
//     bounced at once;
//   - temporary (4xx, network, TLS, timeouts, anything unknown): retried
//     after the [queue] retry schedule (then every last interval) until
//     [queue] lifetime after arrival, when it is bounced;
//   - authentication failure: temporary but loud (event=auth-failed with
//     the fix on every attempt) and never bounced, so a rotated password
//     does not bounce the whole queue.
//
// A bounce is an RFC 3464 DSN (multipart/report: an explanation with the
// known cause and fix, message/delivery-status, the original headers)
// queued as a new message from the null sender "<>" to the envelope
// sender. A bounce is never bounced: a message from "<>" that fails is
// logged and kept in failed/. Reject queues the same kind of DSN for a
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
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Session is an open, authenticated connection to an upstream
// (*relay.Session in production).
type Session interface {
	Send(ctx context.Context, m *relay.Message) *relay.Result
	Alive() bool
	Upstream() string
	Close() error
}

// Dialer opens a session for mail from sender (the null sender is "").
// The error should be a *relay.Error, or a *DialError naming the upstream
// (anything else counts as Temporary).
type Dialer func(ctx context.Context, sender string) (Session, error)

// DialError is a failure to open a session with the upstream tried last.
type DialError struct {
	Upstream string // host:port
	Err      *relay.Error
}

func (e *DialError) Error() string { return e.Upstream + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

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
	Dial        Dialer
	// RouteKey groups senders that may share a session (those with the
	// same upstream candidates); nil means all senders share.
	RouteKey func(sender string) string
}

// Queue schedules and runs deliveries.
type Queue struct {
	sp  *spool.Queue
	log *maillog.Logger
	now func() time.Time

	mu       sync.Mutex
	set      Settings
	gen      int                  // bumped by SetSettings
	deferred map[string]time.Time // next attempt of each deferred message
	inflight map[string]bool      // handed to a worker, not finished
	// unsaved holds the delivery records whose state file could not be
	// written (a full spool). They win over the state files until a
	// write succeeds, so a recipient the upstream accepted is never sent
	// the message again because the spool was full.
	unsaved map[string]*spool.Delivery
	runMu   sync.Mutex // one RunOnce at a time
	// uids remembers each listed message's UID for mailq (see entries).
	uidMu   sync.Mutex
	uids    map[string]int
	decodes atomic.Int64 // messages decoded for listings (tests)
	kick    chan struct{}
	stop    chan struct{} // closed by Stop: no new deliveries
	// Holds, when set (before Run), names incoming messages not to
	// deliver yet: pickup's (pickup.Pickup.Holds) whose maildrop file is
	// not removed yet.
	Holds    func(id string) bool
	stopOnce sync.Once
}

// New returns a Queue over the open spool queue sp. now is the clock
// (time.Now when nil).
func New(sp *spool.Queue, log *maillog.Logger, now func() time.Time, set Settings) *Queue {
	if now == nil {
		now = time.Now
	}
	return &Queue{sp: sp, log: log, now: now, set: set, inflight: map[string]bool{}, unsaved: map[string]*spool.Delivery{}, uids: map[string]int{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
}

// readState returns the delivery record of id (in state): the one kept in
// memory when its last write failed, else the state file's.
func (q *Queue) readState(state, id string) (*spool.Delivery, error) {
	q.mu.Lock()
	u := q.unsaved[id]
	q.mu.Unlock()
	if u != nil {
		return cloneDelivery(u), nil
	}
	return q.sp.ReadState(state, id)
}

// writeState writes the delivery record of id in state. When the write
// fails, the record is kept in memory (readState returns it) and written
// at the next change, so what it says — recipients already sent above all
// — is not forgotten while the process lives.
func (q *Queue) writeState(state, id string, d *spool.Delivery) error {
	return q.recordState(true, state, id, d)
}

// recordState is writeState; with sync false the record is durable only
// after the next q.sp.Sync (a batch's group commit).
func (q *Queue) recordState(sync bool, state, id string, d *spool.Delivery) error {
	write := q.sp.WriteState
	if !sync {
		write = q.sp.WriteStateNoSync
		if state == spool.Active && d.Attempts == 1 && len(d.Sent) == 0 && len(d.Failed) == 0 && len(d.Bounces) == 0 {
			// A first attempt: the record it replaces is empty
			// (pickup's), written in place (see the spool function).
			write = q.sp.WriteFirstStateNoSync
		}
	}
	err := write(state, id, d)
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
// once after spool recovery, before Run or RunOnce.
func (q *Queue) Load() error {
	ids, err := q.sp.List(spool.Deferred)
	if err != nil {
		return err
	}
	m := map[string]time.Time{}
	for _, id := range ids {
		d, err := q.sp.ReadState(spool.Deferred, id)
		if err != nil {
			q.log.Event("error", "id", id, "reason", "unreadable state file; retrying now", "error", err.Error())
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

// Flush makes every deferred message due now and kicks the queue.
func (q *Queue) Flush() int {
	q.mu.Lock()
	n := len(q.deferred)
	for id := range q.deferred {
		q.deferred[id] = time.Time{}
	}
	q.mu.Unlock()
	q.Kick()
	return n
}

// Run delivers until ctx is done: Concurrency workers (fixed for the
// life of Run) take messages as they become due — at start, on Kick, and
// when the next deferred message's time comes — so a session stuck on one
// message never holds up the others. sendCtx bounds the deliveries in
// flight (cancel it to abort them). After ctx is done (or Stop) no message
// is started; Run returns when the workers have finished theirs.
func (q *Queue) Run(ctx, sendCtx context.Context) error {
	if q.deferred == nil {
		if err := q.Load(); err != nil {
			return err
		}
	}
	n := max(q.settings().Concurrency, 1)
	work := make(chan []string)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.workLoop(sendCtx, work)
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	for {
		ids, next := q.due()
		size := batchSize(len(ids), n)
		for len(ids) > 0 {
			var batch []string
			batch, ids = q.takeBatch(ids, size)
			if len(batch) == 0 {
				break
			}
			select {
			case work <- batch:
			case <-ctx.Done():
				q.endAll(batch)
				return nil
			case <-q.stop:
				q.endAll(batch)
				return nil
			}
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(max(next.Sub(q.now()), 0))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-q.stop:
		case <-q.kick:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil || q.stopped() {
			return nil
		}
	}
}

// idleHangup is how long a worker keeps its session open without work.
const idleHangup = 2 * time.Second

// workLoop is one of Run's workers. It keeps its session while messages
// keep coming, and hangs up (forgetting failed dials) when idle.
func (q *Queue) workLoop(ctx context.Context, work <-chan []string) {
	w := &worker{q: q}
	defer w.close()
	for {
		var ids []string
		var ok bool
		idle := time.NewTimer(idleHangup)
		select {
		case ids, ok = <-work:
		case <-idle.C:
			w.close()
			w.dialErr = nil
			ids, ok = <-work
		}
		idle.Stop()
		if !ok {
			return
		}
		if gen := q.generation(); w.set.Dial == nil || gen != w.gen {
			w.close()
			w.dialErr = nil
			w.set, w.gen = q.settings(), gen
		}
		w.deliverBatch(ctx, ids, q.end)
		// The outcome may have set a new next-attempt time (a deferral)
		// that Run's timer, computed before, does not know: wake Run so
		// it re-reads the schedule. Without this a deferred message
		// waited for an unrelated kick (found by test/e2e upstream-down).
		q.Kick()
	}
}

// begin marks id as being delivered; false if it already is.
func (q *Queue) begin(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.inflight[id] {
		return false
	}
	q.inflight[id] = true
	return true
}

func (q *Queue) end(id string) {
	q.mu.Lock()
	delete(q.inflight, id)
	q.mu.Unlock()
}

func (q *Queue) endAll(ids []string) {
	for _, id := range ids {
		q.end(id)
	}
}

// batchSize is how many of n due messages a worker takes at once out of
// workers: enough to share one Sync of attempt records (see
// deliverBatch), few enough that every worker gets some.
func batchSize(n, workers int) int {
	return min(max((n+workers-1)/max(workers, 1), 1), maxBatch)
}

// takeBatch marks up to size of ids as being delivered (skipping those
// already in delivery) and returns them with the ids it has not looked at.
func (q *Queue) takeBatch(ids []string, size int) (batch, rest []string) {
	for len(ids) > 0 && len(batch) < size {
		if q.begin(ids[0]) {
			batch = append(batch, ids[0])
		}
		ids = ids[1:]
	}
	return batch, ids
}

func (q *Queue) generation() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.gen
}

// due returns the messages to try now that are not being delivered:
// incoming/ in arrival order, then the deferred ones whose time has come;
// and the earliest attempt time of the other deferred messages (zero if
// none; now if one became due meanwhile).
func (q *Queue) due() ([]string, time.Time) {
	ids, err := q.sp.List(spool.Incoming)
	if err != nil {
		q.log.Event("error", "reason", "cannot list incoming", "error", err.Error())
	}
	now := q.now()
	var next time.Time
	q.mu.Lock()
	in := ids[:0]
	for _, id := range ids {
		if !q.inflight[id] && (q.Holds == nil || !q.Holds(id)) {
			in = append(in, id)
		}
	}
	var ds []string
	for id, t := range q.deferred {
		if q.inflight[id] {
			continue
		}
		if !t.After(now) {
			ds = append(ds, id)
		}
		if next.IsZero() || t.Before(next) {
			next = t
			if next.IsZero() {
				next = now
			}
		}
	}
	q.mu.Unlock()
	sort.Strings(ds)
	return append(in, ds...), next
}

// RunOnce delivers every message that is due now with fresh workers and
// returns when all are done, with the time of the next deferred attempt
// (zero if none). Tests drive the queue with it and an injected clock.
func (q *Queue) RunOnce(ctx context.Context) time.Time {
	q.runMu.Lock()
	defer q.runMu.Unlock()
	if q.deferred == nil {
		if err := q.Load(); err != nil {
			q.log.Event("error", "reason", "cannot load the deferred queue", "error", err.Error())
		}
	}
	ids, _ := q.due()
	if len(ids) > 0 && !q.stopped() {
		set := q.settings()
		n := min(max(set.Concurrency, 1), len(ids))
		ch := make(chan []string)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := &worker{q: q, set: set}
				defer w.close()
				for batch := range ch {
					w.deliverBatch(ctx, batch, q.end)
				}
			}()
		}
		size := batchSize(len(ids), n)
	feed:
		for len(ids) > 0 {
			var batch []string
			batch, ids = q.takeBatch(ids, size)
			if len(batch) == 0 {
				break
			}
			select {
			case ch <- batch:
			case <-q.stop:
				q.endAll(batch)
				break feed
			case <-ctx.Done():
				q.endAll(batch)
				break feed
			}
		}
		close(ch)
		wg.Wait()
	}
	_, next := q.due()
	return next
}

// retryAfter is the wait after the given number of attempts.
func retryAfter(retry []time.Duration, attempts int) time.Duration {
	if len(retry) == 0 {
		return time.Hour
	}
	i := attempts - 1
	if i < 0 {
		i = 0
	}
	if i >= len(retry) {
		i = len(retry) - 1
	}
	return retry[i]
}

// worker is one delivery goroutine with its cached session.
type worker struct {
	q    *Queue
	set  Settings
	gen  int
	sess Session
	key  string
	// dialErr remembers a failed dial per route for the rest of the pass,
	// so a dead upstream costs one connect timeout per worker, not one per
	// message.
	dialErr map[string]*DialError
}

func (w *worker) close() {
	if w.sess != nil {
		w.sess.Close()
		w.sess = nil
	}
}

func (w *worker) session(ctx context.Context, sender string) (Session, *DialError) {
	key := ""
	if w.set.RouteKey != nil {
		key = w.set.RouteKey(sender)
	}
	if e := w.dialErr[key]; e != nil {
		return nil, e
	}
	if w.sess != nil && w.key == key && w.sess.Alive() {
		return w.sess, nil
	}
	w.close()
	if w.set.Dial == nil {
		return nil, &DialError{Err: &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Cause: "no upstream is configured", Fix: "add an [[upstream]] section to the configuration"}}
	}
	s, err := w.set.Dial(ctx, sender)
	if err != nil {
		de := asDialError(err)
		if w.dialErr == nil {
			w.dialErr = map[string]*DialError{}
		}
		w.dialErr[key] = de
		if de.Err.Class == relay.AuthFailure {
			// Loud, once per failed login (not once per message): a
			// rotated password must be noticed, and never bounces mail.
			kv := []any{"upstream", de.Upstream, "reply", errReply(de.Err)}
			kv = appendNonEmpty(kv, "cause", de.Err.Cause, "fix", de.Err.Fix)
			w.q.log.Event("auth-failed", kv...)
		}
		return nil, de
	}
	w.sess, w.key = s, key
	return s, nil
}

func asDialError(err error) *DialError {
	var de *DialError
	if errors.As(err, &de) && de.Err != nil {
		return de
	}
	var re *relay.Error
	if errors.As(err, &re) {
		return &DialError{Err: re}
	}
	return &DialError{Err: &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: err}}
}

// appendNonEmpty appends the key/value pairs whose value is not empty.
func appendNonEmpty(kv []any, pairs ...string) []any {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			kv = append(kv, pairs[i], pairs[i+1])
		}
	}
	return kv
}

// errReply is the reply text (or error) of a failure, for logs and state.
func errReply(e *relay.Error) string {
	if r := e.Reply(); r != "" {
		return r
	}
	if e.Err != nil {
		return e.Err.Error()
	}
	return e.Error()
}

// remaining returns the recipients not yet sent or failed.
func remaining(all []string, d *spool.Delivery) []string {
	done := map[string]bool{}
	for _, r := range d.Sent {
		done[strings.ToLower(r)] = true
	}
	for _, f := range d.Failed {
		done[strings.ToLower(f.Rcpt)] = true
	}
	var out []string
	for _, r := range all {
		if !done[strings.ToLower(r)] {
			out = append(out, r)
		}
	}
	return out
}

// attempt is a message claimed, with its attempt recorded, ready to send.
type attempt struct {
	id    string
	f     *os.File
	m     *spool.Meta
	d     *spool.Delivery
	prev  *spool.Delivery // the record before this attempt (see putBack)
	rcpts []string
}

// maxBatch bounds the messages a worker claims and records at once.
const maxBatch = 64

// deliver delivers one message: its attempt record is fsync'd alone.
func (w *worker) deliver(ctx context.Context, id string) {
	if a := w.prepare(id, true); a != nil {
		w.send(ctx, a)
		a.f.Close()
	}
}

// deliverBatch delivers ids on the worker's session with one group commit
// of their attempt records: each is claimed and its attempt written
// without fsync, then ONE Sync makes every record durable, and only then
// is the first one sent — the attempt is still recorded durably before
// it is sent, so a crash anywhere in the batch retries each of its
// messages on the normal schedule, never in a hot loop. done is called
// for each ID when its delivery is over. After Stop, the messages not yet
// sent go back where they were with the record they had (putBack).
func (w *worker) deliverBatch(ctx context.Context, ids []string, done func(id string)) {
	if len(ids) == 1 {
		w.deliver(ctx, ids[0])
		done(ids[0])
		return
	}
	q := w.q
	var as []*attempt
	for _, id := range ids {
		if a := w.prepare(id, false); a != nil {
			as = append(as, a)
		} else {
			done(id)
		}
	}
	if len(as) == 0 {
		return
	}
	if err := q.sp.Sync(); err != nil {
		if !spool.IsFull(err) {
			for _, a := range as {
				q.notSending(a.id, a.d.Next, err)
				a.f.Close()
				done(a.id)
			}
			return
		}
		q.log.Event("warning", "reason", "spool full: sending without recording the attempts", "n", len(as), "error", err.Error())
	}
	for i, a := range as {
		if q.stopped() {
			for _, b := range as[i:] {
				w.putBack(b)
				b.f.Close()
				done(b.id)
			}
			return
		}
		w.send(ctx, a)
		a.f.Close()
		done(a.id)
	}
}

// putBack returns a message whose attempt was recorded but not made (the
// queue stopped first) to incoming/ or deferred/ with the record it had.
func (w *worker) putBack(a *attempt) {
	q := w.q
	if err := q.writeState(spool.Active, a.id, a.prev); err != nil {
		q.log.Event("error", "id", a.id, "reason", "cannot restore the state file", "error", err.Error())
	}
	attempted := a.prev.Attempts > 0
	if err := q.sp.Requeue(a.id, attempted); err != nil {
		q.log.Event("error", "id", a.id, "reason", "cannot requeue", "error", err.Error())
		return
	}
	if attempted {
		q.mu.Lock()
		q.deferred[a.id] = a.prev.Next
		q.mu.Unlock()
	}
}

// prepare claims id, opens it and records the attempt (fsync'd when sync,
// else left to the caller's q.sp.Sync). It returns nil when there is
// nothing to send (the message is gone, finished, quarantined or put back
// for later).
func (w *worker) prepare(id string, sync bool) *attempt {
	q := w.q
	if _, err := q.sp.Claim(id); err != nil {
		if !errors.Is(err, spool.ErrNotFound) {
			q.log.Event("error", "id", id, "reason", "cannot claim", "error", err.Error())
		}
		q.forget(id)
		return nil
	}
	q.forget(id)
	f, m, err := q.sp.OpenMessage(id)
	if err != nil && !errors.Is(err, spool.ErrCorrupt) && !errors.Is(err, os.ErrNotExist) {
		// Not the file's fault (EMFILE, EIO...): try again later.
		next := q.now().Add(retryAfter(w.set.Retry, 1))
		q.log.Event("error", "id", id, "reason", "cannot open the message; will retry", "error", err.Error(), "next", next.UTC().Format(time.RFC3339))
		if rerr := q.sp.Requeue(id, true); rerr == nil {
			q.mu.Lock()
			q.deferred[id] = next
			q.mu.Unlock()
		}
		return nil
	}
	if err != nil {
		if qerr := q.sp.QuarantineMessage(id); qerr != nil {
			q.log.Event("error", "id", id, "reason", "unreadable message, cannot quarantine", "error", err.Error(), "quarantine_error", qerr.Error())
			return nil
		}
		q.log.Event("quarantine", "id", id, "reason", err.Error(), "to", spool.DirQuarantine+"/"+id)
		return nil
	}
	d, err := q.readState(spool.Active, id)
	if err != nil {
		q.log.Event("error", "id", id, "reason", "unreadable state file; starting afresh", "error", err.Error())
		d = &spool.Delivery{}
	}
	rcpts := remaining(m.Env.Recipients, d)
	if len(rcpts) == 0 {
		w.finish(id, m, d)
		f.Close()
		return nil
	}

	// Record the attempt before dialing.
	prev := cloneDelivery(d)
	now := q.now()
	d.Attempts++
	if d.First.IsZero() {
		d.First = now
	}
	d.Last = now
	d.Next = now.Add(retryAfter(w.set.Retry, d.Attempts))
	if err := q.recordState(sync, spool.Active, id, d); err != nil {
		if !spool.IsFull(err) {
			q.notSending(id, d.Next, err)
			f.Close()
			return nil
		}
		// A full spool must not stop the mail already in it: sending
		// frees space. The attempt is only in memory, so a crash during
		// this send retries the message at once, once.
		q.log.Event("warning", "id", id, "reason", "spool full: sending without recording the attempt", "error", err.Error())
	}
	return &attempt{id: id, f: f, m: m, d: d, prev: prev, rcpts: rcpts}
}

// notSending puts id, whose attempt could not be recorded (err), back in
// deferred/ for next, unsent.
func (q *Queue) notSending(id string, next time.Time, err error) {
	q.log.Event("error", "id", id, "reason", "cannot record the attempt; not sending", "error", err.Error())
	if rerr := q.sp.Requeue(id, true); rerr != nil {
		q.log.Event("error", "id", id, "reason", "cannot requeue; stays in active/ until the next start", "error", rerr.Error())
		return
	}
	q.mu.Lock()
	q.deferred[id] = next
	q.mu.Unlock()
}

// send makes the attempt prepare recorded and applies its outcome.
func (w *worker) send(ctx context.Context, a *attempt) {
	id, f, m, d, rcpts := a.id, a.f, a.m, a.d, a.rcpts
	from := m.Env.Sender
	if from == "<>" {
		from = ""
	}
	var res *relay.Result
	upstream := ""
	sess, derr := w.session(ctx, from)
	if derr != nil {
		upstream = derr.Upstream
		res = &relay.Result{Err: derr.Err, Upstream: derr.Upstream}
		for _, r := range rcpts {
			res.Rcpts = append(res.Rcpts, relay.RcptResult{Rcpt: r, Err: derr.Err})
		}
	} else {
		upstream = sess.Upstream()
		msg := &relay.Message{
			ID: id, From: from, To: rcpts, Size: m.Size,
			Body:     func() (io.Reader, error) { return m.Body(f), nil },
			BodyType: m.Env.BodyType, SMTPUTF8: m.Env.SMTPUTF8,
			Notify: m.Env.Notify, Ret: m.Env.Ret, EnvID: m.Env.EnvID,
		}
		res = sess.Send(ctx, msg)
		if res.Upstream != "" {
			upstream = res.Upstream
		}
	}
	if upstream == "" {
		upstream = res.Upstream
	}
	d.Upstream = upstream
	w.outcome(id, m, d, rcpts, res, upstream, derr == nil)
}

// outcome applies one Send's result.
// sent says the result came from Send (a dial failure was logged already).
func (w *worker) outcome(id string, m *spool.Meta, d *spool.Delivery, rcpts []string, res *relay.Result, upstream string, sent bool) {
	q := w.q
	now := q.now()
	byRcpt := map[string]*relay.Error{}
	seen := map[string]bool{}
	for _, rr := range res.Rcpts {
		byRcpt[strings.ToLower(rr.Rcpt)] = rr.Err
		seen[strings.ToLower(rr.Rcpt)] = true
	}
	var newFailed []spool.RcptFailure
	var temp []string
	var lastTemp *relay.Error
	authFailed := false
	null := m.Env.Sender == "<>"
	expired := now.Sub(m.Time) >= w.set.Lifetime && w.set.Lifetime > 0
	for _, r := range rcpts {
		e, ok := byRcpt[strings.ToLower(r)]
		if !ok {
			e = res.Err
			if e == nil {
				e = &relay.Error{Class: relay.Temporary, Stage: relay.StageData, Text: "no result for this recipient"}
			}
		}
		if e == nil {
			d.Sent = append(d.Sent, r)
			q.log.Event("delivery", "id", id, "to", r, "upstream", upstream, "status", "sent", "reply", res.Reply, "upstream_id", res.QueueID)
			continue
		}
		reply := errReply(e)
		switch {
		case e.Class == relay.Permanent:
			status := "bounced"
			if null {
				status = "failed"
			}
			newFailed = append(newFailed, spool.RcptFailure{Rcpt: r, Reply: reply, Cause: explain(e), Fix: e.Fix})
			q.log.Event("delivery", appendNonEmpty([]any{"id", id, "to", r, "upstream", upstream, "status", status, "reply", reply}, "stage", e.Stage, "cause", e.Cause, "fix", e.Fix)...)
		case e.Class == relay.AuthFailure:
			authFailed = true
			temp = append(temp, r)
			lastTemp = e
			q.log.Event("delivery", appendNonEmpty([]any{"id", id, "to", r, "upstream", upstream, "status", "deferred", "reply", reply}, "stage", e.Stage, "cause", e.Cause, "fix", e.Fix)...)
		case expired:
			status := "bounced"
			if null {
				status = "failed"
			}
			cause := fmt.Sprintf("the message could not be delivered within %s (the queue lifetime); the last attempt failed: %s", config.FormatDuration(w.set.Lifetime), explain(e))
			fix := e.Fix
			if fix == "" {
				fix = fixExpired
			}
			newFailed = append(newFailed, spool.RcptFailure{Rcpt: r, Reply: reply, Cause: cause, Fix: fix})
			q.log.Event("delivery", appendNonEmpty([]any{"id", id, "to", r, "upstream", upstream, "status", status, "reply", reply, "reason", "lifetime exceeded"}, "stage", e.Stage, "cause", cause, "fix", fix)...)
		default:
			temp = append(temp, r)
			lastTemp = e
			q.log.Event("delivery", appendNonEmpty([]any{"id", id, "to", r, "upstream", upstream, "status", "deferred", "reply", reply}, "stage", e.Stage, "cause", e.Cause, "fix", e.Fix)...)
		}
	}
	if authFailed && sent {
		w.q.log.Event("auth-failed", appendNonEmpty([]any{"id", id, "upstream", upstream, "reply", errReply(lastTemp)}, "cause", lastTemp.Cause, "fix", lastTemp.Fix)...)
	}
	d.Failed = append(d.Failed, newFailed...)
	if len(newFailed) > 0 && !null {
		dsnID, err := q.bounce(m, newFailed, upstream, now)
		if err != nil {
			q.log.Event("error", "id", id, "reason", "cannot queue the bounce; will retry", "error", err.Error())
			// Keep the failures out of the state so they are bounced on
			// the next attempt.
			d.Failed = d.Failed[:len(d.Failed)-len(newFailed)]
			temp = append(temp, rcptsOf(newFailed)...)
		} else {
			d.Bounces = append(d.Bounces, dsnID)
			q.log.Event("bounced", "id", id, "dsn", dsnID, "to", m.Env.Sender, "nrcpt", len(newFailed))
		}
	}
	if len(temp) > 0 {
		if lastTemp != nil {
			d.LastReply = errReply(lastTemp)
		}
		// The next attempt counts from the end of this one: a session
		// that took its full timeouts must not be retried at once. (The
		// time written before dialing stays the guard against a crash.)
		d.Next = now.Add(retryAfter(w.set.Retry, d.Attempts))
		q.noteDelay(m, d, temp, lastTemp, upstream, now)
		if err := q.writeState(spool.Active, id, d); err != nil {
			q.log.Event("error", "id", id, "reason", "cannot update the state file; kept in memory", "error", err.Error())
		}
		if err := q.sp.Defer(id); err != nil {
			q.log.Event("error", "id", id, "reason", "cannot defer", "error", err.Error())
			return
		}
		q.mu.Lock()
		q.deferred[id] = d.Next
		q.mu.Unlock()
		kv := []any{"id", id, "attempts", d.Attempts, "next", d.Next.UTC().Format(time.RFC3339), "nrcpt", len(temp), "reason", d.LastReply}
		if lastTemp != nil {
			kv = appendNonEmpty(kv, "cause", lastTemp.Cause, "fix", lastTemp.Fix)
		}
		q.log.Event("deferred", kv...)
		return
	}
	w.finish(id, m, d)
}

// fixExpired is the fix of a message that outlived the queue lifetime
// without a more precise one.
const fixExpired = "the upstream kept deferring this recipient or could not be reached: check its reply above and the upstream; raise [queue] lifetime if its outages last longer"

func rcptsOf(fs []spool.RcptFailure) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Rcpt)
	}
	return out
}

func explain(e *relay.Error) string {
	if e.Cause != "" {
		return e.Cause
	}
	return errReply(e)
}

// finish ends a message with no recipient left to try.
func (w *worker) finish(id string, m *spool.Meta, d *spool.Delivery) {
	q := w.q
	if len(d.Failed) > 0 && m.Env.Sender == "<>" {
		d.Reason = "a bounce that could not be delivered is never bounced; kept for inspection"
		if err := q.writeState(spool.Active, id, d); err != nil {
			q.log.Event("error", "id", id, "reason", "cannot update the state file; kept in memory", "error", err.Error())
		}
		if err := q.sp.Fail(id); err != nil {
			q.log.Event("error", "id", id, "reason", "cannot move to failed", "error", err.Error())
			return
		}
		q.log.Event("failed", "id", id, "from", "<>", "nrcpt", len(d.Failed), "reason", "undeliverable bounce kept in "+spool.DirFailed)
		return
	}
	if err := q.sp.Done(id); err != nil {
		q.log.Event("error", "id", id, "reason", "cannot remove a finished message", "error", err.Error())
		return
	}
	q.dropUnsaved(id)
	q.log.Event("removed", "id", id, "sent", len(d.Sent), "bounced", len(d.Failed))
}

// forget drops id from the deferred index.
func (q *Queue) forget(id string) {
	q.mu.Lock()
	delete(q.deferred, id)
	q.mu.Unlock()
}
