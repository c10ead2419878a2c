package spool

// relayd's queue at rest: a state journal and message segments.
//
//	maildrop/<id> ──pickup──▶ add (incoming, or held/deferred by the policy)
//	incoming ─Claim─▶ active ─Done─▶ del
//	                        ├─Defer─▶ deferred ─Claim─▶ active ...
//	                        └─Fail──▶ failed   (kept: a failed bounce)
//	incoming|deferred ─Hold─▶ held ─Release─▶ incoming
//	failed ─Release─▶ incoming
//	active ─Requeue─▶ incoming|deferred (a delivery put back, not made)
//	any state but active ─Delete─▶ del
//	anything unreadable ─Quarantine─▶ quarantine/<id> (a copy, kept, never deleted)
//
// Messages are appended to segment files (queue/seg/<16 hex digits>), each
// a concatenation of messages in the maildrop format (journal.go has the
// journal, segment.go the segments). The state of every message and its
// mutable delivery record (Delivery) live in memory and in the state
// journal (queue/journal): each transition appends one line. So relayd
// creates no file per message or per state: a file is created once per
// segment (64 MiB of mail), and removed when none of its messages is left.
//
// Durability: appends are plain writes. Sync makes every append made
// before it durable (fdatasync of the segments written and of the
// journal, at the same time: an add line durable whose message's bytes
// are not was never acknowledged, and Recover drops it), for all its
// concurrent callers at once (group commit). Each
// transition says whether it Syncs and why: only what would lose or
// resurrect-for-ever a message needs it; a duplicate is allowed. Recover
// moves what was active back to incoming/deferred; the attempt was
// recorded before dialing, so an interrupted delivery is retried on its
// normal schedule, never in a hot loop.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// States of a queued message.
const (
	Incoming   = "incoming"
	Active     = "active"
	Deferred   = "deferred"
	Held       = "held"
	Failed     = "failed"
	Quarantine = "quarantine"
)

// States lists every state (the journal stores a state by its name).
var States = []string{Incoming, Active, Deferred, Held, Failed}

const (
	stIncoming uint8 = iota
	stActive
	stDeferred
	stHeld
	stFailed
)

// ErrNotFound means no message has that ID in the states asked for.
var ErrNotFound = errors.New("no such message in the queue")

// Delivery is the mutable delivery record of a queued message.
type Delivery struct {
	Attempts  int       `json:"attempts"`
	First     time.Time `json:"first_attempt,omitzero"`
	Last      time.Time `json:"last_attempt,omitzero"`
	Next      time.Time `json:"next_attempt,omitzero"`
	LastReply string    `json:"last_reply,omitempty"`
	Upstream  string    `json:"upstream,omitempty"`
	// Sent lists recipients the upstream accepted; they are never retried.
	Sent []string `json:"sent,omitempty"`
	// Failed lists recipients refused permanently (or expired), with the
	// reply; they are not retried either.
	Failed []RcptFailure `json:"failed,omitempty"`
	// Bounces lists the queue IDs of the DSNs sent for this message.
	Bounces []string `json:"bounces,omitempty"`
	// DelayNotice is the queue ID of the "delayed" DSN sent for this
	// message: at most one per message, across restarts.
	DelayNotice string `json:"delay_notice,omitempty"`
	// Reason says why the message is in its state (held by whom, failed why).
	Reason string `json:"reason,omitempty"`
	// Paced: the per-account policy deferred it (action "defer") until
	// Next, and it has not been tried since; a user's flush leaves it to
	// that pace. Cleared by its first attempt.
	Paced bool `json:"paced,omitempty"`
}

// RcptFailure is one permanently failed recipient.
type RcptFailure struct {
	Rcpt  string `json:"rcpt"`
	Reply string `json:"reply"`
	Cause string `json:"cause,omitempty"` // in plain words
	Fix   string `json:"fix,omitempty"`   // what to change, when known
	// Status is the RFC 3463 status for the DSN when there is no upstream
	// reply to take it from (a message refused before sending).
	Status string `json:"status,omitempty"`
}

