package spool

// Sync makes the segments and the journal durable at the same time, so a
// power loss may leave an add line durable whose message's bytes are not.
// These tests build such crash images: the journal as the Sync wrote it,
// the segment as the disk may have kept it (zeros, stale bytes, cut
// short).

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// damage does to the bytes of queued message id in its segment what a
// power loss may do to bytes whose fdatasync had not returned.
func damage(t *testing.T, q *Queue, id, how string) {
	t.Helper()
	p, off, n, err := q.Section(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	switch how {
	case "zeros": // the file's size reached the disk, its blocks did not
		_, err = f.WriteAt(make([]byte, n), off)
	case "zero-block": // one block of it did not
		_, err = f.WriteAt(make([]byte, 4096), off+n-min(n, 4096))
	case "stale": // blocks of a file deleted before
		_, err = f.WriteAt(bytes.Repeat([]byte("stale bytes of another file\n"), int(n)/28+1)[:n], off)
	case "short": // the file's size did not reach the disk
		err = f.Truncate(off + n/2)
	case "missing":
		err = f.Truncate(off)
	default:
		t.Fatalf("no damage %q", how)
	}
	if err != nil {
		t.Fatal(err)
	}
}

var damages = []string{"zeros", "zero-block", "stale", "short", "missing"}

// The power went during the Sync of b: its add line reached the disk, its
// bytes did not. Nothing was acknowledged for b (its Sync had not
// returned): Recover drops it with a log line instead of keeping a
// message it cannot deliver, and keeps a, made durable by an earlier Sync.
func TestRecoverDropsMessageNotDurable(t *testing.T) {
	for _, how := range damages {
		t.Run(how, func(t *testing.T) {
			q := newTestQueue(t)
			a := putBody(t, q, Incoming, "first\n")
			if err := q.Sync(); err != nil {
				t.Fatal(err)
			}
			b := putBody(t, q, Incoming, "Subject: b\n\n"+strings.Repeat("second\n", 2000))
			if segOf(t, q, a) != segOf(t, q, b) {
				t.Fatal("b went to another segment")
			}
			if err := q.Sync(); err != nil {
				t.Fatal(err)
			}
			damage(t, q, b, how)
			n, log := reopen(t, q, nil)
			mustBody(t, n, a, "first\n")
			mustState(t, n, b, "")
			all := strings.Join(log, "\n")
			if !strings.Contains(all, "removed-not-durable id="+b+" state=incoming") {
				t.Errorf("no removed-not-durable line for %s:\n%s", b, all)
			}
			// Recover fdatasynced the segments and rewrote the journal:
			// its lines state every message durable, so the next start
			// reads none of them.
			if j := readJournalText(t, n); strings.Contains(j, `"dur":`) {
				t.Errorf("the journal Recover rewrote states a message not durable:\n%s", j)
			}
			// The journal no longer names it: the next start does not
			// find it again.
			if s, err := Snapshot(q.Root); err != nil || s[b].State != "" {
				t.Fatalf("the rewritten journal still has %s: %+v %v", b, s[b], err)
			}
		})
	}
}

// Bytes damaged below what a line states durable were acknowledged:
// Recover does not read them (it reads only what may not be durable) and
// keeps the message, which is found corrupt when read, as before.
func TestRecoverKeepsDamagedDurableMessage(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "first\n")
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	b := putBody(t, q, Incoming, "second\n") // its add line states a durable
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(readJournalText(t, q), `"dur":`) {
		t.Fatal("no add line states how much of its segment is durable")
	}
	damage(t, q, a, "zeros")
	n, log := reopen(t, q, nil)
	mustBody(t, n, b, "second\n")
	mustKeepDamaged(t, n, log, a)
}

func readJournalText(t *testing.T, q *Queue) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(q.Root, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// oldAddLine is an add line as a relayd that synced the segments before
// the journal wrote it: no "dur".
func oldAddLine(id string, e *entry) []byte {
	b := appendState(lineStart("add", id), e.st)
	b = appendLoc(b, e.seg, e.off, e.len)
	b = append(b, `,"uid":1234`...)
	return frame(appendRecord(b, e.d))
}

// A journal written by a relayd that made the segments durable before
// the journal (no "dur" in its lines) recovers as it did: every message
// it names is taken as durable, none is read at start, and one whose
// bytes are damaged is found corrupt when read, not dropped.
func TestRecoverJournalWithoutDurableSizes(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "first\n")
	b := putBody(t, q, Deferred, "second\n")
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	var j []byte
	q.mu.Lock()
	for _, id := range []string{a, b} {
		j = append(j, oldAddLine(id, q.entries[id])...)
	}
	q.mu.Unlock()
	q.Close()
	if err := os.WriteFile(filepath.Join(q.Root, JournalFile), j, 0o600); err != nil {
		t.Fatal(err)
	}
	damage(t, q, b, "zeros")
	n, log := reopen(t, q, nil)
	mustBody(t, n, a, "first\n")
	mustState(t, n, b, Deferred)
	if all := strings.Join(log, "\n"); strings.Contains(all, "removed") {
		t.Errorf("Recover removed a message of a journal without durable sizes:\n%s", all)
	}
	if m, _, err := n.OpenMessage(b); err == nil {
		m.Close()
		t.Fatal("damaged message opened without error")
	}
}

