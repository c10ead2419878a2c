package spool

import (
	"io"
	"testing"
	"time"
)

// A caller's UID is 32 bits unsigned (user namespaces hand out UIDs above
// 2^31): the queue records it, counts its messages and gives it back as
// it is, before and after the journal is replayed.
func TestLargeUID(t *testing.T) {
	const uid = 3000000000
	q := newTestQueue(t)
	id := NewID(time.Now())
	m := testMeta(id)
	m.Origin.UID = uid
	w, err := q.NewMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\n\nbody\n")
	if err := w.CommitState(Held, &Delivery{}); err != nil {
		t.Fatal(err)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(q *Queue, when string) {
		t.Helper()
		if n := q.CountOf(Held, uid); n != 1 {
			t.Errorf("%s: CountOf(held, %d) = %d, want 1", when, uid, n)
		}
		if got, ok := q.UID(id); !ok || got != uid {
			t.Errorf("%s: UID = %d, %v, want %d", when, got, ok, uid)
		}
		// What delivery reads: the message's own header.
		f, got, err := q.OpenMessage(id)
		if err != nil {
			t.Fatalf("%s: OpenMessage: %v", when, err)
		}
		f.Close()
		if got.Origin.UID != uid {
			t.Errorf("%s: header uid %d, want %d", when, got.Origin.UID, uid)
		}
	}
	check(q, "queued")
	q.Close()
	q2, _ := reopen(t, q, nil)
	defer q2.Close()
	check(q2, "replayed")
}
