package spool

import (
	"io"
	"testing"
	"time"
)

// CountOf's per-UID counts follow every way a message enters or leaves a
// state (commit, transitions, Done, Delete, a crash and Recover): they
// always equal a count over the entries.
func TestCountOfFollowsTransitions(t *testing.T) {
	q := newTestQueue(t)
	put := func(q *Queue, uid int, state string) string {
		t.Helper()
		m := testMeta(NewID(time.Now()))
		m.Origin.UID = uid
		w, err := q.NewMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "Subject: x\n\nbody\n")
		if err := w.CommitState(state, nil); err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	check := func(q *Queue, step string, want map[string]map[int]int) {
		t.Helper()
		walked := map[stateUID]int{}
		q.mu.Lock()
		for _, e := range q.entries {
			walked[stateUID{e.uid, e.st}]++
		}
		q.mu.Unlock()
		for _, uid := range []int{1000, 1001, 1002} {
			for i, st := range States {
				got := q.CountOf(st, uid)
				if w := walked[stateUID{uint32(uid), uint8(i)}]; got != w {
					t.Errorf("%s: CountOf(%s, %d) = %d, the entries hold %d", step, st, uid, got, w)
				}
				if w := want[st][uid]; got != w {
					t.Errorf("%s: CountOf(%s, %d) = %d, want %d", step, st, uid, got, w)
				}
			}
		}
	}
	a1 := put(q, 1000, Held)
	a2 := put(q, 1000, Held)
	a3 := put(q, 1000, Incoming)
	b1 := put(q, 1001, Held)
	b2 := put(q, 1001, Incoming)
	check(q, "commit", map[string]map[int]int{Held: {1000: 2, 1001: 1}, Incoming: {1000: 1, 1001: 1}})

	if err := q.Release(a1); err != nil {
		t.Fatal(err)
	}
	if err := q.Hold(b2); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Delete(b1); err != nil {
		t.Fatal(err)
	}
	check(q, "release, hold, delete", map[string]map[int]int{Held: {1000: 1, 1001: 1}, Incoming: {1000: 2}})

	if _, err := q.Claim(a1); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Claim(a3); err != nil {
		t.Fatal(err)
	}
	if err := q.Done(a3); err != nil {
		t.Fatal(err)
	}
	if err := q.WriteState(Held, a2, &Delivery{Reason: "held by the operator"}); err != nil {
		t.Fatal(err)
	}
	check(q, "claim, done, record", map[string]map[int]int{Held: {1000: 1, 1001: 1}, Active: {1000: 1}})
	q.Sync()

	// A crash: the replayed queue counts the same, and Recover's move of
	// the active message back to incoming is counted.
	n, _ := reopen(t, q, nil)
	check(n, "recover", map[string]map[int]int{Held: {1000: 1, 1001: 1}, Incoming: {1000: 1}})
	if _, err := n.Delete(a2); err != nil {
		t.Fatal(err)
	}
	check(n, "delete after recover", map[string]map[int]int{Held: {1001: 1}, Incoming: {1000: 1}})
}
