package spool

// Message segments (queue/seg/<16 hex digits>): append-only files, each a
// concatenation of messages in the maildrop format (EncodeHeader, the
// message, PatchSize), so Decode and Meta.Body read a message through a
// section of its segment, and an administrator can read a segment with
// less.
//
// Writers never share an append point: a writer takes an open segment no
// other writer holds (or creates one: the only file creation of the
// queue, once per segment), writes at its end with plain buffered
// writes, and on Commit patches the size and checksum in, appends the
// message's add line to the journal and gives the segment back. Abort
// gives the segment's bytes from where the writer started back (zeros
// again within the segment's zero tail, see segZeroStep). A segment of
// segmentMax bytes is sealed (no more appends); so is every segment found
// at start. A sealed segment none of whose messages is left is unlinked
// once a Sync has made the journal lines that emptied it durable (before
// that, a power loss could bring back entries pointing into it).
// Before that, the space of its messages that are gone is punched out of
// it as they go (holes.go).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DirSeg holds the segments, relative to the spool root.
const DirSeg = "queue/seg"

const (
	// segmentMax seals a segment once it holds this much.
	segmentMax = 64 << 20
	// segmentRetire seals an open segment that no writer holds and none
	// of whose messages is left, once it holds this much: a queue that
	// empties often does not keep 64 MiB of delivered mail on disk, and
	// does not create a file per message either.
	segmentRetire = 1 << 20
	// compactAge and compactLive: a sealed segment older than compactAge
	// whose live messages fill less than 1/compactLive of it has them
	// copied to a new segment (Maintain), so that a few long-deferred
	// messages do not keep whole segments of delivered mail.
	compactAge  = 10 * time.Minute
	compactLive = 4
	// segZeroStep and segZeroLow: the segment messages are appended to
	// has segZeroStep bytes of zeros written beyond its end (its zero
	// tail), renewed by the writer that takes it when less than
	// segZeroLow is left. Messages are written over the zeros, into
	// blocks that are allocated, initialised and inside the file's
	// size, so that the fdatasync of a Sync writes those data blocks
	// only, not the inode nor the file system's block bitmap: about
	// 60% of the CPU and of the time of a Sync of growing files on
	// ext4 (BenchmarkCommitSync). The next Sync's fdatasync makes each step of zeros
	// durable once. A message longer than the tail grows the file past
	// it, as without one; a full file system gets no zeros (see
	// zeroAhead). The tail is cut off when the segment is sealed and at
	// Close (not synced: zeros a crash leaves after the last message are
	// dead space like any gap between messages, punched at Recover).
	segZeroStep = 1 << 20
	segZeroLow  = 256 << 10
)

// segment is one segment file.
type segment struct {
	n         uint64
	f         *os.File // read-write; shared by the writer (pwrite) and readers (pread)
	size      int64    // end of the data: where the next message goes
	alloc     int64    // end of its zero tail (the file's size); none when <= size
	live      int      // messages in the queue stored here
	liveBytes int64
	created   time.Time
	sealed    bool          // no more appends
	syncBad   bool          // an fdatasync of it failed: no more commits either (see Sync)
	busy      bool          // a writer holds it
	dirty     bool          // written since the last Sync
	dead      bool          // in q.dying
	gone      bool          // unlinked; the file is closed when refs drops to 0
	refs      int           // open Messages
	deadSeq   uint64        // q.seq when it lost its last message
	unsynced  []string      // IDs added here since its last fdatasync
	deadSpans []span        // ranges known dead and punched (holes.go), sorted, merged
	readers   map[int64]int // open Messages by their offset: not punched under them
	synced    int64         // size at its last fdatasync (see holdP)
	// stated: the journal's lines state it durable this far ("dur" in
	// journal.go); last is the place of the message added last, which
	// a loc line names to state more (stateDurableLocked).
	stated  int64
	lastID  string
	lastOff int64
	lastLen int64
	// streaming: its writer has written part of a message that is not
	// committed yet (a message larger than MsgWriter's buffer), so an
	// fdatasync may have more to write than size-synced tells.
	streaming atomic.Bool
}

func segName(n uint64) string { return fmt.Sprintf("%016x", n) }

// openSegments opens every segment file, sealed.
func (q *Queue) openSegments() error {
	names, err := q.segdir.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		// Only the name segName gives: a name that parses to the same
		// number another way (upper-case digits) is not a segment, and
		// taking it for one would read it in place of the real one.
		n, err := strconv.ParseUint(name, 16, 64)
		if err != nil || n == 0 || name != segName(n) {
			continue
		}
		if n >= q.nextSeg {
			q.nextSeg = n + 1
		}
		path := filepath.Join(q.Root, DirSeg, name)
		fd, err := unix.Openat(int(q.segdir.Fd()), name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENXIO) {
			// A symbolic link, a directory, a socket: not ours either
			// (see below). Any other error may hide a segment of ours,
			// whose messages must not be dropped as missing: it stops
			// the start.
			q.replayed = append(q.replayed, fmt.Sprintf("ignored-segment file=%s reason=%q", path, "not a regular file: "+err.Error()))
			continue
		}
		if err != nil {
			return &os.PathError{Op: "open", Path: path, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			// Not ours (relayd creates regular files only): left alone,
			// and its messages are found missing.
			unix.Close(fd)
			q.replayed = append(q.replayed, fmt.Sprintf("ignored-segment file=%s reason=\"not a regular file\"", path))
			continue
		}
		q.segs[n] = &segment{n: n, f: os.NewFile(uintptr(fd), path), size: st.Size, sealed: true, created: time.Unix(st.Mtim.Unix())}
	}
	return nil
}

