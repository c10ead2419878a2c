package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newTestQueue prepares a private spool in a temp dir and opens its queue.
func newTestQueue(t *testing.T) *Queue {
	t.Helper()
	root := filepath.Join(t.TempDir(), "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	q, err := OpenQueue(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// putMessage writes a message file into queue/msg and its state in state.
func putMessage(t *testing.T, q *Queue, state string) string {
	t.Helper()
	id := NewID(time.Now())
	d, err := NewDrop(q.MsgDir(), &Meta{ID: id, Time: time.Now(), Env: Envelope{Sender: "a@example.org", Recipients: []string{"b@example.org"}}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	d.Write([]byte("Subject: x\n\nbody\n"))
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if state != "" {
		if err := q.WriteState(state, id, &Delivery{}); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func mustState(t *testing.T, q *Queue, id, want string) {
	t.Helper()
	got, err := q.Locate(id)
	if want == "" {
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: in %q (%v), want gone", id, got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("%s: in %q (%v), want %q", id, got, err, want)
	}
}

func TestTransitions(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	mustState(t, q, id, Incoming)
	if from, err := q.Claim(id); err != nil || from != Incoming {
		t.Fatalf("Claim: %q %v", from, err)
	}
	mustState(t, q, id, Active)
	if _, err := q.Claim(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Claim: %v, want ErrNotFound", err)
	}
	if err := q.Hold(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Hold of an active message: %v", err)
	}
	if _, err := q.Delete(id); err == nil || !strings.Contains(err.Error(), "being delivered") {
		t.Fatalf("Delete of an active message: %v", err)
	}
	d := &Delivery{Attempts: 1, Next: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Sent: []string{"b@example.org"}}
	if err := q.WriteState(Active, id, d); err != nil {
		t.Fatal(err)
	}
	if err := q.Defer(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Deferred)
	got, err := q.ReadState(Deferred, id)
	if err != nil || got.Attempts != 1 || !got.Next.Equal(d.Next) || len(got.Sent) != 1 {
		t.Fatalf("state after Defer: %+v %v", got, err)
	}
	if err := q.Hold(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Held)
	if _, err := q.Claim(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Claim of a held message: %v", err)
	}
	if err := q.Release(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Incoming)
	q.Claim(id)
	if err := q.Fail(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, Failed)
	if st, err := q.Delete(id); err != nil || st != Failed {
		t.Fatalf("Delete: %q %v", st, err)
	}
	mustState(t, q, id, "")
	if q.HasMessage(id) {
		t.Fatal("message file left after Delete")
	}

	id2 := putMessage(t, q, Incoming)
	q.Claim(id2)
	if err := q.Done(id2); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id2, "")
	if q.HasMessage(id2) {
		t.Fatal("message file left after Done")
	}
	if ids, _ := q.List("tmp"); len(ids) != 0 {
		t.Fatalf("tmp not empty: %v", ids)
	}
}

func TestQuarantineMessage(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Deferred)
	if err := q.QuarantineMessage(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, "")
	if _, err := os.Stat(filepath.Join(q.Root, DirQuarantine, id)); err != nil {
		t.Fatalf("not in quarantine: %v", err)
	}
	// A second file with the same label gets another name, never replaces.
	os.WriteFile(filepath.Join(q.Root, DirMsg, id), []byte("x"), 0o600)
	if name, err := q.QuarantineFile(q.MsgDir(), id, id); err != nil || name != id+".1" {
		t.Fatalf("QuarantineFile: %q %v", name, err)
	}
	if name, err := q.QuarantineFile(q.MsgDir(), "missing", "../../etc/passwd"); err == nil {
		t.Fatalf("quarantined a missing file as %q", name)
	}
	if s := sanitize("../../etc/passwd"); strings.Contains(s, "/") || strings.HasPrefix(s, ".") {
		t.Fatalf("sanitize: %q", s)
	}
}

func TestRecover(t *testing.T) {
	q := newTestQueue(t)
	fresh := putMessage(t, q, Incoming)
	q.Claim(fresh)
	tried := putMessage(t, q, Incoming)
	q.Claim(tried)
	q.WriteState(Active, tried, &Delivery{Attempts: 2})
	orphan := putMessage(t, q, "") // enqueue cut short, maildrop copy gone
	redo := putMessage(t, q, "")   // enqueue cut short, maildrop copy still there
	stateOnly := NewID(time.Now()) // state file without its message
	q.WriteState(Deferred, stateOnly, &Delivery{})
	os.WriteFile(filepath.Join(q.Root, DirTmp, "junk"), nil, 0o600)

	log, err := q.Recover(func(id string) bool { return id == redo })
	if err != nil {
		t.Fatal(err)
	}
	mustState(t, q, fresh, Incoming)
	mustState(t, q, tried, Deferred)
	mustState(t, q, stateOnly, "")
	if q.HasMessage(orphan) {
		t.Error("orphan message kept")
	}
	if !q.HasMessage(redo) {
		t.Error("message whose maildrop copy exists was removed")
	}
	if len(log) != 4 {
		t.Errorf("log: %q", log)
	}
	if ents, _ := os.ReadDir(filepath.Join(q.Root, DirTmp)); len(ents) != 0 {
		t.Errorf("tmp not swept: %v", ents)
	}
}

func TestReadStateCorrupt(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, "")
	os.WriteFile(filepath.Join(q.Root, DirDeferred, id), []byte("{not json"), 0o600)
	if _, err := q.ReadState(Deferred, id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadState: %v, want ErrCorrupt", err)
	}
}

// A Drop into queue/msg cut short on a file system
// without O_TMPFILE leaves msg/tmp.<id>; recovery sweeps it.
func TestRecoverSweepsMsgTemp(t *testing.T) {
	q := newTestQueue(t)
	keep := putMessage(t, q, Incoming)
	tmp := filepath.Join(q.Root, DirMsg, TempPrefix+NewID(time.Now()))
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := q.Recover(func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temp file kept: %v", err)
	}
	if !strings.Contains(strings.Join(log, "\n"), "removed-temp file="+filepath.Base(tmp)) {
		t.Errorf("log %q", log)
	}
	mustState(t, q, keep, Incoming)
}

// Non-regular files in the queue are refused as
// corrupt without blocking.
func TestOpenRefusesNonRegular(t *testing.T) {
	q := newTestQueue(t)
	id := NewID(time.Now())
	if err := syscall.Mkfifo(filepath.Join(q.Root, DirMsg, id), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.OpenMessage(id); !errors.Is(err, ErrCorrupt) {
		t.Errorf("FIFO message: %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(q.Root, DirQueue, Deferred, id), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := q.ReadState(Deferred, id); !errors.Is(err, ErrCorrupt) {
		t.Errorf("FIFO state: %v", err)
	}
	linked := putMessage(t, q, Incoming)
	if err := os.Link(filepath.Join(q.Root, DirMsg, linked), filepath.Join(t.TempDir(), "x")); err == nil {
		if _, _, err := q.OpenMessage(linked); !errors.Is(err, ErrCorrupt) {
			t.Errorf("hard-linked message: %v", err)
		}
	}
}

// A claim is not fsync'd: should a crash leave the record both where it
// came from and in active/, Recover keeps the active one (the newer).
func TestRecoverStaleCopyOfAClaim(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	if _, err := q.Claim(id); err != nil {
		t.Fatal(err)
	}
	if err := q.WriteState(Active, id, &Delivery{Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	// The stale copy a lost rename would leave.
	if err := os.WriteFile(filepath.Join(q.Root, DirQueue, Incoming, id), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := q.Recover(func(string) bool { return false })
	if err != nil {
		t.Fatalf("Recover: %v (%v)", err, log)
	}
	mustState(t, q, id, Deferred)
	if _, err := os.Stat(filepath.Join(q.Root, DirQueue, Incoming, id)); !os.IsNotExist(err) {
		t.Errorf("stale incoming copy kept: %v", err)
	}
	d, err := q.ReadState(Deferred, id)
	if err != nil || d.Attempts != 1 {
		t.Errorf("record %+v, %v; want the active one (1 attempt)", d, err)
	}
}

// Pickup's batched path: an empty incoming state file, a first attempt
// written into it in place, both read back; a non-empty record is
// replaced atomically instead.
func TestEmptyStateAndFirstAttemptInPlace(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, "")
	if err := q.CreateEmptyState(Incoming, id); err != nil {
		t.Fatal(err)
	}
	if err := q.CreateEmptyState(Incoming, id); err == nil {
		t.Fatal("CreateEmptyState replaced an existing state file")
	}
	if d, err := q.ReadState(Incoming, id); err != nil || d.Attempts != 0 {
		t.Fatalf("empty record: %+v, %v", d, err)
	}
	if _, err := q.Claim(id); err != nil {
		t.Fatal(err)
	}
	if err := q.WriteFirstStateNoSync(Active, id, &Delivery{Attempts: 1, LastReply: "first"}); err != nil {
		t.Fatal(err)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if d, err := q.ReadState(Active, id); err != nil || d.Attempts != 1 || d.LastReply != "first" {
		t.Fatalf("first attempt: %+v, %v", d, err)
	}
	// Not empty any more: falls back to the atomic replacement.
	if err := q.WriteFirstStateNoSync(Active, id, &Delivery{Attempts: 2}); err != nil {
		t.Fatal(err)
	}
	if d, err := q.ReadState(Active, id); err != nil || d.Attempts != 2 || d.LastReply != "" {
		t.Fatalf("second write: %+v, %v", d, err)
	}
	if err := q.Done(id); err != nil {
		t.Fatal(err)
	}
	mustState(t, q, id, "")
	if q.HasMessage(id) {
		t.Error("Done left the message")
	}
}
