package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	mailmsg "github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

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

// worker is one delivery goroutine with its link (cached session).
type worker struct {
	q    *Queue
	set  Settings
	gen  int
	link link
	job  *job
	res  *jobResult
}

// gone reports that id left the queue (or is not there).
func (w *worker) gone(id string) { w.res.msgs = append(w.res.msgs, msgResult{id: id, gone: true}) }

// deferredAt reports that id is deferred until next.
func (w *worker) deferredAt(id string, next time.Time, waiting bool) {
	w.res.msgs = append(w.res.msgs, msgResult{id: id, deferred: true, next: next, waiting: waiting})
}

func (w *worker) event(ev Event) {
	if w.q.Observer != nil {
		w.res.events = append(w.res.events, ev)
	}
}

// errReply is the reply text (or error) of a failure, for logs and state.
func errReply(e *relay.Error) string {
	if r := e.Reply(); r != "" {
		return r
	}
	if e.Err != nil {
		if e.Enhanced != "" {
			// A failure of ours with its status (5.6.7: SMTPUTF8 needed).
			return e.Enhanced + " " + e.Err.Error()
		}
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
	f     *spool.Message
	m     *spool.Meta
	d     *spool.Delivery
	prev  *spool.Delivery // the record before this attempt (see putBack)
	rcpts []string
	route Route
	msg   *relay.Message // built by message
}

// maxBatch bounds the messages a worker claims and records at once.
const maxBatch = 64

// A job of at most shareMax messages (mail delivered as it comes in)
// waits up to shareWait for another Sync of the store — the doors' group
// commit, every millisecond or so while mail comes in — to make its
// attempt records durable before it makes one of its own
// (spool.Queue.SyncWithin): as durable before dialing, one fdatasync
// fewer per job while mail comes in, at most shareWait later when none
// comes. A bigger batch (a drain) syncs at once.
const (
	shareMax  = 4
	shareWait = 2 * time.Millisecond
)

// deliverBatch delivers ids on the worker's session with one group commit
// of their attempt records: each is claimed and its attempt written
// without fsync, then ONE Sync makes every record durable, and only then
// is the first one sent — the attempt is still recorded durably before
// it is sent, so a crash anywhere in the batch retries each of its
// messages on the normal schedule, never in a hot loop. done is called
// for each ID when its delivery is over. After Stop, the messages not yet
// sent go back where they were with the record they had (putBack).
func (w *worker) deliverBatch(ctx context.Context, ids []string) {
	q := w.q
	var as []*attempt
	for _, id := range ids {
		if a := w.prepare(id); a != nil {
			as = append(as, a)
		}
	}
	if len(as) == 0 {
		return
	}
	sync := q.sp.Sync
	if len(as) <= shareMax {
		sync = func() error { return q.sp.SyncWithin(shareWait) }
	}
	if err := sync(); err != nil {
		if !spool.IsFull(err) {
			for _, a := range as {
				w.notSending(a.id, a.d.Next, err)
				a.f.Close()
			}
			return
		}
		q.log.Warning("spool full: sending without recording the attempts", err, slog.Int("n", len(as)))
	}
	// The outcome of each message (its log lines, its record, its
	// removal or deferral, a bounce) is applied once its final reply is
	// in, while the next message's replies are awaited: settle, called
	// by the session after it writes the next message's commands (and
	// again after the body), by the link before it dials for that
	// message, or after that Send at the latest. So the
	// final reply of one message is followed at once by the next one's
	// commands, and the upstream works on them as relayd writes its log.
	// The message after the one being sent is read and scanned then too
	// (relay.Message.Prepare).
	var held *attempt
	var heldRes *relay.Result
	var heldFault bool
	var heldNotTried notTried
	settle := func() {
		if held == nil {
			return
		}
		a := held
		held = nil
		w.outcome(a, heldRes, heldFault, heldNotTried)
		a.f.Close()
	}
	defer settle()
	var next *attempt
	waiting := func() {
		settle()
		if next != nil {
			w.message(next).Prepare()
			next = nil
		}
	}
	for i, a := range as {
		next = nil
		if i+1 < len(as) {
			next = as[i+1]
		}
		if q.stopped() {
			settle()
			for _, b := range as[i:] {
				w.putBack(b)
				b.f.Close()
			}
			return
		}
		// The next message's commands may follow this one's end of data
		// on the session (relay.Message.Next) when it goes the same way.
		if next != nil && slices.Equal(a.route.sess, next.route.sess) {
			w.message(a).Next = w.message(next)
		}
		res, fault, notTried, ok := w.send(ctx, a, waiting)
		settle()
		if !ok {
			a.f.Close()
			continue
		}
		held, heldRes, heldFault, heldNotTried = a, res, fault, notTried
	}
}

// putBack returns a message whose attempt was recorded but not made (the
// queue stopped first) to incoming or deferred with the record it had.
func (w *worker) putBack(a *attempt) {
	q := w.q
	// Not synced alone: Requeue's Sync covers the record's line, which
	// comes before its own.
	if err := q.recordState(spool.Active, a.id, a.prev); err != nil {
		q.log.MessageError(a.id, "cannot restore the delivery record", err)
	}
	attempted := a.prev.Attempts > 0
	if err := q.sp.Requeue(a.id, attempted); err != nil {
		q.log.MessageError(a.id, "cannot requeue", err)
		w.gone(a.id)
		return
	}
	if attempted {
		w.deferredAt(a.id, a.prev.Next, false)
	}
}

// prepare claims id, opens it and records the attempt, in one journal
// line (made durable by the caller's Sync of the spool, for the whole
// batch). It returns nil when there is nothing to send (the message is
// gone, finished, quarantined or put back for later).
func (w *worker) prepare(id string) *attempt {
	q := w.q
	// Taken without a journal line: the attempt's record below, a "set"
	// line in state active, records the claim with it (spool.Queue.Take).
	if _, err := q.sp.Take(id); err != nil {
		if !errors.Is(err, spool.ErrNotFound) {
			q.log.MessageError(id, "cannot claim", err)
		}
		w.gone(id)
		return nil
	}
	f, m, err := q.sp.OpenWhole(id)
	if err != nil && !errors.Is(err, spool.ErrCorrupt) && !errors.Is(err, os.ErrNotExist) {
		// Not the file's fault (EMFILE, EIO...): try again later.
		next := q.now().Add(retryAfter(w.set.Retry, 1))
		q.log.MessageError(id, "cannot open the message; will retry", err, slog.Time("next", next))
		if rerr := q.sp.Requeue(id, true); rerr == nil {
			w.deferredAt(id, next, false)
		} else {
			w.gone(id)
		}
		return nil
	}
	if err != nil {
		w.quarantine(id, err)
		return nil
	}
	d, err := q.readState(spool.Active, id)
	if err != nil {
		q.log.MessageError(id, "unreadable delivery record; starting afresh", err)
		d = &spool.Delivery{}
	}
	route := w.set.Upstreams.routeOf(m)
	if !w.set.Upstreams.Single() {
		w.res.msgs = append(w.res.msgs, msgResult{id: id, route: route.keys})
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
	if d.Paced {
		// Tried: no longer waiting for the policy's time, nor saying so.
		d.Paced, d.Reason = false, ""
	}
	if d.First.IsZero() {
		d.First = now
	}
	d.Last = now
	d.Next = now.Add(retryAfter(w.set.Retry, d.Attempts))
	if err := q.recordState(spool.Active, id, d); err != nil {
		if !spool.IsFull(err) {
			w.notSending(id, d.Next, err)
			f.Close()
			return nil
		}
		// A full spool must not stop the mail already in it: sending
		// frees space. The attempt is only in memory, so a crash during
		// this send retries the message at once, once.
		q.log.MessageWarning(id, "spool full: sending without recording the attempt", err)
	}
	return &attempt{id: id, f: f, m: m, d: d, prev: prev, rcpts: rcpts, route: route}
}

// quarantine takes id, found damaged (err), out of the queue into the
// quarantine: every retry would fail the same way.
func (w *worker) quarantine(id string, err error) {
	q := w.q
	w.gone(id)
	name, qerr := q.sp.QuarantineMessage(id)
	if qerr != nil {
		q.log.MessageError(id, "unreadable message, cannot quarantine", err, slog.String("quarantine_error", qerr.Error()))
		return
	}
	q.log.QuarantineMessage(id, err.Error(), spool.DirQuarantine+"/"+name)
}

// notSending puts id, whose attempt could not be recorded (err), back in
// deferred for next, unsent.
func (w *worker) notSending(id string, next time.Time, err error) {
	q := w.q
	q.log.MessageError(id, "cannot record the attempt; not sending", err)
	if rerr := q.sp.Requeue(id, true); rerr != nil {
		q.log.MessageError(id, "cannot requeue; stays in active/ until the next start", rerr)
		w.gone(id)
		return
	}
	w.deferredAt(id, next, false)
}

// send makes the attempt prepare recorded, through the link, and returns
// its result for outcome (nt: link.send's); ok is false when the message was found damaged
// while it was being sent (it is quarantined: there is no outcome to
// apply). waiting, when set, is called while the upstream's replies are
// awaited (relay.Message.Waiting).
func (w *worker) send(ctx context.Context, a *attempt, waiting func()) (res *relay.Result, fault bool, nt notTried, ok bool) {
	msg := w.message(a)
	msg.Waiting = waiting
	res, fault, nt = w.link.send(ctx, a.route, w.job.skip, msg)
	if res.Err != nil && errors.Is(res.Err, spool.ErrCorrupt) {
		// The stored message itself is damaged (its body does not match
		// its checksum, found while it was being sent: the DATA was
		// aborted, the upstream has nothing). Every retry would fail
		// the same way: it is quarantined, as one whose header does not
		// decode is in prepare.
		w.quarantine(a.id, res.Err)
		return nil, false, notTried{}, false
	}
	a.d.Upstream = res.Upstream
	return res, fault, nt, true
}

// message is the relay.Message of a (built once).
func (w *worker) message(a *attempt) *relay.Message {
	if a.msg == nil {
		from := a.m.Env.Sender
		if from == "<>" {
			from = ""
		}
		a.msg = &relay.Message{
			ID: a.id, From: from, To: a.rcpts, Size: a.m.Size,
			Body:     func() (io.Reader, error) { return a.m.Body(a.f), nil },
			BodyType: a.m.Env.BodyType, SMTPUTF8: a.m.Env.SMTPUTF8,
			Notify: a.m.Env.Notify, Ret: a.m.Env.Ret, EnvID: a.m.Env.EnvID,
		}
	}
	return a.msg
}

// outcome applies one send's result. fault says every upstream failed
// without answering the message's own transaction (the upstreams'
// trouble, not the message's: link.send): the attempt is not
// charged and the next one waits for the circuit breaker, not the retry
// schedule. nt, when its Why is not "", says why the message was not
// sent at all (link.send): its lines say so (tried=no, with nt.Log), and
// a deferral records nt.Why, not the failure of the upstream it
// carries, which was no answer to this message (nor its reply, which
// may name another account's addresses: only the log has it).
func (w *worker) outcome(a *attempt, res *relay.Result, fault bool, nt notTried) {
	notTried := nt.Why
	q := w.q
	id, m, d, rcpts, upstream := a.id, a.m, a.d, a.rcpts, res.Upstream
	now := q.now()
	byRcpt := make(map[string]*relay.Error, len(res.Rcpts))
	for _, rr := range res.Rcpts {
		byRcpt[strings.ToLower(rr.Rcpt)] = rr.Err
	}
	var newFailed []spool.RcptFailure
	var temp []string
	var lastTemp *relay.Error
	authFailed := false
	sentN := 0
	null := m.Env.Sender == "<>"
	// RFC 3461 5.2.2: no failure notice for a bounce (null sender), nor
	// when the sender's NOTIFY (NEVER, or a list without FAILURE) asks
	// for none; the failure is logged all the same.
	noNotice := null || !mailmsg.NotifyAllows(m.Env.Notify, mailmsg.NotifyFailure)
	expired := now.Sub(m.Time) >= w.set.Lifetime && w.set.Lifetime > 0
	failed := q.log.DeliveryFailed
	if notTried != "" {
		failed = q.log.DeliveryNotTried
	}
	for _, r := range rcpts {
		e, ok := byRcpt[strings.ToLower(r)]
		if !ok {
			e = res.Err
			if e == nil {
				e = &relay.Error{Class: relay.Temporary, Stage: relay.StageData, Text: "no result for this recipient"}
			}
		}
		if e == nil {
			sentN++
			d.Sent = append(d.Sent, r)
			q.log.Delivery(id, r, upstream, res.Reply, res.QueueID)
			continue
		}
		reply := errReply(e)
		switch {
		case e.Class == relay.Permanent:
			status := maillog.Bounced
			if noNotice {
				status = maillog.Failed
			}
			f := spool.RcptFailure{Rcpt: r, Reply: reply, Cause: explain(e), Fix: e.Fix}
			if e.Code == 0 {
				f.Status = e.Enhanced // our own refusal's status, if it has one
			}
			newFailed = append(newFailed, f)
			failed(id, r, upstream, status, reply, "", maillog.Why{Stage: string(e.Stage), Cause: e.Cause, Fix: e.Fix})
		case notTried != "" && (!expired || e.Class == relay.AuthFailure):
			// Deferred without an attempt: the line says why, not what
			// the upstream answered another message. (A refused login
			// never bounces mail, expired or not.)
			temp = append(temp, r)
			lastTemp = e
			failed(id, r, upstream, maillog.Deferred, "", nt.Log, maillog.Why{})
		case e.Class == relay.AuthFailure:
			authFailed = true
			temp = append(temp, r)
			lastTemp = e
			q.log.DeliveryFailed(id, r, upstream, maillog.Deferred, reply, "", maillog.Why{Stage: string(e.Stage), Cause: e.Cause, Fix: e.Fix})
		case expired:
			status := maillog.Bounced
			if noNotice {
				status = maillog.Failed
			}
			cause := fmt.Sprintf("the message could not be delivered within %s (the queue lifetime); the last attempt failed: %s", config.FormatDuration(w.set.Lifetime), explain(e))
			fix := e.Fix
			if fix == "" {
				fix = fixExpired
			}
			newFailed = append(newFailed, spool.RcptFailure{Rcpt: r, Reply: reply, Cause: cause, Fix: fix})
			failed(id, r, upstream, status, reply, "lifetime exceeded", maillog.Why{Stage: string(e.Stage), Cause: cause, Fix: fix})
		default:
			temp = append(temp, r)
			lastTemp = e
			q.log.DeliveryFailed(id, r, upstream, maillog.Deferred, reply, "", maillog.Why{Stage: string(e.Stage), Cause: e.Cause, Fix: e.Fix})
		}
	}
	// An AUTH failure was logged by the link when it happened.
	if authFailed && lastTemp.Stage != relay.StageAuth {
		w.q.log.AuthFailed(id, upstream, errReply(lastTemp), maillog.Why{Cause: lastTemp.Cause, Fix: lastTemp.Fix})
	}
	if sentN > 0 {
		w.event(Event{Kind: EventSent, ID: id, Upstream: upstream, Rcpts: sentN})
	}
	d.Failed = append(d.Failed, newFailed...)
	if len(newFailed) > 0 && !noNotice {
		dsnID, err := q.bounce(m, newFailed, upstream, now)
		if err != nil {
			q.log.MessageError(id, "cannot queue the bounce; will retry", err)
			// Keep the failures out of the state so they are bounced on
			// the next attempt.
			d.Failed = d.Failed[:len(d.Failed)-len(newFailed)]
			temp = append(temp, rcptsOf(newFailed)...)
		} else {
			d.Bounces = append(d.Bounces, dsnID)
			q.log.Bounced(id, dsnID, m.Env.Sender, len(newFailed))
			w.event(Event{Kind: EventBounced, ID: id, Upstream: upstream, Rcpts: len(newFailed)})
		}
	}
	if len(temp) > 0 {
		if notTried != "" {
			d.LastReply = notTried
		} else if lastTemp != nil {
			d.LastReply = errReply(lastTemp)
		}
		// The next attempt counts from the end of this one: a session
		// that took its full timeouts must not be retried at once. (The
		// time written before dialing stays the guard against a crash.)
		d.Next = now.Add(retryAfter(w.set.Retry, d.Attempts))
		if fault {
			// Not the message's failure: no attempt charged; it is due
			// again when an upstream's breaker lets it go.
			d.Attempts = a.prev.Attempts
			d.Next = w.job.waitingNext(id, now)
		}
		q.noteDelay(m, d, temp, lastTemp, upstream, now)
		// One fdatasync for the record and the transition: the record's
		// line comes before Defer's, whose Sync makes both durable (a
		// crash between them loses no line the kernel has; a power loss
		// before the Sync leaves the message active with the attempt's
		// record, which Recover puts back as deferred).
		if err := q.recordState(spool.Active, id, d); err != nil {
			q.log.MessageError(id, "cannot write the delivery record; kept in memory", err)
		}
		if err := q.sp.Defer(id); err != nil {
			q.log.MessageError(id, "cannot defer", err)
			w.gone(id)
			return
		}
		// A connection lost during the data: charged, on the retry
		// schedule, but also due when an upstream comes back (the
		// scheduler's lost), as an upstream going down cuts it so.
		w.res.msgs = append(w.res.msgs, msgResult{id: id, deferred: true, next: d.Next, waiting: fault,
			lost: !fault && relay.LostInData(res)})
		w.event(Event{Kind: EventDeferred, ID: id, Upstream: upstream, Rcpts: len(temp), Err: lastTemp})
		var why maillog.Why
		if lastTemp != nil && notTried == "" {
			why = maillog.Why{Cause: lastTemp.Cause, Fix: lastTemp.Fix}
		}
		q.log.Deferred(id, d.Attempts, d.Next, len(temp), d.LastReply, why)
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
	w.gone(id)
	if len(d.Failed) > 0 && m.Env.Sender == "<>" {
		d.Reason = "a bounce that could not be delivered is never bounced; kept for inspection"
		// Not synced alone: Fail's Sync covers the record's line too.
		if err := q.recordState(spool.Active, id, d); err != nil {
			q.log.MessageError(id, "cannot write the delivery record; kept in memory", err)
		}
		if err := q.sp.Fail(id); err != nil {
			q.log.MessageError(id, "cannot move to failed", err)
			return
		}
		q.log.Failed(id, "<>", len(d.Failed), "undeliverable bounce kept in the failed state")
		w.event(Event{Kind: EventFailed, ID: id, Rcpts: len(d.Failed)})
		return
	}
	// The message's delivery lines are in the log before it is gone from
	// the queue; they go out in one write with the lines that waited
	// (the previous message's removal, pickup's lines).
	q.log.WriteOut()
	if err := q.sp.Done(id); err != nil {
		q.log.MessageError(id, "cannot remove a finished message", err)
		return
	}
	q.dropUnsaved(id)
	q.log.Removed(id, len(d.Sent), len(d.Failed))
	w.event(Event{Kind: EventRemoved, ID: id, Rcpts: len(d.Sent) + len(d.Failed)})
}

// forget drops id from the deferred index, and has the scheduler drop
// what it keeps about id (dropForgotten).
func (q *Queue) forget(id string) {
	q.mu.Lock()
	delete(q.deferred, id)
	q.forgotten = append(q.forgotten, id)
	q.mu.Unlock()
}