func (q *Queue) now() time.Time {
	if q.Now != nil {
		return q.Now()
	}
	return time.Now()
}

// acquire returns an open segment for one writer: an idle one, else a
// new one (fresh forces a new one).
func (q *Queue) acquire(fresh bool) (*segment, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.jf == nil {
		return nil, errors.New("spool: the queue is closed")
	}
	for !fresh && len(q.idle) > 0 {
		s := q.idle[len(q.idle)-1]
		q.idle = q.idle[:len(q.idle)-1]
		if !s.sealed && !s.gone {
			s.busy = true
			return s, nil
		}
	}
	n := q.nextSeg
	name := segName(n)
	fd, err := unix.Openat(int(q.segdir.Fd()), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	for i := 0; errors.Is(err, unix.EEXIST) && i < 100; i++ {
		// Someone else's file under that name: the next number.
		n++
		name = segName(n)
		fd, err = unix.Openat(int(q.segdir.Fd()), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: filepath.Join(q.Root, DirSeg, name), Err: err}
	}
	q.nextSeg = n + 1
	s := &segment{n: n, f: os.NewFile(uintptr(fd), filepath.Join(q.Root, DirSeg, name)), busy: true, created: q.now()}
	q.segs[n] = s
	q.segDirty = true
	return s, nil
}

// releaseLocked gives a writer's segment back (q.mu held).
func (q *Queue) releaseLocked(s *segment) {
	s.busy = false
	switch {
	case s.sealed:
	case s.size >= segmentMax, s.live == 0 && s.size >= segmentRetire:
		s.sealed = true
	default:
		q.idle = append(q.idle, s)
	}
	q.checkDead(s)
}

// checkDead queues s for unlinking when it is sealed, idle and empty.
func (q *Queue) checkDead(s *segment) {
	if !s.sealed && s.live == 0 && !s.busy && s.size >= segmentRetire {
		s.sealed = true // an idle open segment: see segmentRetire
	}
	if s.sealed && !s.busy {
		s.trimLocked()
	}
	if s.sealed && !s.busy && s.live == 0 && !s.dead {
		s.dead = true
		s.deadSeq = q.seq
		q.dying = append(q.dying, s)
	}
}

// unlinkLocked removes the segment file of s (q.mu held).
func (q *Queue) unlinkLocked(s *segment) error {
	if s.gone {
		return nil
	}
	err := unix.Unlinkat(int(q.segdir.Fd()), segName(s.n), 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlink", Path: s.f.Name(), Err: err}
	}
	s.gone = true
	delete(q.segs, s.n)
	if s.refs == 0 {
		s.f.Close()
	}
	return nil
}

// offWriter writes to f at off and on (pwrite), so that writers of other
// segments and readers share nothing.
type offWriter struct {
	f   *os.File
	off int64
}

func (w *offWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

// MsgWriter streams one message to the end of a segment. Commit queues
// it; until the next Sync it is not durable (pickup's batches and the
// doors' group commit share one Sync).
type MsgWriter struct {
	q       *Queue
	seg     *segment
	start   int64
	ow      offWriter
	buf     []byte // written, not yet in the segment (a pooled 64 KiB)
	wrote   bool   // some of it is in the segment: the header is no longer in buf
	writes  int    // writes to the segment (for tests)
	meta    Meta
	sizeOff int64
	crc     hash.Hash32
	n       int64
	done    bool
}

// NewMessage starts writing the message m.ID (see MsgWriter).
func (q *Queue) NewMessage(m *Meta) (*MsgWriter, error) {
	if !ValidID(m.ID) {
		return nil, fmt.Errorf("spool: bad queue id %q", m.ID)
	}
	if q.HasMessage(m.ID) {
		return nil, fmt.Errorf("spool: %s is queued already", m.ID)
	}
	s, err := q.acquire(false)
	if err != nil {
		return nil, err
	}
	if s.alloc-s.size < segZeroLow {
		q.zeroAhead(s)
	}
	w := &MsgWriter{q: q, seg: s, start: s.size, ow: offWriter{f: s.f, off: s.size}, meta: *m, crc: NewCRC()}
	hdr, off := EncodeHeader(&w.meta)
	w.sizeOff = off
	w.buf = (*writers.Get().(*[]byte))[:0]
	if err := w.put(hdr); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// zeroAhead renews the zero tail of s, which the caller holds as its
// writer (see segZeroStep), before any byte of a message goes there. Not
// when the journal's reserve is short (a full file system: the journal
// comes first); a tail that cannot be written whole is what there was
// room for. Either way the message is written as without one.
func (q *Queue) zeroAhead(s *segment) {
	q.mu.Lock()
	short := q.journalShortLocked()
	q.mu.Unlock()
	if short {
		return
	}
	from := max(s.alloc, s.size)
	n, _ := writeZeros(s.f, from, s.size+segZeroStep-from)
	q.mu.Lock()
	s.alloc = from + n
	q.mu.Unlock()
}

// cutBack gives back the bytes [start, end) that the writer holding s
// wrote for a message it gave up: zeros again within the zero tail, cut
// off beyond it. Should that fail, the next writer overwrites them
// (writes are at explicit offsets) and nothing refers to them.
func (q *Queue) cutBack(s *segment, start, end int64) {
	unwrite(s.f, s.alloc, start, end)
}

// trimLocked cuts the zero tail off s (q.mu held, no writer holds s):
// once it is sealed, at Close, and for the journal's reserve on a full
// file system. It reports whether it cut one off.
func (s *segment) trimLocked() bool {
	if s.alloc > s.size && !s.gone && s.f.Truncate(s.size) == nil {
		s.alloc = s.size
		return true
	}
	return false
}

// trimIdleLocked cuts the zero tails off the open segments no writer
// holds, and reports whether it cut any off (q.mu held).
func (q *Queue) trimIdleLocked() bool {
	found := false
	for _, s := range q.idle {
		if !s.busy && s.trimLocked() {
			found = true
		}
	}
	return found
}

// Write appends message bytes.
func (w *MsgWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("spool: message already committed or aborted")
	}
	if err := w.put(p); err != nil {
		return 0, err
	}
	w.crc.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

// put appends p to what the segment gets: into buf, which is written out
// when full; what does not fit in an empty buf is written as it is.
func (w *MsgWriter) put(p []byte) error {
	for len(p) > 0 {
		if len(w.buf) == 0 && len(p) >= cap(w.buf) {
			w.seg.streaming.Store(true)
			return w.out(p)
		}
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		if len(w.buf) == cap(w.buf) {
			w.seg.streaming.Store(true)
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes buf out to the segment.
func (w *MsgWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.out(w.buf)
	w.buf = w.buf[:0]
	return err
}

// out writes p to the segment after what was written before.
func (w *MsgWriter) out(p []byte) error {
	w.wrote = true
	w.writes++
	_, err := w.ow.Write(p)
	return err
}

// Size is the number of message bytes written so far.
func (w *MsgWriter) Size() int64 { return w.n }

// Commit queues the message in incoming with an empty record (never
// attempted). No Sync (see MsgWriter).
func (w *MsgWriter) Commit() error { return w.CommitState(Incoming, nil) }

// CommitState queues the message in state with the record d (nil:
// empty): its size and checksum are patched in and its add line appended
// to the journal, in one step, so the queue never sees it in another
// state first. No Sync.
func (w *MsgWriter) CommitState(state string, d *Delivery) error {
	if w.done {
		return errors.New("spool: message already committed or aborted")
	}
	st := stateIndex(state)
	if st < 0 {
		w.Abort()
		return fmt.Errorf("spool: no state %q", state)
	}
	db, err := encodeDelivery(d)
	if err == nil {
		patch := PatchSize(w.n, w.crc.Sum32())
		if !w.wrote {
			// The whole message is still in buf (most are: a message
			// under 64 KiB): its size and checksum go in before its one
			// write.
			copy(w.buf[w.sizeOff:], patch)
			err = w.flush()
		} else if err = w.flush(); err == nil {
			w.writes++
			_, err = w.seg.f.WriteAt(patch, w.start+w.sizeOff)
		}
	}
	if err != nil {
		w.Abort()
		return err
	}
	e := &entry{seg: w.seg.n, off: w.start, len: w.ow.off - w.start, d: db, uid: uint32(w.meta.Origin.UID), st: uint8(st)}
	if err := w.q.add(w.meta.ID, e, w.seg, w.ow.off); err != nil {
		w.Abort()
		return err
	}
	w.finish()
	return nil
}

// add records e (written into s, whose data now ends at end) and gives s
// back.
func (q *Queue) add(id string, e *entry, s *segment, end int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.entries[id] != nil {
		return fmt.Errorf("spool: %s is queued already", id)
	}
	if s.syncBad {
		// Its bytes written before the failed fdatasync were part of
		// that writeback, and the file's next fdatasync will not say
		// whether they reached the disk.
		return fmt.Errorf("spool: %s not stored: the fdatasync of its segment %s failed while it was written", id, s.f.Name())
	}
	if err := q.appendLocked(addLine(id, e, s.synced), false); err != nil {
		return err
	}
	s.stated = max(s.stated, s.synced)
	s.lastID, s.lastOff, s.lastLen = id, e.off, e.len
	q.entries[id] = e
	delete(q.dropped, id)
	q.enterLocked(id, e)
	q.dbytes += int64(len(e.d))
	s.size = end
	s.live++
	s.liveBytes += e.len
	s.dirty = true
	s.unsynced = append(s.unsynced, id)
	q.releaseLocked(s)
	return nil
}

func (w *MsgWriter) finish() {
	w.done = true
	w.seg.streaming.Store(false)
	if w.buf != nil {
		b := w.buf[:0]
		writers.Put(&b)
		w.buf = nil
	}
}

// Abort discards an uncommitted message: the segment is cut back to where
// it started. Safe to call more than once.
func (w *MsgWriter) Abort() {
	if w.done {
		return
	}
	w.finish()
	w.q.cutBack(w.seg, w.start, w.ow.off)
	w.q.mu.Lock()
	w.q.releaseLocked(w.seg)
	w.q.mu.Unlock()
}

// writers recycles MsgWriter's 64 KiB buffers.
var writers = sync.Pool{New: func() any {
	b := make([]byte, 0, 64<<10)
	return &b
}}

// Message is a queued message opened for reading: a section of its
// segment, or a copy of it in memory (OpenWhole) (offsets are the
// message's own, as in a maildrop file).
type Message struct {
	*io.SectionReader
	q    *Queue
	seg  *segment
	off  int64
	once sync.Once
	held *[]byte // the message's bytes, when OpenWhole read them (wholeBufs)
}

// closedReader is what a Message that OpenWhole held reads after Close.
type closedReader struct{}

func (closedReader) ReadAt([]byte, int64) (int, error) { return 0, os.ErrClosed }

// Name names the message for error messages (its segment and offset).
// Made when asked: delivery opens every message, errors are rare.
func (m *Message) Name() string { return m.seg.f.Name() + "@" + strconv.FormatInt(m.off, 10) }

// Close releases the message (its segment may go once no reader has it).
func (m *Message) Close() error {
	m.once.Do(func() {
		m.q.mu.Lock()
		m.seg.refs--
		if m.seg.readers[m.off]--; m.seg.readers[m.off] <= 0 {
			delete(m.seg.readers, m.off)
		}
		if m.seg.gone && m.seg.refs == 0 {
			m.seg.f.Close()
		}
		m.q.mu.Unlock()
		if m.held != nil {
			// Its buffer goes to another message: a read after Close
			// fails as a read of a closed file does.
			m.SectionReader = io.NewSectionReader(closedReader{}, 0, m.Size())
			wholeBufs.Put(m.held)
			m.held = nil
		}
	})
	return nil
}

// openSection opens the bytes of queued message id. An entry whose
// segment is missing is ErrCorrupt (and m is nil).
func (q *Queue) openSection(id string) (*Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		return nil, fmt.Errorf("%s: %w (%w)", id, ErrNotFound, os.ErrNotExist)
	}
	s := q.segs[e.seg]
	if s == nil {
		return nil, fmt.Errorf("%s: %w: its segment %s is missing", id, ErrCorrupt, filepath.Join(q.Root, DirSeg, segName(e.seg)))
	}
	s.refs++
	if s.readers == nil {
		s.readers = map[int64]int{}
	}
	s.readers[e.off]++
	return &Message{SectionReader: io.NewSectionReader(s.f, e.off, e.len), q: q, seg: s, off: e.off}, nil
}

// OpenMessage opens queued message id and decodes its header.
func (q *Queue) OpenMessage(id string) (*Message, *Meta, error) {
	return q.openMessage(id, false)
}

// wholeMax bounds the message OpenWhole reads at once: a typical
// message (a 2 KB notice, a cron report) and its header.
const wholeMax = 16 << 10

var wholeBufs = sync.Pool{New: func() any { b := make([]byte, wholeMax); return &b }}

// OpenWhole is OpenMessage for a caller that reads the whole message
// (delivery): a message of at most wholeMax bytes, header included, is
// read from its segment in one read and then served from memory, so that
// decoding its header and reading its body take one read of the segment
// instead of two. A bigger one is opened as OpenMessage opens it.
func (q *Queue) OpenWhole(id string) (*Message, *Meta, error) {
	return q.openMessage(id, true)
}

func (q *Queue) openMessage(id string, whole bool) (*Message, *Meta, error) {
	m, err := q.openSection(id)
	if err != nil {
		return nil, nil, err
	}
	if n := m.Size(); whole && n <= wholeMax {
		// A failed or short read leaves the message on its segment,
		// where Decode meets the failure as OpenMessage does.
		bp := wholeBufs.Get().(*[]byte)
		b := (*bp)[:n]
		if k, err := m.ReadAt(b, 0); err == nil && int64(k) == n {
			m.SectionReader = io.NewSectionReader(bytes.NewReader(b), 0, n)
			m.held = bp
		} else {
			wholeBufs.Put(bp)
		}
	}
	var meta *Meta
	if m.held != nil {
		meta, err = decodeBytes((*m.held)[:m.Size()])
	} else {
		meta, err = Decode(m, m.Size())
	}
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("%s (%s): %w", id, m.Name(), err)
	}
	return m, meta, nil
}

// Sync makes every append made before it durable: fdatasync of each
// segment written since the last Sync and, at the same time, of the
// journal (see syncLocked for why that is safe). Concurrent
// callers share one: a caller whose appends a Sync that started after
// them covered returns with its result (group commit).
//
// A failed fdatasync is reported once per open file (Linux), so after a
// failure the store trusts neither: a segment whose fdatasync failed is
// sealed and the messages added to it since its last good Sync are
// dropped (their callers get the error: pickup keeps the maildrop file,
// a client is told to retry), as is one still being written into it, at
// its commit; and the journal is rewritten from memory
// before any later Sync reports success. The callers whose appends the
// failed Sync covered, waiting for it, get its error (one that comes
// after it, to try again, gets a Sync of its own); a writer whose message a failed Sync
// (another caller's) dropped before its own Sync learns it from SyncIDs.
func (q *Queue) Sync() error {
	q.mu.Lock()
	target := q.seq
	q.mu.Unlock()
	return q.syncTo(target, q.syncEnds.Load())
}

// syncTo is Sync for the appends before target, by a caller that came
// when seen Syncs had ended.
func (q *Queue) syncTo(target, seen uint64) error {
	q.syncMu.Lock()
	defer q.syncMu.Unlock()
	if q.failedFor(target, seen) {
		return q.failErr
	}
	if target <= q.synced {
		return nil
	}
	return q.syncLocked(false)
}

// SyncWithin is Sync for a caller that may wait up to d for another
// caller's Sync to cover its appends before it makes one of its own:
// while mail comes in, the doors' group commit syncs every millisecond
// or so, and the appends are as durable when it returns, at one
// fdatasync fewer. It returns the covering Sync's result.
func (q *Queue) SyncWithin(d time.Duration) error {
	q.mu.Lock()
	target := q.seq
	q.mu.Unlock()
	seen := q.syncEnds.Load()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		q.syncMu.Lock()
		done := target <= q.synced || q.failedFor(target, seen)
		if q.syncDone == nil {
			q.syncDone = make(chan struct{})
		}
		ch := q.syncDone
		q.syncMu.Unlock()
		if done {
			break
		}
		select {
		case <-ch:
		case <-timer.C:
			return q.syncTo(target, seen)
		}
	}
	return q.syncTo(target, seen)
}

// failedFor reports (q.syncMu held) whether the last failed Sync covered
// the appends before target of a caller that came when seen Syncs had
// ended and was waiting when it failed. A caller that comes after the
// failure, with nothing appended since (pickup's next pass trying a batch
// again), gets a Sync of its own: the failure made the next Sync rewrite
// the journal from memory, and the messages it dropped are SyncIDs'
// to report (the old error would fail every retry until another line
// was appended: an idle relayd would never queue the batch).
func (q *Queue) failedFor(target, seen uint64) bool {
	return q.failErr != nil && target > q.failLo && target <= q.failHi && q.failEnd > seen
}

// syncEnded wakes the callers of SyncWithin (q.syncMu held).
func (q *Queue) syncEnded() {
	q.syncEnds.Add(1)
	if q.syncDone != nil {
		close(q.syncDone)
		q.syncDone = nil
	}
}

// SyncIDs is Sync for a caller that wrote the messages ids: it fails
// too when any of them was dropped by an earlier Sync that failed (its
// segment's fdatasync failed before the message was durable). Sync alone
// cannot tell such a writer: the Sync that dropped the message may have
// been another caller's, and a later one succeeds. Each dropped ID is
// reported once (queued again under that ID, it is forgotten).
func (q *Queue) SyncIDs(ids ...string) error {
	if err := q.Sync(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var lost []string
	for _, id := range ids {
		if _, ok := q.dropped[id]; ok {
			lost = append(lost, id)
			delete(q.dropped, id)
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("spool: %s not stored: dropped when the fdatasync of its segment failed", strings.Join(lost, ", "))
	}
	return nil
}

// syncLocked is Sync (q.syncMu held); rewrite rewrites the journal from
// memory instead of syncing it (compaction).
//
// The fdatasync of the journal runs at the same time as those of the
// segments (all submitted together: aio.go), not after them: a Sync then
// lasts about one fdatasync instead of two. (Where asynchronous I/O is
// refused, they are made one after the other, the journal's last, as
// before.) So a power loss may leave an add
// line durable whose message's bytes are not; its Sync had not returned,
// so no one was told it is stored, and Recover drops it (add lines state
// how much of their segment was durable: see addLine). A rewrite of the
// journal still comes after the segments' fdatasyncs: it states what
// they made durable.
func (q *Queue) syncLocked(rewrite bool) error {
	defer q.syncEnded()
	q.mu.Lock()
	if q.jf == nil {
		q.mu.Unlock()
		return errors.New("spool: the queue is closed")
	}
	start := q.seq
	var segs []*segment
	var ids [][]string
	var sizes []int64
	var small []bool // little to write (smallSync); raw when holdP says so at the time
	for _, s := range q.segs {
		if s.dirty {
			s.dirty = false
			segs = append(segs, s)
			ids = append(ids, s.unsynced)
			s.unsynced = nil
			sizes = append(sizes, s.size)
			small = append(small, s.smallSync())
		}
	}
	dirDirty := q.segDirty
	q.segDirty = false
	// required: the journal file is not trusted (a failed fdatasync or
	// append), so only a rewrite makes it durable. Otherwise a rewrite
	// is compaction, and when it cannot be done (no space for
	// journal.new) the journal as it is is synced instead: a full spool
	// must still make appends durable and remove the segments its
	// deliveries emptied, which is how its space comes back.
	required := q.rewrite
	rewrite = rewrite || q.rewrite
	jf, jsize := q.jf, q.jsize
	q.mu.Unlock()

	var err error
	var failed []int
	// The journal's fdatasync, alongside the segments' when there are
	// any (and no rewrite is to follow them): all of them at once
	// through asynchronous I/O (aio.go).
	var jerr error
	jdone := false
	if !rewrite && len(segs) > 0 {
		files := make([]*os.File, 0, len(segs)+2)
		files = append(files, jf)
		raw := q.smallJournal(jsize)
		for i, s := range segs {
			files = append(files, s.f)
			raw = raw && small[i]
		}
		dirs := 0
		if dirDirty {
			// Its fsync commits the file system's journal, other
			// files' data with it: not little to write (see holdP),
			// and made the usual way when made alone too.
			files = append(files, q.segdir)
			dirs = 1
			raw = false
		}
		if errs, ok := q.aio.fdatasync(files, dirs, raw && holdP()); ok {
			jdone, jerr = true, errs[0]
			for i, s := range segs {
				if e := errs[i+1]; e != nil {
					failed = append(failed, i)
					err = errors.Join(err, fmt.Errorf("spool: fdatasync %s: %w", s.f.Name(), e))
				}
			}
			if dirDirty {
				if e := errs[len(errs)-1]; e != nil {
					q.mu.Lock()
					q.segDirty = true
					q.mu.Unlock()
					err = errors.Join(err, fmt.Errorf("spool: fsync %s: %w", q.segdir.Name(), e))
				}
				dirDirty = false
			}
		}
	}
	for i, s := range segs {
		if jdone {
			break
		}
		var e error
		// holdP asked at each: a slow raw fdatasync earlier in this
		// Sync turns the raw way off for the rest of it too.
		if small[i] && holdP() {
			e = fdatasyncHoldingP(s.f)
		} else {
			e = s.f.Sync()
		}
		if e != nil {
			failed = append(failed, i)
			err = errors.Join(err, fmt.Errorf("spool: fdatasync %s: %w", s.f.Name(), e))
		}
	}
	if dirDirty {
		if e := q.segdir.Sync(); e != nil {
			q.mu.Lock()
			q.segDirty = true
			q.mu.Unlock()
			err = errors.Join(err, fmt.Errorf("spool: fsync %s: %w", q.segdir.Name(), e))
		}
	}
	q.mu.Lock()
	for i, s := range segs {
		if !slices.Contains(failed, i) {
			// Durable: the add lines appended from now on say so, and
			// so does a rewrite.
			s.synced = max(s.synced, sizes[i])
		}
	}
	if len(failed) > 0 {
		for _, i := range failed {
			s := segs[i]
			s.sealed = true
			s.syncBad = true
			// The messages added since the fdatasync's list was taken
			// too: their bytes may have been in the failed writeback.
			// The journal (synced meanwhile) may name them durably:
			// their add lines state the segment durable only up to
			// before them, so Recover checks their bytes should the
			// power go before the journal is rewritten.
			ids[i] = append(ids[i], s.unsynced...)
			s.unsynced = nil
			for _, id := range ids[i] {
				if e := q.entries[id]; e != nil && e.seg == s.n {
					q.dropLocked(id, e)
					if q.dropped == nil {
						q.dropped = map[string]struct{}{}
					}
					q.dropped[id] = struct{}{}
				}
			}
			q.checkDead(s)
		}
		q.rewrite = true
	}
	q.mu.Unlock()
	if jdone {
		if e := jerr; e != nil {
			q.mu.Lock()
			q.rewrite = true
			q.mu.Unlock()
			err = errors.Join(err, fmt.Errorf("spool: fdatasync %s: %w", jf.Name(), e))
		} else if err == nil {
			q.jsynced = jsize
		}
	}
	if err == nil && !jdone {
		q.mu.Lock()
		synced := false
		if rewrite {
			err = q.rewriteLocked()
			synced = err == nil
			if err != nil && !required && !q.rewrite {
				q.putOff = err
				err = nil
			}
		}
		jf, jsize := q.jf, q.jsize
		q.mu.Unlock()
		if synced {
			// The new journal, fdatasynced whole by the rewrite.
			q.jsynced = jsize
		}
		if err == nil && !synced {
			var e error
			if holdP() && q.smallJournal(jsize) {
				e = fdatasyncHoldingP(jf)
			} else {
				e = unix.Fdatasync(int(jf.Fd()))
			}
			if e == nil {
				q.jsynced = jsize
			}
			if e != nil {
				q.mu.Lock()
				q.rewrite = true
				q.mu.Unlock()
				err = fmt.Errorf("spool: fdatasync %s: %w", jf.Name(), e)
			}
		}
	}
	if err != nil {
		q.failLo, q.failHi, q.failErr = q.synced, start, err
		q.failEnd = q.syncEnds.Load() + 1 // syncEnded counts this one
		return err
	}
	q.synced = start
	// The segments emptied by lines this Sync covered may go now.
	q.mu.Lock()
	keep := q.dying[:0]
	for _, s := range q.dying {
		switch {
		case s.live > 0 || s.busy:
			s.dead = false // cannot happen to a sealed segment; kept safe
		case s.deadSeq > start || q.unlinkLocked(s) != nil:
			keep = append(keep, s)
		}
	}
	clear(q.dying[len(keep):])
	q.dying = keep
	q.mu.Unlock()
	q.punchIfShort(start)
	return nil
}

// smallJournal reports (q.syncMu held) whether an fdatasync of the
// journal, jsize bytes long, has at most smallSync bytes to write.
func (q *Queue) smallJournal(jsize int64) bool {
	return jsize-q.jsynced >= 0 && jsize-q.jsynced <= smallSync
}

// rewriteLocked writes the journal afresh from memory (one add line per
// message, one pol line per account the policy remembers) into journal.new, fdatasyncs it and renames it over the
// journal (q.mu held).
func (q *Queue) rewriteLocked() error {
	qfd := int(q.qdir.Fd())
	path := filepath.Join(q.Root, journalNew)
	fd, err := unix.Openat(qfd, "journal.new", unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(q.Root, JournalFile))
	bw := bufio.NewWriterSize(f, 1<<20)
	var n int64
	for id, e := range q.entries {
		// What the segment's last fdatasync made durable: all of it
		// but what was committed while this Sync's fdatasyncs ran
		// (Recover checks those should the power go).
		var dur int64
		s := q.segs[e.seg]
		if s != nil {
			dur = s.synced
			if covers(dur, e.off, e.len) {
				s.stated = max(s.stated, e.off+e.len)
			} else {
				s.stated = max(s.stated, dur)
			}
		}
		l := addLine(id, e, dur)
		n += int64(len(l))
		if _, err = bw.Write(l); err != nil {
			break
		}
	}
	// The policy's state of each account, as its last line had it.
	for k, p := range q.pol {
		if err != nil {
			break
		}
		l := polLine(k, p)
		n += int64(len(l))
		_, err = bw.Write(l)
	}
	if err == nil {
		err = bw.Flush()
	}
	// Its zero tail (see journalReserve), made durable with the lines:
	// as much of it as there is room for.
	var zeros int64
	if err == nil {
		zeros, _ = writeZeros(f, n, journalReserve)
		err = unix.Fdatasync(fd)
	}
	if err == nil {
		err = unix.Renameat(qfd, "journal.new", qfd, "journal")
	}
	if err != nil {
		// The journal is as it was (the caller decides whether it may
		// still be trusted).
		f.Close()
		unix.Unlinkat(qfd, "journal.new", 0)
		return fmt.Errorf("spool: rewriting %s: %w", filepath.Join(q.Root, JournalFile), err)
	}
	// Renamed: the old file is no longer the journal, appends go to the
	// new one whatever happens next.
	q.jf.Close()
	q.jf, q.jsize, q.jalloc, q.jbroken, q.rewrite = f, n, n+zeros, false, false
	if err := q.qdir.Sync(); err != nil {
		// The rename may not be durable: a power loss could bring back
		// the old journal without the appends made to the new one.
		q.rewrite = true
		return fmt.Errorf("spool: rewriting %s: fsync %s: %w", filepath.Join(q.Root, JournalFile), q.qdir.Name(), err)
	}
	q.reserveLocked()
	return nil
}

// journalDue reports whether the journal has grown past four times what
// its live entries need (and past 4 MiB).
func (q *Queue) journalDue() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	live := int64(len(q.entries))*150 + q.dbytes + int64(len(q.pol))*40 + q.pbytes
	return q.jsize > max(4<<20, 4*live)
}

// Maintain is the queue's housekeeping, for relayd to call every few
// seconds: it Syncs what is pending (Done's lines), which unlinks the
// segments left empty; rewrites the journal when it is due; and copies
// the few live messages of old, mostly dead segments into a new one.
func (q *Queue) Maintain() error {
	q.mu.Lock()
	pending := q.seq
	dying := len(q.dying) > 0
	q.mu.Unlock()
	due := q.journalDue()
	q.syncMu.Lock()
	var err error
	if due || pending > q.synced || dying {
		err = q.syncLocked(due)
	}
	if q.putOff != nil {
		err = errors.Join(err, fmt.Errorf("journal compaction put off: %w", q.putOff))
		q.putOff = nil
	}
	synced := q.synced
	q.syncMu.Unlock()
	q.mu.Lock()
	q.stateDurableLocked()
	q.mu.Unlock()
	q.punchDead(synced)
	if cerr := q.compactSegments(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// stateDurableLocked appends, for each segment a Sync has made durable
// further than the journal's lines state (its last messages, whose add
// lines were made durable by the same Sync as their bytes), a loc line
// naming the place of the message added to it last, which states so (q.mu
// held). No Sync of its own: the line goes with the next one, and until
// then Recover checks those messages' bytes, as it would have. A relayd
// that syncs the segments before the journal reads the line as a move
// to where the message is, or about a message gone: nothing changes.
func (q *Queue) stateDurableLocked() bool {
	wrote := false
	for _, s := range q.segs {
		if s.synced <= s.stated || s.lastID == "" || s.gone {
			continue
		}
		if e := q.entries[s.lastID]; e != nil && (e.seg != s.n || e.off != s.lastOff) {
			continue // moved by compaction: the line would move it back
		}
		if q.appendLocked(locLine(s.lastID, s.n, s.lastOff, s.lastLen, s.synced), false) != nil {
			return wrote
		}
		s.stated = s.synced
		wrote = true
	}
	return wrote
}

// compactSegments copies the live messages of every sealed segment older
// than compactAge that they fill less than 1/compactLive of.
func (q *Queue) compactSegments() error {
	now := q.now()
	q.mu.Lock()
	var cands []*segment
	for _, s := range q.segs {
		if s.sealed && !s.gone && s.live > 0 && now.Sub(s.created) >= compactAge && s.liveBytes*compactLive < s.size {
			cands = append(cands, s)
		}
	}
	q.mu.Unlock()
	var err error
	for _, s := range cands {
		err = errors.Join(err, q.compactSegment(s))
	}
	return err
}

// compactSegment copies the live messages of s that are not being
// delivered into a new segment, fdatasyncs it, then points their entries
// there (loc lines) and Syncs. s goes once its last message has moved or
// gone.
func (q *Queue) compactSegment(s *segment) error {
	q.mu.Lock()
	var ids []string
	for id, e := range q.entries {
		if e.seg == s.n && e.st != stActive {
			ids = append(ids, id)
		}
	}
	q.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	dst, err := q.acquire(true)
	if err != nil {
		return err
	}
	type moved struct {
		id       string
		from, to int64
		n        int64
	}
	var ms []moved
	w := offWriter{f: dst.f}
	for _, id := range ids {
		q.mu.Lock()
		e := q.entries[id]
		if e == nil || e.seg != s.n || e.st == stActive {
			q.mu.Unlock()
			continue
		}
		off, n := e.off, e.len
		q.mu.Unlock()
		at := w.off
		c, cerr := io.Copy(&w, io.NewSectionReader(s.f, off, n))
		if cerr != nil || c != n {
			w.off = at
			continue
		}
		ms = append(ms, moved{id, off, at, n})
	}
	// The copies and the new segment's name are made durable before any
	// loc line points there: the Sync after the lines makes the journal
	// durable at the same time as the segments and queue/seg (see
	// syncLocked), and the messages moved were acknowledged long ago. A
	// power loss between the two must find them where they were.
	err = dst.f.Sync()
	if err != nil {
		err = fmt.Errorf("spool: fdatasync %s: %w", dst.f.Name(), err)
	} else if len(ms) > 0 {
		if e := q.segdir.Sync(); e != nil {
			err = fmt.Errorf("spool: fsync %s: %w", q.segdir.Name(), e)
		}
	}
	if err != nil || len(ms) == 0 {
		q.mu.Lock()
		dst.sealed = true
		q.releaseLocked(dst)
		q.mu.Unlock()
		return err
	}
	q.mu.Lock()
	for _, m := range ms {
		e := q.entries[m.id]
		if e == nil || e.seg != s.n || e.off != m.from {
			continue
		}
		if err := q.appendLocked(locLine(m.id, dst.n, m.to, m.n, w.off), false); err != nil {
			break
		}
		dst.stated = max(dst.stated, m.to+m.n)
		s.live--
		s.liveBytes -= m.n
		dst.live++
		dst.liveBytes += m.n
		e.seg, e.off = dst.n, m.to
		q.noteGoneLocked(s, m.from, m.n)
	}
	dst.size = w.off
	dst.synced = max(dst.synced, w.off)
	dst.dirty = true
	dst.sealed = true
	q.releaseLocked(dst)
	q.checkDead(s)
	q.mu.Unlock()
	return q.Sync()
}

// Section tells where the bytes of queued message id are: its segment
// file, the offset of its header there and its length (header included).
// For administrators' tools and tests; relayd reads through OpenMessage.
func (q *Queue) Section(id string) (path string, off, n int64, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		return "", 0, 0, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return filepath.Join(q.Root, DirSeg, segName(e.seg)), e.off, e.len, nil
}

// smallSync reports (q.mu held) whether an fdatasync of s has at most
// smallSync bytes to write (see holdP).
func (s *segment) smallSync() bool {
	return !s.streaming.Load() && s.size-s.synced >= 0 && s.size-s.synced <= smallSync
}

// smallSync bounds what an fdatasync made by holdP's way may have to
// write.
const smallSync = 256 << 10

// holdP reports whether Sync makes its fdatasyncs of little data (at most
// smallSync written since the file's last one, no message being streamed
// into it) as raw system calls, which keep the calling thread's P (Go's
// scheduler context) for the duration. A system call made the usual way
// gives it up: an fdatasync lasts 100 µs and more, so the runtime's
// monitor (sysmon) takes the P away and wakes another thread to run it,
// and at its return the thread finds no P, parks, and the syncing
// goroutine waits to be scheduled again; and sysmon, which took a P back,
// keeps polling every 20 µs. With a Sync every millisecond (the loopback
// listener under load, two fdatasyncs each) those switches of thread
// were much of relayd's time (finish_task_switch and runtime.sysmon
// together a fifth of its samples). The cost: the P is kept
// from the other goroutines while the disk writes (the other Ps run them;
// not done with a single P), and a stop of the world (garbage collection)
// waits for the fdatasync to return, which is why only small ones go this
// way, and only while the disk answers them fast: one that took longer
// than slowSync (a slow or busy disk: a disk's cache flush, the file
// system's commit of other files' data) turns the raw way off for
// slowSyncOff, so that the collector's pauses do not stretch to the
// disk's latency. A disk that hangs in the middle of a raw fdatasync
// still stops the whole process at the next collection until it
// answers; mail stops then anyway (every Sync waits for the disk), but
// the control socket, the metrics and the watchdog's pings stop too.
func holdP() bool {
	if runtime.GOMAXPROCS(0) < 2 {
		return false
	}
	off := rawSyncOffUntil.Load()
	return off == nil || !time.Now().Before(*off)
}

// slowSync is the longest a raw fdatasync may take before holdP turns the
// raw way off for slowSyncOff (variables: tests set them).
var (
	slowSync    = 2 * time.Millisecond
	slowSyncOff = 30 * time.Second
)

// rawSyncOffUntil is when holdP may use the raw way again (nil: now). A
// time.Time from time.Now compares by its monotonic reading, so a step of
// the wall clock neither keeps the raw way off nor turns it on early.
var rawSyncOffUntil atomic.Pointer[time.Time]

// rawSyncs counts the raw fdatasyncs made (tests).
var rawSyncs atomic.Uint64

// rawSyncDone counts a raw wait for fdatasyncs begun at start (one file's
// or a batch's through aio.go) and turns the raw way off for slowSyncOff
// when it took longer than slowSync.
func rawSyncDone(start time.Time) {
	rawSyncs.Add(1)
	if now := time.Now(); now.Sub(start) > slowSync {
		until := now.Add(slowSyncOff)
		rawSyncOffUntil.Store(&until)
	}
}

// fdatasyncHoldingP is fdatasync(2) of f as a raw system call (see holdP).
func fdatasyncHoldingP(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	start := time.Now()
	if err := rc.Control(func(fd uintptr) {
		for {
			_, _, errno = unix.RawSyscall(unix.SYS_FDATASYNC, fd, 0, 0)
			if errno != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	rawSyncDone(start)
	if errno != 0 {
		return errno
	}
	return nil
}