// entry is one queued message in memory (kept small: 100,000 of them fit
// in a few MB).
type entry struct {
	seg uint64 // segment number
	off int64  // offset of the message (its header) in the segment
	len int64  // length of the message with its header
	d   []byte // JSON of the delivery record; nil when empty
	uid uint32 // the caller's UID (from the message's header)
	st  uint8  // index in States
}

// stateSet is the IDs in one state, sorted: a sorted slice that may hold
// IDs no longer in the state (checked against the entries), compacted when
// those are many. IDs sort by arrival and mostly arrive in order, so an
// insertion is mostly an append.
type stateSet struct {
	ids []string
	n   int // IDs really in the state
}

func (s *stateSet) add(id string) {
	s.n++
	if k := len(s.ids); k == 0 || s.ids[k-1] < id {
		s.ids = append(s.ids, id)
		return
	}
	i := sort.SearchStrings(s.ids, id)
	if i < len(s.ids) && s.ids[i] == id {
		return
	}
	s.ids = append(s.ids, "")
	copy(s.ids[i+1:], s.ids[i:])
	s.ids[i] = id
}

// stateUID keys the count of one caller's messages in one state.
type stateUID struct {
	uid uint32
	st  uint8
}

// enterLocked puts id (entry e) in its state's set and count (q.mu held).
func (q *Queue) enterLocked(id string, e *entry) {
	q.sets[e.st].add(id)
	q.byUID[stateUID{e.uid, e.st}]++
}

// leaveLocked takes e out of its state's set and count (q.mu held).
func (q *Queue) leaveLocked(e *entry) {
	k := stateUID{e.uid, e.st}
	if q.byUID[k]--; q.byUID[k] <= 0 {
		delete(q.byUID, k)
	}
	q.setRemove(e.st)
}

// A state's set drops its stale IDs once it holds more than setCompact
// of them and more than twice the IDs really in the state: List walks
// them all, and the scheduler lists incoming after every job while mail
// comes in a few messages at a time (a bound of 1024 had it walk hundreds
// of stale IDs for 2 live ones). Dropping them walks the set once per
// (at least) half its length in removals.
const setCompact = 16

func (q *Queue) setRemove(st uint8) {
	s := &q.sets[st]
	s.n--
	if len(s.ids) > setCompact && len(s.ids) > 2*s.n {
		out := s.ids[:0]
		for _, id := range s.ids {
			if e := q.entries[id]; e != nil && e.st == st {
				out = append(out, id)
			}
		}
		clear(s.ids[len(out):])
		s.ids = out
	}
}

// Queue is relayd's open queue: the journal, the segments, and the
// queue's state in memory. Its methods are safe for concurrent use.
type Queue struct {
	Root string // the spool root

	qdir, segdir, tmpdir, quardir *os.File

	mu       sync.Mutex // everything below, and appends to the journal
	entries  map[string]*entry
	sets     [5]stateSet
	byUID    map[stateUID]int  // messages per caller's UID and state (CountOf)
	dbytes   int64             // the delivery records' JSON bytes (the journal's live size)
	pol      map[string][]byte // the policy's state by account (see AppendPolicy)
	pbytes   int64             // their JSON bytes
	segs     map[uint64]*segment
	idle     []*segment // open segments no writer holds
	nextSeg  uint64
	dying    []*segment // without a live message: unlinked after a covering Sync
	jf       *os.File   // the journal, opened for appending (pwrite at jsize, the end of its lines)
	jsize    int64
	jalloc   int64  // the end of its zero tail, the file's size (see journalReserve)
	jbroken  bool   // an append failed and could not be undone (see appendLocked)
	seq      uint64 // appends made (journal lines and segment data)
	segDirty bool   // a segment was created since the last Sync
	rewrite  bool   // the journal must be rewritten before Sync reports success
	replayed []string
	damaged  bool                // replay skipped lines (see Recover)
	durable  map[uint64]int64    // per segment, what replay found stated durable, until Recover
	dropped  map[string]struct{} // messages a failed Sync dropped, until SyncIDs reports them
	gone     []goneSpan          // ranges of messages removed, until a Sync covers them (holes.go)
	blk      int64               // the unit of punching (holes.go)
	noPunch  bool                // the file system cannot punch holes
	punched  int64               // bytes punched out of segments

	syncMu  sync.Mutex // one Sync at a time; the fields below
	synced  uint64     // every append before this one is durable
	failLo  uint64     // the appends (failLo, failHi] were in a failed Sync
	failHi  uint64
	failErr error
	// failEnd is syncEnds once the failed Sync ended: its error is for
	// the callers that were waiting when it ended (syncEnds lower when
	// they came), not for one that comes later to try again.
	failEnd uint64
	putOff  error // a journal compaction that failed (and was not needed for durability)
	jsynced int64 // the journal's size at the last Sync that made it durable (see holdP)
	aio     aio   // the asynchronous I/O context of Sync's fdatasyncs (aio.go)

	// syncDone (q.syncMu) is closed and forgotten when a Sync ends, for
	// SyncWithin.
	syncDone chan struct{}
	// syncEnds counts the Syncs ended (written under q.syncMu).
	syncEnds atomic.Uint64

	// Now is the clock of segment compaction (time.Now when nil).
	Now func() time.Time
}

