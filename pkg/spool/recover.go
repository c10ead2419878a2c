package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Recover runs at start, before any delivery and before pickup. It
// returns one line per action for the log:
//
//   - what replaying the journal found (a torn last line, skipped lines);
//   - a queue of the old layout (a directory per state, a file per
//     message: queue/msg/<id> and queue/<state>/<id>) is imported into
//     the store, made durable, then removed (migrateLegacy);
//   - a message whose maildrop file still exists (hasDrop) was never
//     acknowledged to pickup, which removes the maildrop copy only after
//     the Sync of its batch: it is dropped, and pickup queues it again
//     from the maildrop copy;
//   - a message whose segment is missing or too short is dropped
//     ("message file missing");
//   - active goes back to incoming (never attempted) or deferred;
//   - segments holding no message are removed (after a replay that
//     skipped damaged lines, one that no readable line names is moved to
//     queue/quarantine/ instead: it may hold the only copy of messages
//     the damaged lines queued), queue/tmp is swept;
//   - the journal is rewritten from memory (compacted) and made durable;
//     when the rewrite cannot be done (no space) the journal is synced as
//     it is, and the next start redoes what was changed in memory only.
func (q *Queue) Recover(hasDrop func(id string) bool) ([]string, error) {
	log := q.replayed
	q.replayed = nil
	mlog, err := q.migrateLegacy()
	log = append(log, mlog...)
	if err != nil {
		return log, err
	}
	q.mu.Lock()
	g0 := len(q.gone)
	for _, s := range q.segs {
		// What the lines state durable is, from now on, what this
		// relayd's add lines and rewrites state durable. A segment
		// longer than that (messages whose Sync had not returned, a
		// write cut short, or a crash of the process alone, which leaves
		// its writes in the page cache) is fdatasynced by the Sync at
		// the end, before the rewritten journal states it whole.
		d := max(q.durable[s.n], 0)
		s.stated = d
		if d >= s.size {
			s.synced = s.size
		} else {
			s.synced = d
			s.dirty = true
		}
	}
	named := map[uint64]bool{}
	for _, e := range q.entries {
		named[e.seg] = true
	}
	for id, e := range q.entries {
		s := q.segs[e.seg]
		// unsure: no line states its bytes durable (see "dur" in
		// journal.go): the power may have gone while the Sync of its
		// add line was making them so.
		unsure := !covers(q.durable[e.seg], e.off, e.len)
		switch {
		case hasDrop(id):
			q.dropLocked(id, e)
			log = append(log, fmt.Sprintf("removed-unacknowledged id=%s state=%s reason=\"its maildrop file is still there: pickup queues it again\"", id, States[e.st]))
			continue
		case s == nil || e.off < 0 || e.len <= 0 || e.off > s.size-e.len:
			// (Written so that no sum can overflow: the numbers come
			// from a file.)
			q.dropLocked(id, e)
			if unsure {
				log = append(log, fmt.Sprintf("removed-not-durable id=%s state=%s reason=%q problem=\"message file missing or too short\"", id, States[e.st], notDurable))
			} else {
				log = append(log, fmt.Sprintf("removed-state id=%s state=%s reason=\"message file missing\"", id, States[e.st]))
			}
			continue
		case unsure:
			if err := readWhole(s, id, e); errors.Is(err, ErrCorrupt) {
				q.dropLocked(id, e)
				log = append(log, fmt.Sprintf("removed-not-durable id=%s state=%s reason=%q problem=%q", id, States[e.st], notDurable, err.Error()))
				continue
			}
			// Whole (or unreadable for another cause, an I/O error:
			// then kept, and reading it for delivery tells).
		}
		if e.st == stActive {
			attempted := true
			if d, err := decodeDelivery(e.d); err == nil && d.Attempts == 0 {
				attempted = false
			}
			to := stIncoming
			if attempted {
				to = stDeferred
			}
			q.setStateLocked(id, e, to, e.d)
			log = append(log, fmt.Sprintf("requeued id=%s attempted=%v", id, attempted))
		}
	}
	q.durable = nil
	// The ranges of the messages dropped above: the journal names them
	// until it is rewritten (see seedDeadLocked below).
	dropped := append([]goneSpan(nil), q.gone[g0:]...)
	q.gone = q.gone[:g0]
	for _, s := range q.segs {
		if s.live == 0 && !s.busy && q.damaged && !named[s.n] {
			// The journal had lines it could not read: this segment,
			// which no line read names, may hold the only copy of
			// messages the lost lines queued. Kept for the
			// administrator, never removed.
			name := segName(s.n)
			to, err := q.QuarantineFile(q.segdir, name, "segment-"+name)
			if err != nil {
				log = append(log, fmt.Sprintf("kept-segment file=%s problem=%q", s.f.Name(), err.Error()))
				continue
			}
			delete(q.segs, s.n)
			s.gone = true
			s.f.Close()
			log = append(log, fmt.Sprintf("quarantined-segment file=%s to=%s reason=\"no readable journal line names it and the journal had damaged lines: it may hold messages those lines queued\"", s.f.Name(), filepath.Join(DirQuarantine, to)))
			continue
		}
		if s.live == 0 && !s.busy {
			if err := q.unlinkLocked(s); err == nil {
				log = append(log, fmt.Sprintf("removed-segment file=%s reason=\"no message left in it\"", s.f.Name()))
			}
		}
	}
	q.dying = q.dying[:0]
	q.mu.Unlock()
	if names, err := q.tmpdir.Readdirnames(-1); err == nil {
		for _, n := range names {
			unix.Unlinkat(int(q.tmpdir.Fd()), n, 0)
		}
		q.tmpdir.Seek(0, io.SeekStart)
	}
	q.syncMu.Lock()
	err = q.syncLocked(true)
	if q.putOff != nil {
		// What Recover changed in memory only (entries dropped,
		// active requeued) it does again at the next start.
		log = append(log, fmt.Sprintf("journal-compaction-put-off problem=%q", q.putOff.Error()))
		q.putOff = nil
	} else {
		// Rewritten: the journal no longer names them.
		dropped = nil
	}
	synced := q.synced
	q.syncMu.Unlock()
	if err == nil {
		// What no message occupies in the segments kept is punched now
		// that the journal is durable; not what the journal as it is
		// still names (dropped, when it could not be rewritten).
		q.mu.Lock()
		q.seedDeadLocked(dropped)
		q.mu.Unlock()
		q.punchDead(synced)
	}
	return log, err
}

