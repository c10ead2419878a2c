package queue

import (
	"errors"
	"sort"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// Messages the per-account policy deferred (action "defer") wait in
// deferred with the time their account's rate allowed (their record's
// Paced, until they are tried). When a reload or a restart raises that
// rate, relayd re-times them (pkg/policy, Engine.Retime): PacedByAccount
// lists them, Retime gives them their new times.

// Paced is a message the per-account policy deferred that waits in the
// due index, not tried since.
type Paced struct {
	ID    string
	UID   int
	User  string // the account's user name when it was queued
	Rcpts int
	Next  time.Time // its time in the due index
}

// PacedByAccount returns the messages the per-account policy deferred
// that still wait, by UID, each account's oldest first (a queue ID sorts
// by arrival): of the UIDs keep reports (every UID when keep is nil),
// whose messages alone are read.
func (q *Queue) PacedByAccount(keep func(uid int) bool) map[int][]Paced {
	q.mu.Lock()
	waiting := make(map[string]time.Time, len(q.deferred))
	for id, t := range q.deferred {
		waiting[id] = t
	}
	q.mu.Unlock()
	out := map[int][]Paced{}
	for id, t := range waiting {
		if keep != nil {
			if uid, ok := q.sp.UID(id); !ok || !keep(uid) {
				continue
			}
		}
		d, err := q.readState(spool.Deferred, id)
		if err != nil || !d.Paced {
			continue
		}
		f, m, err := q.sp.OpenMessage(id)
		if err != nil {
			continue
		}
		f.Close()
		p := Paced{ID: id, UID: m.Origin.UID, User: m.Origin.User, Rcpts: len(m.Env.Recipients), Next: t}
		out[p.UID] = append(out[p.UID], p)
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	}
	return out
}

// Retiming is a paced message's new time, and its reason to say so.
type Retiming struct {
	ID     string
	At     time.Time
	Reason string
}

// Retime gives paced messages earlier times (their account's rate was
// raised) and returns those it applied. Each message still waiting in
// the due index for a later time and not tried since has its delivery
// record rewritten (Next, Reason) in the journal, under q.mu, so that no
// worker takes it meanwhile (plan takes it out of the index under q.mu
// first) and a record a worker wrote is never overwritten; then sync
// (the caller's: its own lines, the policy's counters, then the store's
// Sync) makes them durable; only then does the due index give them their
// new times. A crash before that Sync leaves each message with its old
// record or its new one, both of them a time the policy gave it: nothing
// is sent twice or lost (and when the counters' record, written after
// the messages', is the old one, it still names the old limit, and the
// next start re-times them again). A message taken, held, deleted or flushed
// meanwhile, or whose new time is no earlier, is left alone. A record
// that cannot be written (a full spool) ends the re-timing there: the
// rest keep their times.
func (q *Queue) Retime(rs []Retiming, sync func() error) ([]Retiming, error) {
	type done struct {
		r   Retiming
		was time.Time
	}
	var written []done
	var werr error
	for _, r := range rs {
		q.mu.Lock()
		was, ok := q.deferred[r.ID]
		if !ok || q.sched.inflight[r.ID] || !r.At.Before(was) {
			q.mu.Unlock()
			continue
		}
		d, err := q.readStateLocked(spool.Deferred, r.ID)
		if err != nil || !d.Paced {
			q.mu.Unlock()
			continue
		}
		d.Next, d.Reason = r.At, r.Reason
		err = q.sp.WriteStateNoSync(spool.Deferred, r.ID, d)
		if err == nil {
			delete(q.unsaved, r.ID)
			written = append(written, done{r, was})
		}
		q.mu.Unlock()
		if err != nil && !errors.Is(err, spool.ErrNotFound) {
			werr = err
			break
		}
	}
	if len(written) == 0 {
		return nil, werr
	}
	if err := sync(); err != nil {
		return nil, errors.Join(werr, err)
	}
	var applied []Retiming
	q.mu.Lock()
	for _, w := range written {
		// Flushed, taken or deferred again meanwhile: its time is no
		// longer the one re-timed.
		if t, ok := q.deferred[w.r.ID]; ok && t.Equal(w.was) {
			q.deferred[w.r.ID] = w.r.At
			applied = append(applied, w.r)
		}
	}
	q.mu.Unlock()
	q.Kick()
	return applied, werr
}

// readStateLocked is readState under q.mu.
func (q *Queue) readStateLocked(state, id string) (*spool.Delivery, error) {
	if u := q.unsaved[id]; u != nil {
		return cloneDelivery(u), nil
	}
	return q.sp.ReadState(state, id)
}