// OpenQueue opens the queue of the spool at root (its directories must
// exist: see Prepare), replays the journal and opens the segments. Call
// Recover next, before anything else.
func OpenQueue(root string) (*Queue, error) {
	q := &Queue{Root: root, entries: map[string]*entry{}, byUID: map[stateUID]int{}, pol: map[string][]byte{}, segs: map[uint64]*segment{}, nextSeg: 1}
	var err error
	for _, d := range []struct {
		f   **os.File
		rel string
	}{{&q.qdir, DirQueue}, {&q.segdir, DirSeg}, {&q.tmpdir, DirTmp}, {&q.quardir, DirQuarantine}} {
		if *d.f, err = OpenDir(root, d.rel); err != nil {
			q.Close()
			return nil, err
		}
	}
	q.blk = punchBlock
	var sfs unix.Statfs_t
	if unix.Fstatfs(int(q.segdir.Fd()), &sfs) == nil && sfs.Bsize > punchBlock {
		q.blk = int64(sfs.Bsize)
	}
	if err := q.openSegments(); err != nil {
		q.Close()
		return nil, err
	}
	if err := q.openJournal(); err != nil {
		q.Close()
		return nil, err
	}
	for id, e := range q.entries {
		q.enterLocked(id, e)
		q.dbytes += int64(len(e.d))
		if s := q.segs[e.seg]; s != nil {
			s.live++
			s.liveBytes += e.len
		}
	}
	for _, s := range q.sets {
		sort.Strings(s.ids)
	}
	for _, p := range q.pol {
		q.pbytes += int64(len(p))
	}
	return q, nil
}

// openJournal replays queue/journal and opens it for appending, cut back
// to its last complete line when its end is torn (a zero tail is kept).
func (q *Queue) openJournal() error {
	path := filepath.Join(q.Root, JournalFile)
	f, err := openJournalAt(int(q.qdir.Fd()), "journal", path, unix.O_RDWR|unix.O_CREAT)
	if err != nil {
		return err
	}
	res, err := replay(f, q.entries, q.pol)
	if err != nil {
		f.Close()
		return fmt.Errorf("spool: reading %s: %w", path, err)
	}
	for _, b := range res.bad {
		q.replayed = append(q.replayed, fmt.Sprintf("journal-line-skipped file=%s problem=%q", path, b))
	}
	q.damaged = len(res.bad) > 0
	// Beyond the last complete line: zeros only (the zero tail: kept)
	// or a torn line (cut off with whatever zeros follow it).
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	end := st.Size
	if res.tail {
		end = res.good
		q.replayed = append(q.replayed, fmt.Sprintf("journal-torn-tail file=%s offset=%d", path, res.good))
		if err := f.Truncate(res.good); err != nil {
			f.Close()
			return fmt.Errorf("spool: cutting the torn end of %s: %w", path, err)
		}
	}
	q.jf, q.jsize, q.jalloc = f, res.good, max(end, res.good)
	q.durable = res.dur
	// A segment removed while lines about it are still in the journal
	// (until its next rewrite) must not come back under its number with
	// other messages' bytes.
	if res.seg >= q.nextSeg && res.seg < 1<<63 {
		q.nextSeg = res.seg + 1
	}
	q.reserveLocked()
	return nil
}

