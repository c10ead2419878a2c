package pickup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// Concurrent stores share the group commit: every one returns its own
// queue ID, the queue is told of each exactly once, and only once its
// message and state file are in place.
func TestStoreGroupCommitConcurrent(t *testing.T) {
	e := newEnv(t, testConfig())
	var mu sync.Mutex
	told := map[string]int{}
	var early []string
	e.p.Enqueued = func(id string) {
		ok := e.q.HasMessage(id)
		if _, err := e.q.ReadState(spool.Incoming, id); err != nil {
			ok = false
		}
		mu.Lock()
		defer mu.Unlock()
		told[id]++
		if !ok {
			early = append(early, id)
		}
	}
	store := e.p.Store(0)
	const sessions, each = 16, 8
	ids := make(chan string, sessions*each)
	errs := make(chan error, sessions*each)
	var wg sync.WaitGroup
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				m := &spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}},
					Origin: spool.Origin{UID: os.Getuid(), Via: "smtp"}}
				id, err := store(m, strings.NewReader(fmt.Sprintf("Subject: s%d m%d\n\nbody\n", s, i)))
				if err != nil {
					errs <- err
					continue
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := map[string]bool{}
	for id := range ids {
		if got[id] {
			t.Errorf("queue ID %s returned twice", id)
		}
		got[id] = true
		if told[id] != 1 {
			t.Errorf("%s: the queue was told %d times", id, told[id])
		}
	}
	if len(got) != sessions*each {
		t.Errorf("%d stored, want %d", len(got), sessions*each)
	}
	if len(early) > 0 {
		t.Errorf("the queue was told of %v before their files were in place", early)
	}
	if inc, _ := e.q.List(spool.Incoming); len(inc) != sessions*each {
		t.Errorf("incoming holds %d, want %d", len(inc), sessions*each)
	}
}

// storeMsg is a message for Store from the caller's UID.
func storeMsg() *spool.Meta {
	return &spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}},
		Origin: spool.Origin{UID: os.Getuid(), Via: "smtp"}}
}

type storeResult struct {
	id  string
	err error
}

// waitFor polls cond under the committer's lock until it holds.
func waitFor(t *testing.T, c *committer, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// startSlowStore starts a Store whose message data comes through the
// returned pipe (a client still sending it) and waits until the
// committer counts it as under way; its result arrives on the channel.
func startSlowStore(t *testing.T, c *committer, store func(*spool.Meta, io.Reader) (string, error)) (*io.PipeWriter, <-chan storeResult) {
	t.Helper()
	pr, pw := io.Pipe()
	res := goStore(store, pr)
	waitFor(t, c, "the slow session is storing", func() bool { return c.storing == 1 })
	return pw, res
}

// goStore stores a message with data body in a goroutine of its own and
// returns where its answer comes.
func goStore(store func(*spool.Meta, io.Reader) (string, error), body io.Reader) <-chan storeResult {
	res := make(chan storeResult, 1)
	go func() {
		id, err := store(storeMsg(), body)
		res <- storeResult{id, err}
	}()
	return res
}

// recordSyncs makes the committer record each group's IDs before the
// real Sync of the queue (err, when not nil, fails every Sync instead).
func recordSyncs(e *env, err error) func() [][]string {
	var mu sync.Mutex
	var groups [][]string
	e.p.committer.sync = func(ids ...string) error {
		mu.Lock()
		groups = append(groups, append([]string(nil), ids...))
		mu.Unlock()
		if err != nil {
			return err
		}
		return e.q.SyncIDs(ids...)
	}
	return func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return groups
	}
}

// A session that commits while another is still storing its message
// (reading its data) does not get a Sync of its own: the group waits for
// the sibling to join, then one Sync covers both, and neither session has
// its answer before that Sync.
func TestStoreGroupWaitsForStoringSibling(t *testing.T) {
	e := newEnv(t, testConfig())
	c := &e.p.committer
	c.maxWait = time.Hour // only the sibling's joining ends the wait
	groups := recordSyncs(e, nil)
	store := e.p.Store(0)

	pw, slow := startSlowStore(t, c, store)

	fast := goStore(store, strings.NewReader("Subject: fast\n\nbody\n"))
	waitFor(t, c, "the group commit waits for the slow session", func() bool { return c.waiting })
	select {
	case r := <-fast:
		t.Fatalf("the fast session was answered (%v) before its group's Sync", r)
	default:
	}
	if g := groups(); len(g) != 0 {
		t.Fatalf("synced %v before the storing session joined", g)
	}

	fmt.Fprint(pw, "Subject: slow\n\nbody\n")
	pw.Close()
	rs, rf := <-slow, <-fast
	if rs.err != nil || rf.err != nil {
		t.Fatalf("slow: %v, fast: %v", rs.err, rf.err)
	}
	g := groups()
	if len(g) != 1 || len(g[0]) != 2 || !slices.Contains(g[0], rs.id) || !slices.Contains(g[0], rf.id) {
		t.Fatalf("Syncs %v, want one of both %s and %s", g, rf.id, rs.id)
	}
	for _, id := range []string{rs.id, rf.id} {
		if !e.q.HasMessage(id) {
			t.Errorf("%s answered stored but not queued", id)
		}
	}
}

