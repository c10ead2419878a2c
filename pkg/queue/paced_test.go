package queue

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// enqueuePaced queues a message of uid as the policy defers it: in
// deferred, Paced, until at.
func (e *env) enqueuePaced(t *testing.T, uid int, at time.Time, rcpts ...string) string {
	t.Helper()
	id := spool.NewID(e.clk.Now())
	m := &spool.Meta{ID: id, Time: e.clk.Now(), Env: spool.Envelope{Sender: "a@example.org", Recipients: rcpts}, Origin: spool.Origin{UID: uid, User: "u"}}
	w, err := e.sp.NewMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: paced %s\n\nHello.\n", id)
	if err := w.CommitState(spool.Deferred, &spool.Delivery{Next: at, Paced: true, Reason: "deferred by policy until ..."}); err != nil {
		t.Fatal(err)
	}
	if err := e.sp.Sync(); err != nil {
		t.Fatal(err)
	}
	e.q.Schedule(id, at)
	return id
}

// Retime applies an earlier time to a paced message that still waits:
// its record first, then the caller's sync, then the due index; it
// leaves alone a message flushed, held or tried meanwhile, and a time no
// earlier; after a failed sync the index keeps the old times.
func TestRetimePaced(t *testing.T) {
	e := newEnv(t, Settings{})
	var ids []string
	for i := 1; i <= 4; i++ {
		ids = append(ids, e.enqueuePaced(t, 33, t0.Add(time.Duration(i)*time.Hour), "a@example.net", "b@example.net"))
		e.clk.Set(e.clk.Now().Add(time.Millisecond))
	}
	other := e.enqueuePaced(t, 34, t0.Add(time.Hour), "c@example.net")
	p := e.q.PacedByAccount(nil)
	if len(p[33]) != 4 || len(p[34]) != 1 || p[34][0].ID != other {
		t.Fatalf("paced: %+v", p)
	}
	for i, m := range p[33] {
		if m.ID != ids[i] || m.Rcpts != 2 || !m.Next.Equal(t0.Add(time.Duration(i+1)*time.Hour)) {
			t.Errorf("paced %d: %+v", i, m)
		}
	}
	// ids[0] flushed, ids[1] held by the admin; ids[3] given a later time.
	e.q.mu.Lock()
	e.q.deferred[ids[0]] = time.Time{}
	e.q.mu.Unlock()
	if err := e.sp.Hold(ids[1]); err != nil {
		t.Fatal(err)
	}
	var rs []Retiming
	for i, id := range ids {
		at := t0.Add(time.Duration(i) * time.Minute)
		if i == 3 {
			at = t0.Add(5 * time.Hour)
		}
		rs = append(rs, Retiming{ID: id, At: at, Reason: "retimed " + id})
	}
	syncs := 0
	applied, err := e.q.Retime(rs, func() error { syncs++; return e.sp.Sync() })
	if err != nil || syncs != 1 || len(applied) != 1 || applied[0].ID != ids[2] {
		t.Fatalf("Retime: %+v, %v, %d syncs; want only %s", applied, err, syncs, ids[2])
	}
	d, err := e.sp.ReadState(spool.Deferred, ids[2])
	if err != nil || !d.Next.Equal(t0.Add(2*time.Minute)) || d.Reason != "retimed "+ids[2] || !d.Paced {
		t.Errorf("record of %s: %+v %v", ids[2], d, err)
	}
	e.q.mu.Lock()
	got := []time.Time{e.q.deferred[ids[0]], e.q.deferred[ids[2]], e.q.deferred[ids[3]]}
	e.q.mu.Unlock()
	if !got[0].IsZero() || !got[1].Equal(t0.Add(2*time.Minute)) || !got[2].Equal(t0.Add(4*time.Hour)) {
		t.Errorf("due index: %v", got)
	}
	if d, _ := e.sp.ReadState(spool.Deferred, ids[3]); !d.Next.Equal(t0.Add(4 * time.Hour)) {
		t.Errorf("a later time was written: %+v", d)
	}

	// A failed sync: the index keeps the old time.
	applied, err = e.q.Retime([]Retiming{{ID: other, At: t0, Reason: "x"}}, func() error { return errors.New("disk on fire") })
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || len(applied) != 0 {
		t.Errorf("failed sync: %+v %v", applied, err)
	}
	e.q.mu.Lock()
	at := e.q.deferred[other]
	e.q.mu.Unlock()
	if !at.Equal(t0.Add(time.Hour)) {
		t.Errorf("after a failed sync, due at %v", at)
	}

	// Tried since (no longer Paced): left alone.
	d, _ = e.sp.ReadState(spool.Deferred, ids[3])
	d.Paced = false
	if err := e.sp.WriteState(spool.Deferred, ids[3], d); err != nil {
		t.Fatal(err)
	}
	if applied, _ := e.q.Retime([]Retiming{{ID: ids[3], At: t0, Reason: "x"}}, e.sp.Sync); len(applied) != 0 {
		t.Errorf("a message tried since was re-timed: %+v", applied)
	}
}

// A message flushed, or held (and so taken out of the due index), while
// Retime waits for its sync keeps what happened to it: the flushed one
// stays due now, the held one out of the due index.
func TestRetimeLeavesWhatChangedDuringItsSync(t *testing.T) {
	e := newEnv(t, Settings{})
	flushed := e.enqueuePaced(t, 33, t0.Add(time.Hour), "a@example.net")
	e.clk.Set(e.clk.Now().Add(time.Millisecond))
	held := e.enqueuePaced(t, 33, t0.Add(2*time.Hour), "a@example.net")
	rs := []Retiming{{ID: flushed, At: t0.Add(time.Minute), Reason: "x"}, {ID: held, At: t0.Add(2 * time.Minute), Reason: "x"}}
	applied, err := e.q.Retime(rs, func() error {
		e.q.Flush()
		if err := e.sp.Hold(held); err != nil {
			t.Fatal(err)
		}
		e.q.forget(held)
		return e.sp.Sync()
	})
	if err != nil || len(applied) != 0 {
		t.Errorf("Retime: %+v, %v; want nothing applied", applied, err)
	}
	e.q.mu.Lock()
	at, ok := e.q.deferred[flushed]
	_, hok := e.q.deferred[held]
	e.q.mu.Unlock()
	if !ok || !at.IsZero() {
		t.Errorf("flushed during the sync: due at %v (in the index: %v); want now", at, ok)
	}
	if hok {
		t.Errorf("held during the sync: back in the due index")
	}
}