// The journal keeps journalReserve bytes of zeros written beyond the end
// of its lines (its zero tail), renewed when less than journalSlack is
// left: lines are written over the zeros (pwrite at jsize), into blocks
// that are allocated, initialised and inside the file's size, so that
// the fdatasync of a Sync writes those data blocks only, not the inode
// nor the file system's block bitmap (measured on ext4, BenchmarkCommitSync:
// about 60% of the CPU and of the time of a Sync of growing files). Replay
// takes zeros where a line would start, with nothing after them, for the
// journal's end. Where the zeros cannot be written (a full file system)
// lines are appended past them, growing the file, as without a tail.
//
// The zero tail is also the journal's reserve on a full file system:
// written over, its blocks need no new space. Not so on a copy-on-write
// file system (btrfs, for files not marked NOCOW): a write over the zeros
// takes new blocks, so there the zero tail is no reserve, and on a full
// file system the lines it would have taken are refused (ENOSPC) until
// space is freed; a spool whose queue/ and queue/seg/ are NOCOW (chattr +C
// before relayd creates its files, which inherit it) is written in place.
// Of it, the last
// journalFloor bytes are for critical lines
// only (mv and del lines, which carry no record, and the pol line of an
// operator's freeze or thaw: AppendPolicy with critical set): on a full
// spool file system new messages, new delivery records and the policy's
// counters are refused, but thousands of transitions (a delivery's Defer
// or Done, an operator's hold or delete) still go through, as the renames
// of a directory-per-state queue did; a record that could not be written
// is kept in memory by the delivery engine (pkg/queue) meanwhile.
const (
	journalReserve = 1 << 20
	journalSlack   = 512 << 10
	journalFloor   = 128 << 10
)

// reserveLocked renews the journal's zero tail up to journalReserve
// beyond its lines (q.mu held). When the whole of it cannot be had (a
// full file system) it takes what there is, down to a page, after
// cutting off the zero tails of the segments no writer holds (the
// journal comes first: see journalFloor): after space has been freed
// (punchDead), the journal takes it back first, so that the transitions
// that free more keep finding room.
func (q *Queue) reserveLocked() {
	want := q.jsize + journalReserve
	at := max(q.jalloc, q.jsize)
	if at >= want {
		return
	}
	n, err := writeZeros(q.jf, at, want-at)
	at += n
	if err != nil && q.trimIdleLocked() {
		n, _ = writeZeros(q.jf, at, want-at)
		at += n
	}
	q.jalloc = at
}

// journalShortLocked reports whether the journal's reserve is short: it
// could not be renewed, the file system is full (q.mu held).
func (q *Queue) journalShortLocked() bool {
	return q.jsize+journalSlack > q.jalloc
}

// zeroBlock is what zero tails are written from (a variable in the
// program's zeroed data: nothing is run at sendmail's initialisation).
var zeroBlock [128 << 10]byte