// notDurable is the reason Recover gives for a message dropped because
// its bytes are not whole and no journal line states them durable.
const notDurable = "its bytes are not whole and no journal line states them durable: the power went while the Sync of its journal line was making them so, and that Sync had not returned, so nothing was acknowledged (or the segment was damaged since)"

// wholeReads counts the messages Recover read whole (tests).
var wholeReads atomic.Uint64

// readWhole reads the message that e says segment s holds at its place,
// and reports whether its bytes are there whole, as written: a header
// (the magic first line, through the blank line) naming id, whose "size"
// and "crc32c" match the bytes after it, up to the end of e exactly. The
// header's other fields are not checked: a message whose bytes are whole
// but whose header Decode refuses is quarantined when it is read for
// delivery, as it would have been without this check. An error that is
// not ErrCorrupt (an I/O error) says nothing either way.
func readWhole(s *segment, id string, e *entry) error {
	wholeReads.Add(1)
	br := bufio.NewReaderSize(io.NewSectionReader(s.f, e.off, min(e.len, maxHeader)), 4<<10)
	var off int64
	var gotID, size, crc string
	for n := 0; ; n++ {
		l, err := br.ReadString('\n')
		off += int64(len(l))
		if err == io.EOF {
			return fmt.Errorf("%w: no end of header", ErrTruncated)
		}
		if err != nil {
			return err
		}
		l = l[:len(l)-1]
		if n == 0 {
			if !strings.HasPrefix(l, magic) {
				return fmt.Errorf("%w: not a mailshim spool file", ErrCorrupt)
			}
			continue
		}
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, " ")
		switch k {
		case "id":
			gotID = v
		case "size":
			size = v
		case "crc32c":
			crc = v
		}
	}
	if gotID != id {
		return fmt.Errorf("%w: its header names %q", ErrCorrupt, gotID)
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || n != e.len-off {
		return fmt.Errorf("%w: size %q, %d bytes after the header", ErrSize, size, e.len-off)
	}
	want, err := strconv.ParseUint(crc, 16, 32)
	if err != nil {
		return fmt.Errorf("%w: crc32c %q", ErrCorrupt, crc)
	}
	m := Meta{BodyOffset: off, Size: n, CRC: uint32(want)}
	_, err = io.Copy(io.Discard, m.Body(io.NewSectionReader(s.f, e.off, e.len)))
	return err
}

// legacyDirs are the directories of the old layout under queue/.
var legacyDirs = []string{"msg", Incoming, Active, Deferred, Held, Failed}

