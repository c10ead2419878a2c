package spool

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// smallSpool prepares a spool on a tmpfs of size (root only).
func smallSpool(t *testing.T, size string) (dir, root string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir = t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	root = filepath.Join(dir, "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	return dir, root
}

// fillQueue queues 1 KiB messages until the file system is full and
// returns their IDs.
func fillQueue(t *testing.T, q *Queue) []string {
	t.Helper()
	body := "Subject: x\n\n" + strings.Repeat(strings.Repeat("b", 63)+"\n", 16)
	var ids []string
	for {
		id := NewID(time.Now())
		w, err := q.NewMessage(testMeta(id))
		if err == nil {
			if _, err = w.Write([]byte(body)); err == nil {
				err = w.Commit()
			}
			w.Abort()
		}
		if err == nil && len(ids)%256 == 255 {
			err = q.Sync()
		}
		if err != nil {
			if !IsFull(err) {
				t.Fatalf("queueing message %d: %v", len(ids), err)
			}
			break
		}
		ids = append(ids, id)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func freeBytes(t *testing.T, dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// A queue of thousands of small messages fills the file system: every one
// of them can still be delivered (claimed, its attempt recorded when there
// is room, synced before sending as the workers do, done), because the
// space of the messages delivered comes back as they go, long before the
// segment that holds them empties. It used to run out of journal space
// after a few thousand transitions, and nothing came back: a stall.
func TestFullSpoolDrainsSmallMessages(t *testing.T) {
	drainFullSpool(t, nil)
}

// The same with another writer on the file system (sendmail callers, say)
// that takes every block left free after each batch: the journal takes
// back what punching frees before it can, a block at a time when a whole
// reserve is not there, so the deliveries still all go through.
func TestFullSpoolDrainsAgainstAFiller(t *testing.T) {
	drainFullSpool(t, func(dir string) func() {
		f, err := os.Create(filepath.Join(dir, "filler"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		chunk := make([]byte, 4096)
		return func() {
			for {
				if _, err := f.Write(chunk); err != nil {
					return
				}
			}
		}
	})
}

// drainFullSpool fills a 12 MiB spool with 1 KiB messages and delivers
// them all, as the workers do; filler, when set, returns what to run
// after each batch.
func drainFullSpool(t *testing.T, filler func(dir string) func()) {
	dir, root := smallSpool(t, "12m")
	q := openTestQueue(t, root)
	ids := fillQueue(t, q)
	if len(ids) < 5000 {
		t.Fatalf("only %d messages fit on the file system: the test needs more than the journal's reserve lasts", len(ids))
	}
	if f := freeBytes(t, dir); f > 64<<10 {
		t.Fatalf("%d bytes still free after filling", f)
	}
	fill := func() {}
	if filler != nil {
		fill = filler(dir)
	}
	rec := &Delivery{Attempts: 1, LastReply: "250 ok", Upstream: "smtp.example.org"}
	for i := 0; i < len(ids); i += 64 {
		batch := ids[i:min(i+64, len(ids))]
		for _, id := range batch {
			if _, err := q.Claim(id); err != nil {
				t.Fatalf("claim of message %d of %d on the full spool: %v (%d bytes punched)", i, len(ids), err, q.Punched())
			}
			if err := q.WriteStateNoSync(Active, id, rec); err != nil && !IsFull(err) {
				t.Fatal(err)
			}
		}
		if err := q.Sync(); err != nil && !IsFull(err) {
			t.Fatal(err)
		}
		for _, id := range batch {
			if err := q.Done(id); err != nil {
				t.Fatalf("done of message %d of %d on the full spool: %v (%d bytes punched)", i, len(ids), err, q.Punched())
			}
		}
		fill()
	}
	if err := q.Maintain(); err != nil && filler == nil {
		t.Fatalf("Maintain: %v", err)
	}
	if c := q.Counts(); c[Incoming]+c[Active] != 0 {
		t.Fatalf("left in the queue: %v", c)
	}
	if filler != nil {
		return
	}
	if f := freeBytes(t, dir); f < 6<<20 {
		t.Errorf("only %d bytes free after the queue drained", f)
	}
	// New messages fit again.
	mustBody(t, q, putBody(t, q, Incoming, "after\n"), "after\n")
}

// Only the whole blocks that removed messages filled are punched, after
// the Sync that makes their removal durable, never under an open reader;
// the messages around them read back intact, before and after a restart,
// and Recover punches the gaps left by an earlier run.
func TestPunchDeadRanges(t *testing.T) {
	_, root := smallSpool(t, "16m")
	q := openTestQueue(t, root)
	body := strings.Repeat("x", 3000) + "\n"
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, putBody(t, q, Incoming, body))
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	segBlocks := func() int64 {
		path, _, _, err := q.Section(ids[0])
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	full := segBlocks()
	// Messages 10 to 19 go; 15 is open by a reader meanwhile.
	open, _, err := q.OpenMessage(ids[15])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[10:20] {
		if _, err := q.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	// Delete synced: punched by Maintain, except around message 15.
	if err := q.Maintain(); err != nil {
		t.Fatal(err)
	}
	p1 := q.Punched()
	if p1 == 0 || segBlocks() >= full {
		t.Fatalf("nothing punched after the removals were synced (%d bytes punched)", p1)
	}
	buf := make([]byte, open.Size())
	if _, err := open.ReadAt(buf, 0); err != nil || !strings.Contains(string(buf), body) {
		t.Fatalf("the open reader of a removed message lost its bytes (%v)", err)
	}
	open.Close()
	if err := q.Maintain(); err != nil {
		t.Fatal(err)
	}
	if q.Punched() <= p1 {
		t.Errorf("the range of the reader's message was not punched once it closed (%d, %d)", p1, q.Punched())
	}
	// Ten messages of about 3.3 KB: at most their bytes, at least the
	// whole blocks inside the run less one each side.
	if p := q.Punched(); p > 10*3400 || p < 10*3000-2*4096 {
		t.Errorf("%d bytes punched for 10 messages of ~3.3 KB", p)
	}
	for _, id := range append(append([]string{}, ids[:10]...), ids[20:]...) {
		mustBody(t, q, id, body)
	}
	// Not yet synced: a Done's range stays.
	if _, err := q.Claim(ids[30]); err != nil {
		t.Fatal(err)
	}
	p2 := q.Punched()
	if err := q.Done(ids[30]); err != nil {
		t.Fatal(err)
	}
	q.punchDead(q.synced)
	if q.Punched() != p2 {
		t.Fatal("a range punched before the Sync that makes its removal durable")
	}
	// A restart: the gaps (10-19, 30) are punched again harmlessly, the
	// others still read back.
	n, _ := reopen(t, q, nil)
	for _, id := range append(append(append([]string{}, ids[:10]...), ids[20:30]...), ids[31:]...) {
		mustBody(t, n, id, body)
	}
	if n.Punched() < 3000 {
		t.Errorf("Recover punched %d bytes: the gap of the message done before the restart was left", n.Punched())
	}
}

// The dead spans of a segment merge, and what is newly wholly dead is
// returned cut to blocks.
func TestMarkDead(t *testing.T) {
	s := &segment{}
	for _, c := range []struct {
		x    span
		want span
	}{
		{span{100, 5000}, span{4096, 4096}},  // no whole block
		{span{5000, 9000}, span{4096, 8192}}, // 100..9000 now: block 1
		{span{20000, 30000}, span{20480, 28672}},
		{span{9000, 20000}, span{8192, 20480}}, // joins both: blocks 2..4
		{span{0, 100}, span{0, 4096}},          // block 0
		{span{40000, 41000}, span{}},
	} {
		got := s.markDead(c.x, 4096)
		if got.off >= got.end {
			got = span{}
		}
		if c.want.off >= c.want.end {
			c.want = span{}
		}
		if got != c.want {
			t.Errorf("markDead(%v) = %v, want %v (dead %v)", c.x, got, c.want, s.deadSpans)
		}
	}
	if want := []span{{0, 30000}, {40000, 41000}}; len(s.deadSpans) != 2 || s.deadSpans[0] != want[0] || s.deadSpans[1] != want[1] {
		t.Errorf("dead spans %v, want %v", s.deadSpans, want)
	}
}

// When Recover cannot rewrite the journal (no space for journal.new on a
// full disk), what it dropped in memory only — a message whose maildrop
// file is still there — is still named by the journal as it is, and the
// next start replays that line again: its bytes are not dead and stay,
// while the real gaps around it are punched.
func TestRecoverPutOffKeepsWhatTheJournalNames(t *testing.T) {
	q := newTestQueue(t)
	big := "Subject: x\n\n" + strings.Repeat(strings.Repeat("y", 99)+"\n", 200)
	gone := putBody(t, q, Incoming, big)
	x := putBody(t, q, Incoming, big)
	z := putBody(t, q, Incoming, big)
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Delete(gone); err != nil {
		t.Fatal(err)
	}
	blockJournalRewrite(t, q.Root)
	// relayd starts again with maildrop/<x> still there: Recover drops x
	// in memory, and its rewrite of the journal is put off.
	n, log := reopen(t, q, func(id string) bool { return id == x })
	if !strings.Contains(strings.Join(log, "\n"), "journal-compaction-put-off") {
		t.Fatalf("the rewrite was not put off: %q", log)
	}
	mustState(t, n, x, "")
	if !n.noPunch && n.Punched() < 8192 {
		t.Errorf("Recover punched %d bytes: the gap of the message deleted before the restart was left", n.Punched())
	}
	es, _, err := readJournal(q.Root)
	if err != nil || es[x] == nil {
		t.Fatalf("the journal as it is no longer names %s (%v)", x, err)
	}
	// The next start, the maildrop file gone, replays x's line: its
	// bytes must be there.
	n2, _ := reopen(t, n, nil)
	mustBody(t, n2, x, big)
	mustBody(t, n2, z, big)
}