// writeZeros writes n zero bytes into f at off and returns how many it
// wrote before an error (a full file system takes what there is).
func writeZeros(f *os.File, off, n int64) (int64, error) {
	var done int64
	for done < n {
		k, err := f.WriteAt(zeroBlock[:min(n-done, int64(len(zeroBlock)))], off+done)
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Close syncs what is pending and releases the files. The segments'
// zero tails are cut off (not synced: zeros left by a crash are
// harmless). The journal's is kept: it is the journal's reserve (see
// journalReserve), and a relayd stopped and started again on a full file
// system (the administrator's first move) would find no room to write it
// again, and could record no delivery, the transitions that free the
// space. An older relayd takes it for a torn tail and cuts it off,
// losing nothing.
func (q *Queue) Close() {
	if q.jf != nil && q.Sync() == nil {
		// The last messages' bytes are durable: the journal says so,
		// and the next start has none of them to check.
		q.mu.Lock()
		wrote := q.stateDurableLocked()
		q.mu.Unlock()
		if wrote {
			q.Sync()
		}
	}
	// syncMu is held through the teardown: a Sync running meanwhile (a
	// caller that did not wait for Close) uses the files' descriptors
	// after taking them under q.mu, and would set up a new asynchronous
	// I/O context after this one is destroyed. Once jf is nil, a Sync
	// finds the queue closed.
	q.syncMu.Lock()
	defer q.syncMu.Unlock()
	q.aio.close()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range q.segs {
		if !s.busy {
			s.trimLocked()
		}
		s.f.Close()
	}
	q.segs = map[uint64]*segment{}
	q.idle = nil
	for _, f := range []*os.File{q.jf, q.qdir, q.segdir, q.tmpdir, q.quardir} {
		if f != nil {
			f.Close()
		}
	}
	q.jf = nil
}

// appendLocked appends one line to the journal (q.mu held). A failed
// append is cut off again, so that the next line does not join a partial
// one; when even that fails, the next line starts with a newline (replay
// skips the garbage as one bad line) and the journal is rewritten at the
// next Sync.
//
// A line that is not critical (a new message, a record, the policy's
// counters) may not eat into the reserve's floor (see journalReserve).
func (q *Queue) appendLocked(line []byte, critical bool) error {
	if q.jf == nil {
		return errors.New("spool: the queue is closed")
	}
	if !critical && q.jsize+int64(len(line))+journalFloor > q.jalloc {
		if q.reserveLocked(); q.jsize+int64(len(line))+journalFloor > q.jalloc {
			return fmt.Errorf("spool: appending to %s: %w (the rest is kept for transitions)", q.jf.Name(), unix.ENOSPC)
		}
	}
	if q.jbroken {
		line = append([]byte{'\n'}, line...)
	}
	n, err := q.jf.WriteAt(line, q.jsize)
	if err != nil {
		if terr := q.unwriteLocked(q.jsize, q.jsize+int64(n)); terr != nil {
			q.jbroken = true
			q.rewrite = true
			q.jsize += int64(n)
		}
		return fmt.Errorf("spool: appending to %s: %w", q.jf.Name(), err)
	}
	q.jbroken = false
	q.jsize += int64(n)
	q.seq++
	if q.journalShortLocked() {
		q.reserveLocked()
	}
	return nil
}

// unwriteLocked gives the journal's bytes [from, to) of a failed append
// back (q.mu held).
func (q *Queue) unwriteLocked(from, to int64) error {
	return unwrite(q.jf, q.jalloc, from, to)
}

// unwrite gives back the bytes [from, to) written into f, whose zero
// tail ends at alloc (the journal's, or a segment's): zeros again within
// the tail, cut off beyond it.
func unwrite(f *os.File, alloc, from, to int64) error {
	if to > alloc {
		if err := f.Truncate(max(from, alloc)); err != nil {
			return err
		}
	}
	if z := min(to, alloc) - from; z > 0 {
		_, err := writeZeros(f, from, z)
		return err
	}
	return nil
}

// dropLocked forgets entry e of id (its del line is the caller's).
func (q *Queue) dropLocked(id string, e *entry) {
	delete(q.entries, id)
	q.leaveLocked(e)
	q.dbytes -= int64(len(e.d))
	if s := q.segs[e.seg]; s != nil {
		s.live--
		s.liveBytes -= e.len
		q.checkDead(s)
		q.noteGoneLocked(s, e.off, e.len)
	}
}

// setStateLocked moves e (of id) to state st with record d.
func (q *Queue) setStateLocked(id string, e *entry, st uint8, d []byte) {
	q.dbytes += int64(len(d) - len(e.d))
	e.d = d
	if e.st != st {
		q.leaveLocked(e)
		e.st = st
		q.enterLocked(id, e)
	}
}

func stateNames(from []uint8) string {
	var n []string
	for _, s := range from {
		n = append(n, States[s])
	}
	return strings.Join(n, " or ")
}

// move changes the state of id from one of from to to, keeping its
// record, and Syncs when sync is set. It returns the state it was in.
func (q *Queue) move(sync bool, id string, to uint8, from ...uint8) (string, error) {
	q.mu.Lock()
	e := q.entries[id]
	if e == nil || bytes.IndexByte(from, e.st) < 0 {
		q.mu.Unlock()
		return "", fmt.Errorf("%s (in %s): %w", id, stateNames(from), ErrNotFound)
	}
	prev := States[e.st]
	if err := q.appendLocked(mvLine(id, to), true); err != nil {
		q.mu.Unlock()
		return "", err
	}
	q.setStateLocked(id, e, to, e.d)
	q.mu.Unlock()
	if sync {
		return prev, q.Sync()
	}
	return prev, nil
}

// Locate returns the state of id, or ErrNotFound.
func (q *Queue) Locate(id string) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.entries[id]; e != nil {
		return States[e.st], nil
	}
	return "", fmt.Errorf("%s: %w", id, ErrNotFound)
}

// HasMessage reports whether id is queued (in any state).
func (q *Queue) HasMessage(id string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.entries[id] != nil
}

// UID returns the caller's UID recorded with queued message id.
func (q *Queue) UID(id string) (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.entries[id]; e != nil {
		return int(e.uid), true
	}
	return 0, false
}

// List returns the IDs in a state, sorted (that is, by arrival).
func (q *Queue) List(state string) ([]string, error) {
	st := stateIndex(state)
	if st < 0 {
		return nil, fmt.Errorf("spool: no state %q", state)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	s := &q.sets[st]
	out := make([]string, 0, s.n)
	for _, id := range s.ids {
		if e := q.entries[id]; e != nil && e.st == uint8(st) {
			out = append(out, id)
		}
	}
	return out, nil
}

// CountOf returns how many messages of uid (the caller's UID recorded
// with them) are in state. The count is kept with the state sets, so
// that pickup's max_held check per held message does not walk the held
// queue.
func (q *Queue) CountOf(state string, uid int) int {
	st := stateIndex(state)
	if st < 0 || uid < 0 || uint64(uid) > math.MaxUint32 {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.byUID[stateUID{uint32(uid), uint8(st)}]
}

// Counts returns the number of messages in each state.
func (q *Queue) Counts() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string]int{}
	for i, s := range States {
		out[s] = q.sets[i].n
	}
	return out
}

// ReadState returns the delivery record of id in state.
func (q *Queue) ReadState(state, id string) (*Delivery, error) {
	q.mu.Lock()
	e := q.entries[id]
	if e == nil || States[e.st] != state {
		q.mu.Unlock()
		return nil, fmt.Errorf("%s in %s: %w", id, state, ErrNotFound)
	}
	b := e.d
	q.mu.Unlock()
	d, err := decodeDelivery(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: delivery record: %v", id, ErrCorrupt, err)
	}
	return d, nil
}

// WriteState replaces the delivery record of id, which must be in state,
// and Syncs.
func (q *Queue) WriteState(state, id string, d *Delivery) error {
	return q.writeState(true, state, id, d)
}

// WriteStateNoSync is WriteState without the Sync: the record is appended
// (a crash leaves the old record or the new one, never a mix) but durable
// only after Sync. It lets a batch of records share one Sync.
func (q *Queue) WriteStateNoSync(state, id string, d *Delivery) error {
	return q.writeState(false, state, id, d)
}

func (q *Queue) writeState(sync bool, state, id string, d *Delivery) error {
	b, err := encodeDelivery(d)
	if err != nil {
		return err
	}
	q.mu.Lock()
	e := q.entries[id]
	if e == nil || States[e.st] != state {
		q.mu.Unlock()
		return fmt.Errorf("spool: writing the record of %s in %s: %w", id, state, ErrNotFound)
	}
	if err := q.appendLocked(setLine(id, e.st, b), false); err != nil {
		q.mu.Unlock()
		return err
	}
	q.setStateLocked(id, e, e.st, b)
	q.mu.Unlock()
	if sync {
		return q.Sync()
	}
	return nil
}

// Claim takes id for delivery: incoming or deferred → active. It returns
// the state it came from; ErrNotFound if it was in neither.
//
// No Sync: the claim itself promises nothing. If a crash loses it, the
// message is back in incoming or deferred with the record it had, exactly
// what Recover makes of a claim that did persist (active goes back to
// incoming or deferred by its record). What must be durable before
// dialing is the attempt record written next (WriteState, or
// WriteStateNoSync followed by Sync), whose line comes after the claim's.
func (q *Queue) Claim(id string) (string, error) {
	return q.move(false, id, stActive, stIncoming, stDeferred)
}

// Take is Claim without a journal line of its own, for a caller that
// writes the attempt's record next: the message is active in memory (no
// other worker, pickup or Delete takes it), and the caller's next line
// about id — the record, WriteState or WriteStateNoSync in state active,
// a "set" line, which carries the state with the record (a line every
// relayd knows) — records the claim and the record at once: one append
// per delivery instead of two. Until that line the journal has the
// message where it was, with the record it had: what a crash that lost
// Claim's line leaves, and what Recover makes of an active message all
// the same (back to incoming or deferred by its record). A caller that
// gives the message up before writing the record writes its own line as
// usual (Requeue, Done, Fail, QuarantineMessage: each line names the
// state it goes to, or removes the message).
func (q *Queue) Take(id string) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil || (e.st != stIncoming && e.st != stDeferred) {
		return "", fmt.Errorf("%s (in %s): %w", id, stateNames([]uint8{stIncoming, stDeferred}), ErrNotFound)
	}
	prev := States[e.st]
	q.setStateLocked(id, e, stActive, e.d)
	return prev, nil
}