// After groups of several messages, a group's Sync waits (boundedly) for
// as many members: the second session to commit joins the first one's
// group instead of syncing on its own.
func TestStoreGroupWaitsForExpectedMembers(t *testing.T) {
	e := newEnv(t, testConfig())
	c := &e.p.committer
	c.maxWait = time.Hour
	c.recent[0] = 2 // the last groups had two members
	groups := recordSyncs(e, nil)
	store := e.p.Store(0)
	res := make(chan storeResult, 2)
	send := func(subj string) {
		id, err := store(storeMsg(), strings.NewReader("Subject: "+subj+"\n\nbody\n"))
		res <- storeResult{id, err}
	}
	go send("first")
	waitFor(t, c, "the group commit waits for a second member", func() bool { return c.waiting })
	go send("second")
	a, b := <-res, <-res
	if a.err != nil || b.err != nil {
		t.Fatal(a.err, b.err)
	}
	if g := groups(); len(g) != 1 || len(g[0]) != 2 {
		t.Fatalf("Syncs %v, want one of both messages", g)
	}
}

// A lone session (no recent group had more than one member, no other
// store under way) is synced at once: the wait for siblings is not a
// delay every message pays. Nor do Stores that ended without joining a
// group (an error reading the data, a panic) leave anything to wait for.
func TestStoreGroupLoneSessionDoesNotWait(t *testing.T) {
	e := newEnv(t, testConfig())
	c := &e.p.committer
	c.maxWait = time.Hour
	store := e.p.Store(0)
	if _, err := store(storeMsg(), io.MultiReader(strings.NewReader("Subject: cut\n\nbo"), iotest.ErrReader(errors.New("connection reset")))); err == nil {
		t.Fatal("a message whose data could not be read was stored")
	}
	func() {
		defer func() { recover() }()
		store(storeMsg(), panicReader{})
	}()
	c.mu.Lock()
	if c.storing != 0 {
		t.Errorf("%d Stores counted as under way after they ended", c.storing)
	}
	c.mu.Unlock()
	for i := 0; i < 3; i++ {
		storeAtOnce(t, store, "a lone session waited for siblings that do not exist")
	}
}

// storeAtOnce stores a message through store and fails the test with
// stuck when the Store has not returned within 30 s (a group's wait that
// does not end, its bound set to an hour).
func storeAtOnce(t *testing.T, store func(*spool.Meta, io.Reader) (string, error), stuck string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := store(storeMsg(), strings.NewReader("Subject: lone\n\nbody\n"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal(stuck)
	}
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reading the data") }

// A group's failed Sync fails every member, the one that joined it late
// as much as the first: none is answered stored, none stays queued, and
// each has its log line.
func TestStoreGroupFailedSyncFailsEveryMember(t *testing.T) {
	e := newEnv(t, testConfig())
	c := &e.p.committer
	c.maxWait = time.Hour
	groups := recordSyncs(e, errors.New("fdatasync: input/output error"))
	store := e.p.Store(0)

	pw, slow := startSlowStore(t, c, store)
	fast := goStore(store, strings.NewReader("Subject: fast\n\nbody\n"))
	waitFor(t, c, "the group commit waits for the slow session", func() bool { return c.waiting })
	fmt.Fprint(pw, "Subject: slow\n\nbody\n")
	pw.Close()
	for _, r := range []storeResult{<-slow, <-fast} {
		if r.err == nil {
			t.Errorf("%s answered stored after its group's Sync failed", r.id)
		}
	}
	g := groups()
	if len(g) != 1 || len(g[0]) != 2 {
		t.Fatalf("Syncs %v, want one of both messages", g)
	}
	for _, id := range g[0] {
		if e.q.HasMessage(id) {
			t.Errorf("%s is still queued", id)
		}
		if !strings.Contains(e.log.String(), id) || strings.Count(e.log.String(), "cannot make the received message durable") != 2 {
			t.Errorf("log does not name %s as not durable:\n%s", id, e.log.String())
		}
	}
}

// A Store whose data reader panics once the message is being written
// into a segment (the session's server recovers from the panic) gives
// the segment back: the next message is written into the same segment.
// A writer nobody ended kept its segment busy for good: never written
// again, never sealed, never removed once its messages were delivered.
func TestStorePanicReleasesSegment(t *testing.T) {
	e := newEnv(t, testConfig())
	store := e.p.Store(0)
	first, err := store(storeMsg(), strings.NewReader("Subject: first\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { recover() }()
		store(storeMsg(), io.MultiReader(strings.NewReader("Subject: cut\n\nthe body "), panicReader{}))
		t.Fatal("the data reader did not panic")
	}()
	next, err := store(storeMsg(), strings.NewReader("Subject: next\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	p1, _, _, err1 := e.q.Section(first)
	p2, _, _, err2 := e.q.Section(next)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if p1 != p2 {
		t.Errorf("the message after the panic went into %s, not %s: the panicked Store kept its segment", p2, p1)
	}
}

// A Store under way that did not join within a group's wait (a client
// that sends its data slowly, or holds the DATA section open) is waited
// for once: later groups sync at once. Otherwise one idle connection in
// DATA made every later message wait the whole bound before its Sync.
func TestStoreGroupSlowSessionWaitedForOnce(t *testing.T) {
	e := newEnv(t, testConfig())
	c := &e.p.committer
	c.maxWait = 50 * time.Millisecond
	store := e.p.Store(0)

	pw, slow := startSlowStore(t, c, store)
	// The first group waits for it, up to its bound.
	if _, err := store(storeMsg(), strings.NewReader("Subject: first\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.maxWait = time.Hour // a wait from here on would not end
	c.mu.Unlock()
	for i := 0; i < 3; i++ {
		storeAtOnce(t, store, fmt.Sprintf("message %d waited again for the slow session", i+2))
	}
	fmt.Fprint(pw, "Subject: slow\n\nbody\n")
	pw.Close()
	if r := <-slow; r.err != nil {
		t.Fatal(r.err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.storing != 0 {
		t.Errorf("%d Stores counted as under way after they ended", c.storing)
	}
}
