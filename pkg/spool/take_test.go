package spool

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Take moves a message to active in memory only; the record written
// next (a "set" line in state active) records both, and that is what a
// replay of the journal finds. Without that line the journal still has
// the message where it was.
func TestTakeOneLine(t *testing.T) {
	q := newTestQueue(t)
	ids := []string{putMessage(t, q, Incoming), putMessage(t, q, Incoming)}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st, err := q.Take(id); err != nil || st != Incoming {
			t.Fatalf("Take(%s) = %q, %v; want incoming", id, st, err)
		}
	}
	if _, err := q.Take(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Take: %v, want ErrNotFound", err)
	}
	if st, _ := q.Locate(ids[0]); st != Active {
		t.Errorf("after Take: %s, want active", st)
	}
	seq := q.seq
	if err := q.WriteStateNoSync(Active, ids[0], &Delivery{Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := q.seq - seq; n != 1 {
		t.Errorf("take and record: %d journal lines, want 1", n)
	}
	snap, err := Snapshot(q.Root)
	if err != nil {
		t.Fatal(err)
	}
	if e := snap[ids[0]]; e.State != Active || e.Attempts != 1 {
		t.Errorf("recorded message in the journal: %+v, want active with 1 attempt", e)
	}
	if e := snap[ids[1]]; e.State != Incoming {
		t.Errorf("taken message without a record in the journal: %+v, want incoming", e)
	}
}

// BenchmarkClaimRecord is what a delivery writes to the journal before
// it sends: the claim and the attempt's record ("take": one line; "claim":
// Claim's mv line, then the record's set line), for messages that are
// then removed (Done) to keep the queue small.
func BenchmarkClaimRecord(b *testing.B) {
	for _, mode := range []string{"claim", "take"} {
		b.Run(mode, func(b *testing.B) {
			q := newTestQueue(b)
			body := "Subject: bench\n\n" + strings.Repeat(strings.Repeat("b", 71)+"\n", 28)
			d := &Delivery{Attempts: 1, First: time.Now(), Last: time.Now(), Next: time.Now().Add(time.Minute)}
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				id := putBody(b, q, Incoming, body)
				b.StartTimer()
				claim := q.Take
				if mode == "claim" {
					claim = q.Claim
				}
				if _, err := claim(id); err != nil {
					b.Fatal(err)
				}
				if err := q.WriteStateNoSync(Active, id, d); err != nil {
					b.Fatal(err)
				}
				if err := q.Done(id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkListTaken is the scheduler's listing of incoming while mail is
// delivered as it comes: a few messages incoming, each listed, then taken
// (Take) as a new one comes in.
func BenchmarkListTaken(b *testing.B) {
	q := newTestQueue(b)
	const live = 4
	var ids []string
	for range live {
		ids = append(ids, putBody(b, q, Incoming, "Subject: x\n\nbody\n"))
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := q.List(Incoming)
		if err != nil || len(got) != live {
			b.Fatal(len(got), err)
		}
		if _, err := q.Take(ids[0]); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		ids = append(ids[1:], putBody(b, q, Incoming, "Subject: x\n\nbody\n"))
		b.StartTimer()
	}
}