// Defer ends a delivery attempt with recipients left to try: active →
// deferred. Synced: the schedule survives a crash.
func (q *Queue) Defer(id string) error {
	_, err := q.move(true, id, stDeferred, stActive)
	return err
}

// Fail ends a delivery for good and keeps the message: active → failed.
// Synced.
func (q *Queue) Fail(id string) error { _, err := q.move(true, id, stFailed, stActive); return err }

// Hold stops delivery of a waiting message: incoming or deferred → held.
// Synced: the operator's (or the policy's) decision survives.
func (q *Queue) Hold(id string) error {
	_, err := q.move(true, id, stHeld, stIncoming, stDeferred)
	return err
}

// Release puts a held (or failed) message back for immediate delivery:
// held or failed → incoming. Synced.
func (q *Queue) Release(id string) error {
	_, err := q.move(true, id, stIncoming, stHeld, stFailed)
	return err
}

// Requeue puts an interrupted delivery back: active → incoming (never
// attempted) or deferred. Synced.
func (q *Queue) Requeue(id string, attempted bool) error {
	to := stIncoming
	if attempted {
		to = stDeferred
	}
	_, err := q.move(true, id, to, stActive)
	return err
}

// Done ends a delivery that needs nothing more: active → gone.
//
// No Sync: the upstream has the message, so a crash that loses the del
// line can only cause a duplicate, which at-least-once allows. A process
// crash loses no line (the kernel has it); only a power loss can, and the
// next Sync (the next batch's attempt records, or Maintain within
// seconds) bounds how many. The message's bytes stay in their segment
// until a Sync covers the del line: then the file system blocks only
// gone messages filled are punched out (holes.go), and the segment is
// unlinked once all its messages are gone.
func (q *Queue) Done(id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil || e.st != stActive {
		return fmt.Errorf("%s (in %s): %w", id, Active, ErrNotFound)
	}
	if err := q.appendLocked(delLine(id), true); err != nil {
		return err
	}
	q.dropLocked(id, e)
	return nil
}