// migrateLegacy imports a queue of the old layout (queue/msg/<id>, the
// message, and queue/<state>/<id>, its delivery record) into the store:
// each message with a state is copied into a segment with its record,
// the lot is made durable, and only then are the old files and
// directories removed. A message without a state (an enqueue or a Done cut
// short) is not imported: pickup queues it again from its maildrop file
// if that is still there, as the old layout's recovery did. A message
// file that does not decode is quarantined. An active record wins over an
// older copy elsewhere (a Claim is not synced). Safe to rerun after a
// crash: what the store has already is not imported again.
func (q *Queue) migrateLegacy() ([]string, error) {
	qroot := filepath.Join(q.Root, DirQueue)
	found := false
	for _, d := range legacyDirs {
		if _, err := os.Lstat(filepath.Join(qroot, d)); err == nil {
			found = true
		}
	}
	if !found {
		return nil, nil
	}
	var log []string
	msgDir, err := OpenDir(q.Root, DirMsg)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if msgDir != nil {
		defer msgDir.Close()
		n := 0
		for _, st := range []uint8{stActive, stIncoming, stDeferred, stHeld, stFailed} {
			ids, err := listIDs(filepath.Join(qroot, States[st]))
			if err != nil {
				return log, err
			}
			for _, id := range ids {
				if q.HasMessage(id) {
					continue
				}
				l, err := q.importLegacy(msgDir, id, st)
				if l != "" {
					log = append(log, l)
				}
				if err != nil {
					return log, err
				}
				n++
			}
		}
		if err := q.Sync(); err != nil {
			return log, err
		}
		log = append(log, fmt.Sprintf("migrated n=%d from=\"%s/{msg,%s}\" to=\"%s + %s\"", n, qroot, strings.Join(States, ","), JournalFile, DirSeg))
	}
	for _, d := range legacyDirs {
		if err := os.RemoveAll(filepath.Join(qroot, d)); err != nil {
			return log, err
		}
	}
	return log, q.qdir.Sync()
}

// importLegacy copies old-layout message id, in state st, into the store
// (without Sync).
func (q *Queue) importLegacy(msgDir *os.File, id string, st uint8) (string, error) {
	statePath := filepath.Join(q.Root, DirQueue, States[st], id)
	f, size, err := openRegular(int(msgDir.Fd()), id, filepath.Join(q.Root, DirMsg, id), true)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Sprintf("removed-state id=%s state=%s reason=\"message file missing\"", id, States[st]), nil
	}
	if err == nil {
		defer f.Close()
	}
	var m *Meta
	if err == nil {
		m, err = Decode(f, size)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			return "", err
		}
		name, qerr := q.QuarantineFile(msgDir, id, id)
		if qerr != nil {
			return "", qerr
		}
		return fmt.Sprintf("quarantined id=%s file=%s reason=%q", id, filepath.Join(DirQuarantine, name), err.Error()), nil
	}
	var d []byte
	if b, err := os.ReadFile(statePath); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		if rec, err := decodeDelivery([]byte(strings.TrimSpace(string(b)))); err == nil {
			d, _ = encodeDelivery(rec)
		} else {
			// An unreadable record counts as attempted, as it did.
			d, _ = encodeDelivery(&Delivery{Attempts: 1, Reason: "delivery record unreadable when the queue was migrated"})
		}
	}
	s, err := q.acquire(false)
	if err != nil {
		return "", err
	}
	start := s.size
	w := offWriter{f: s.f, off: start}
	if n, err := io.Copy(&w, io.NewSectionReader(f, 0, size)); err != nil || n != size {
		q.cutBack(s, start, w.off)
		q.mu.Lock()
		q.releaseLocked(s)
		q.mu.Unlock()
		if err == nil {
			err = io.ErrShortWrite
		}
		return "", fmt.Errorf("spool: migrating %s: %w", id, err)
	}
	e := &entry{seg: s.n, off: start, len: size, d: d, uid: uint32(m.Origin.UID), st: st}
	if err := q.add(id, e, s, w.off); err != nil {
		q.cutBack(s, start, w.off)
		q.mu.Lock()
		q.releaseLocked(s)
		q.mu.Unlock()
		return "", err
	}
	return "", nil
}

// openRegular opens name in the directory dfd for reading without
// following a link or blocking (a FIFO put there must not hang relayd),
// and refuses anything but a regular file — with a single link when
// oneLink — as ErrCorrupt. It returns the file and its size.
func openRegular(dfd int, name, path string, oneLink bool) (*os.File, int64, error) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, 0, fmt.Errorf("%s: %w: a symbolic link", path, ErrCorrupt)
		}
		return nil, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		unix.Close(fd)
		return nil, 0, fmt.Errorf("%s: %w: not a regular file", path, ErrCorrupt)
	case oneLink && st.Nlink != 1:
		unix.Close(fd)
		return nil, 0, fmt.Errorf("%s: %w: %d links", path, ErrCorrupt, st.Nlink)
	}
	return os.NewFile(uintptr(fd), path), st.Size, nil
}