// The journal's fdatasync and the segment's are in flight at the same
// time: submitted together to the kernel (asynchronous I/O) in one
// io_submit. Where that is refused, they are made one after the other.
func TestSyncOverlapsFdatasyncs(t *testing.T) {
	t.Run("aio", func(t *testing.T) {
		q := newTestQueue(t)
		putMessage(t, q, Incoming)
		subs, files := aioSubmits.Load(), aioFiles.Load()
		if err := q.Sync(); err != nil {
			t.Fatal(err)
		}
		if q.aio.failed {
			t.Skip("no asynchronous I/O here (io_setup refused)")
		}
		if n, f := aioSubmits.Load()-subs, aioFiles.Load()-files; n != 1 || f < 2 {
			t.Fatalf("%d io_submit calls carrying %d fdatasyncs, want 1 carrying the segment's and the journal's (and queue/seg's, new)", n, f)
		}
	})
	t.Run("refused", func(t *testing.T) {
		q := newTestQueue(t)
		q.aio.failed = true // as where io_setup is refused
		a := putMessage(t, q, Incoming)
		subs := aioSubmits.Load()
		if err := q.Sync(); err != nil {
			t.Fatal(err)
		}
		if n := aioSubmits.Load() - subs; n != 0 {
			t.Fatalf("%d io_submit calls with asynchronous I/O refused", n)
		}
		n, _ := reopen(t, q, nil)
		mustState(t, n, a, Incoming)
	})
}

// A segment's fdatasync fails while the journal's, made at the same time,
// succeeds: the journal durably names the message the failure dropped in
// memory. Should the power go before the journal is rewritten, Recover
// finds the message's bytes not durable and drops it; its writer was
// told it was not stored.
func TestSyncFailureThenCrashBeforeRewrite(t *testing.T) {
	q := newTestQueue(t)
	a := putBody(t, q, Incoming, "first\n")
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	b := putMessage(t, q, Incoming)
	s := segOf(t, q, b)
	_, off, n, err := q.Section(b)
	if err != nil {
		t.Fatal(err)
	}
	real := s.f
	s.f = closedFile()
	if err := q.SyncIDs(b); err == nil {
		t.Fatal("a Sync whose segment fdatasync failed succeeded")
	}
	s.f = real
	if q.HasMessage(b) {
		t.Fatal("the failure did not drop the message")
	}
	// The crash image: the journal as synced (it names b), b's bytes
	// lost in the failed writeback.
	if snap, err := Snapshot(q.Root); err != nil || snap[b].State != Incoming {
		t.Fatalf("the journal does not name %s: %+v %v", b, snap[b], err)
	}
	if _, err := real.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
	nq, log := reopen(t, q, nil)
	mustBody(t, nq, a, "first\n")
	mustState(t, nq, b, "")
	if all := strings.Join(log, "\n"); !strings.Contains(all, "removed-not-durable id="+b) {
		t.Errorf("no removed-not-durable line for %s:\n%s", b, all)
	}
}

// Once a Sync has made the last messages durable, Maintain (every 2 s in
// relayd) and Close state so in the journal: a message damaged after
// that (a flipped bit, tampering while relayd is stopped) is not taken
// for one a power cut interrupted; it is kept, and found corrupt when
// read (quarantined by relayd), as before.
func TestDurableStatedAfterSync(t *testing.T) {
	for _, how := range []string{"Maintain", "Close"} {
		t.Run(how, func(t *testing.T) {
			q := newTestQueue(t)
			a := putBody(t, q, Incoming, "first\n")
			if err := q.Sync(); err != nil {
				t.Fatal(err)
			}
			if how == "Maintain" {
				if err := q.Maintain(); err != nil {
					t.Fatal(err)
				}
				if err := q.Sync(); err != nil {
					t.Fatal(err)
				}
			} else {
				q.Close()
			}
			damage(t, q, a, "zero-block")
			n, log := reopen(t, q, nil)
			mustKeepDamaged(t, n, log, a)
		})
	}
}

// Recover reads whole only the messages no line states durable: after a
// crash, those of the last Syncs; after a clean stop, none. Never the
// whole queue.
func TestRecoverReadsOnlyWhatMayNotBeDurable(t *testing.T) {
	q := newTestQueue(t)
	for range 20 {
		for range 10 {
			putMessage(t, q, Incoming)
		}
		if err := q.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	before := wholeReads.Load()
	n, _ := reopen(t, q, nil) // a crash after the last Sync
	if r := wholeReads.Load() - before; r == 0 || r > 10 {
		t.Fatalf("Recover after a crash read %d messages whole, want those of the last Sync (10)", r)
	}
	for range 10 {
		putMessage(t, n, Incoming)
	}
	n.Close()
	before = wholeReads.Load()
	openTestQueue(t, q.Root).Recover(func(string) bool { return false })
	if r := wholeReads.Load() - before; r != 0 {
		t.Fatalf("Recover after a clean stop read %d messages whole, want 0", r)
	}
}

// mustKeepDamaged checks what Recover did with message a, whose bytes a
// journal line states durable but which were damaged after: a stays
// Incoming, Recover's log (log) does not report it, and opening it fails.
func mustKeepDamaged(t *testing.T, n *Queue, log []string, a string) {
	t.Helper()
	mustState(t, n, a, Incoming)
	if all := strings.Join(log, "\n"); strings.Contains(all, a) {
		t.Errorf("Recover reported %s, whose bytes a line states durable:\n%s", a, all)
	}
	if m, _, err := n.OpenMessage(a); err == nil {
		m.Close()
		t.Fatal("damaged message opened without error")
	}
}