// Delete removes a message that is not being delivered (any state but
// active), and Syncs. It returns the state it was in.
func (q *Queue) Delete(id string) (string, error) {
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return "", fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if e.st == stActive {
		q.mu.Unlock()
		return Active, fmt.Errorf("%s is being delivered right now; try again in a moment", id)
	}
	st := States[e.st]
	if err := q.appendLocked(delLine(id), true); err != nil {
		q.mu.Unlock()
		return "", err
	}
	q.dropLocked(id, e)
	q.mu.Unlock()
	return st, q.Sync()
}

// RemoveMessage removes id from the queue whatever its state (a store
// that failed), without Sync. Nothing queued under id is not an error.
func (q *Queue) RemoveMessage(id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		return nil
	}
	if err := q.appendLocked(delLine(id), true); err != nil {
		return err
	}
	q.dropLocked(id, e)
	return nil
}

// QuarantineMessage copies the queued message id into queue/quarantine/
// (fsync'd), then removes it from the queue and Syncs. Kept, never
// deleted. It returns the quarantine file's name.
func (q *Queue) QuarantineMessage(id string) (string, error) {
	m, err := q.openSection(id)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return "", err
	}
	name, qerr := q.writeQuarantine(id, m)
	if m != nil {
		m.Close()
	}
	if qerr != nil {
		return "", qerr
	}
	if err := q.RemoveMessage(id); err != nil {
		return name, err
	}
	return name, q.Sync()
}

