package spool

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// enqueue stores a message from uid through the queue's own writer, with an
// empty record in incoming, as relayd's pickup does.
func enqueue(t *testing.T, q *Queue, uid int) string {
	t.Helper()
	id := NewID(time.Now())
	w, err := q.NewMessage(&Meta{ID: id, Time: time.Now(), Origin: Origin{UID: uid, GID: uid, Via: "maildrop"},
		Env: Envelope{Sender: "a@example.org", Recipients: []string{"b@example.org"}}})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\n\nbody\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSnapshot(t *testing.T) {
	q := newTestQueue(t)
	if s, err := Snapshot(q.Root); err != nil || len(s) != 0 {
		t.Fatalf("empty queue: %v, %v", s, err)
	}
	fresh := enqueue(t, q, 1001)
	deferred := enqueue(t, q, 1002)
	if _, err := q.Claim(deferred); err != nil {
		t.Fatal(err)
	}
	rec := &Delivery{Attempts: 1, LastReply: "451 4.7.1 try later", Sent: []string{"b@example.org"}}
	if err := q.WriteState(Active, deferred, rec); err != nil {
		t.Fatal(err)
	}
	if err := q.Defer(deferred); err != nil {
		t.Fatal(err)
	}
	held := enqueue(t, q, 1003)
	if err := q.Hold(held); err != nil {
		t.Fatal(err)
	}
	active := enqueue(t, q, 1004)
	if _, err := q.Claim(active); err != nil {
		t.Fatal(err)
	}
	failed := enqueue(t, q, 1005)
	q.Claim(failed)
	if err := q.WriteState(Active, failed, &Delivery{Attempts: 2, Reason: "bounce undeliverable"}); err != nil {
		t.Fatal(err)
	}
	if err := q.Fail(failed); err != nil {
		t.Fatal(err)
	}
	gone := enqueue(t, q, 1006)
	q.Claim(gone)
	if err := q.Done(gone); err != nil {
		t.Fatal(err)
	}
	quarantined := enqueue(t, q, 1007)
	if _, err := q.QuarantineMessage(quarantined); err != nil {
		t.Fatal(err)
	}
	// A file in maildrop/ is not queued yet.
	if err := os.WriteFile(filepath.Join(q.Root, DirMaildrop, NewID(time.Now())), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Snapshot(q.Root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state string
		uid   int
	}{fresh: {Incoming, 1001}, deferred: {Deferred, 1002}, held: {Held, 1003}, active: {Active, 1004}, failed: {Failed, 1005}}
	if len(s) != len(want) {
		t.Errorf("snapshot has %d messages, want %d: %v", len(s), len(want), s)
	}
	for id, w := range want {
		e, ok := s[id]
		if !ok || e.State != w.state || e.UID != w.uid {
			t.Errorf("%s: %+v (found %v), want state %s uid %d", id, e, ok, w.state, w.uid)
		}
	}
	if e := s[fresh]; e.Delivery != nil || e.Attempts != 0 {
		t.Errorf("a never attempted message has a record: %+v", e.Delivery)
	}
	if d := s[deferred].Delivery; d == nil || d.Attempts != 1 || d.LastReply != rec.LastReply || len(d.Sent) != 1 || s[deferred].Attempts != 1 {
		t.Errorf("deferred record: %+v, want %+v", d, rec)
	}
	if d := s[failed].Delivery; d == nil || d.Reason != "bounce undeliverable" {
		t.Errorf("failed record: %+v", d)
	}

	c, err := Counts(q.Root)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 5 || c[Incoming] != 1 || c[Deferred] != 1 || c[Held] != 1 || c[Active] != 1 || c[Failed] != 1 {
		t.Errorf("counts: %v", c)
	}
	if s, err := Snapshot(q.Root); err != nil || len(s) != 5 {
		t.Errorf("Snapshot has %d, %v; want 5", len(s), err)
	}
}

// TestSnapshotDuringTransitions checks that a reader in another process's
// position sees every message exactly once while the queue moves them
// between states.
func TestSnapshotDuringTransitions(t *testing.T) {
	q := newTestQueue(t)
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, enqueue(t, q, 1000+i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, id := range ids {
				select {
				case <-stop:
					return
				default:
				}
				q.Claim(id)
				q.Requeue(id, true)
				q.Hold(id)
				q.Release(id)
			}
		}
	}()
	deadline := time.Now().Add(time.Second)
	for n := 0; time.Now().Before(deadline) || n < 20; n++ {
		s, err := Snapshot(q.Root)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if e, ok := s[id]; !ok || e.State == "" {
				t.Fatalf("snapshot %d: %s reported as %+v (found %v) while it moved between states", n, id, e, ok)
			}
		}
		if s, err := Snapshot(q.Root); err != nil || len(s) != len(ids) {
			t.Fatalf("Snapshot has %d, %v; want %d", len(s), err, len(ids))
		}
	}
	close(stop)
	wg.Wait()
}

// Attention names the queued messages relayd will not send by itself:
// failed ones and held ones, each with what to do; nothing for a queue
// whose messages are all on their way.
func TestAttentionQueue(t *testing.T) {
	q := newTestQueue(t)
	enqueue(t, q, 1001)
	owner := Owner{UID: os.Getuid(), DropGID: os.Getgid()}
	for _, n := range Attention(q.Root, owner) {
		if strings.Contains(n.Problem, "held") || strings.Contains(n.Problem, "failed") {
			t.Errorf("a queue with nothing stuck: %v", n)
		}
	}
	held := enqueue(t, q, 1002)
	if err := q.Hold(held); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		id := enqueue(t, q, 1003)
		q.Claim(id)
		if err := q.Fail(id); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, n := range Attention(q.Root, owner) {
		got = append(got, n.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"2 message(s) failed", "relayd queue release <id>", "1 message(s) held", "relayd queue list --held"} {
		if !strings.Contains(all, want) {
			t.Errorf("Attention does not say %q:\n%s", want, all)
		}
	}
}