// writeQuarantine writes what m holds (nothing when nil: its segment is
// gone) into a new file of queue/quarantine/ named after label, fsync'd.
func (q *Queue) writeQuarantine(label string, m *Message) (string, error) {
	qfd := int(q.quardir.Fd())
	return quarantineName(label, label, func(target string) (bool, error) {
		fd, err := unix.Openat(qfd, target, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		path := filepath.Join(q.Root, DirQuarantine, target)
		if err != nil {
			return true, &os.PathError{Op: "create", Path: path, Err: err}
		}
		f := os.NewFile(uintptr(fd), path)
		if m != nil {
			// A segment cut short copies what there is.
			_, err = f.ReadFrom(m.SectionReader)
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = q.quardir.Sync()
		}
		if err != nil {
			unix.Unlinkat(qfd, target, 0)
			return true, fmt.Errorf("spool: quarantine %s: %w", label, err)
		}
		return true, nil
	})
}

// quarantineName is how a file gets its name in queue/quarantine/, a
// name derived from label that replaces nothing: place is called with
// label (sanitised), then label.1, label.2 ... until it reports the name
// free (true), at most 100 times; what is the name of the file, for the
// error when every name is taken. It returns the name placed.
func quarantineName(label, what string, place func(target string) (bool, error)) (string, error) {
	base := sanitize(label)
	for i := 0; i < 100; i++ {
		target := base
		if i > 0 {
			target = fmt.Sprintf("%s.%d", base, i)
		}
		free, err := place(target)
		if err != nil {
			return "", err
		}
		if free {
			return target, nil
		}
	}
	return "", fmt.Errorf("spool: quarantine %s: too many files named %s", what, base)
}

// QuarantineFile moves the file name in dir (maildrop/) into
// queue/quarantine/ under a name derived from label that replaces nothing,
// and fsyncs both directories, queue/quarantine/ first. It returns the new
// name. If queue/quarantine/ cannot be fsync'd the move is undone (the
// file put back as dir/name) and an error returned: dir's fsync would
// otherwise make the file's removal durable while its new name might not
// be, and a power loss could lose it.
func (q *Queue) QuarantineFile(dir *os.File, name, label string) (string, error) {
	qfd := int(q.quardir.Fd())
	target, err := quarantineName(label, name, func(target string) (bool, error) {
		err := unix.Renameat2(int(dir.Fd()), name, qfd, target, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		if err != nil {
			return true, fmt.Errorf("spool: quarantine %s: %w", filepath.Join(dir.Name(), name), err)
		}
		return true, nil
	})
	if err != nil {
		return "", err
	}
	if err := q.quardir.Sync(); err != nil {
		from := filepath.Join(dir.Name(), name)
		if berr := unix.Renameat2(qfd, target, int(dir.Fd()), name, unix.RENAME_NOREPLACE); berr != nil {
			return "", fmt.Errorf("spool: quarantine %s: %w; the file is %s, not durably (moving it back failed: %v)",
				from, err, filepath.Join(q.quardir.Name(), target), berr)
		}
		return "", fmt.Errorf("spool: quarantine %s: %w; left in place", from, err)
	}
	return target, dir.Sync()
}

func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 100; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 || strings.HasPrefix(b.String(), ".") {
		return "q" + b.String()
	}
	return b.String()
}

// QuarantineOwners counts the regular files of queue/quarantine/ by
// owner: a quarantined maildrop file keeps its owner, the caller's UID
// (pickup caps what refused mail may put there per account).
func (q *Queue) QuarantineOwners() (map[int]int, error) {
	fd, err := unix.Openat(int(q.quardir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: q.quardir.Name(), Err: err}
	}
	d := os.NewFile(uintptr(fd), q.quardir.Name())
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, n := range names {
		var st unix.Stat_t
		if unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			out[int(st.Uid)]++
		}
	}
	return out, nil
}
