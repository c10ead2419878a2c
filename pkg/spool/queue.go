package spool

// relayd's queue at rest: directories are states, renames are transitions.
//
//	maildrop/<id> ──pickup──▶ msg/<id> + incoming/<id>
//	incoming ─Claim─▶ active ─Done─▶ (state, then message, removed)
//	                        ├─Defer─▶ deferred ─Claim─▶ active ...
//	                        └─Fail──▶ failed   (kept: a failed bounce)
//	incoming|deferred ─Hold─▶ held ─Release─▶ incoming
//	anything unreadable ─Quarantine─▶ quarantine (kept, never deleted)
//
// queue/msg/<id> is the immutable message (the maildrop format, with the
// envelope relayd resolved). The state file queue/<state>/<id> holds the
// mutable delivery record (Delivery, JSON), rewritten atomically (temp file
// in queue/tmp, rename; fsync'd alone by WriteState, or by batch:
// WriteStateNoSync then one Sync). Each transition is one rename of the
// state file, so after a crash every message is in exactly one state (see
// Recover for the one exception an unsynced Claim allows). Each
// transition says why it is fsync'd or not: only what would lose or
// resurrect-for-ever a message needs it; a duplicate is allowed. Recover moves what
// was active back to incoming/deferred; the attempt was recorded before
// dialing, so an interrupted delivery is retried on its normal schedule,
// never in a hot loop.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// States: the directories under queue/ that hold state files.
const (
	Incoming   = "incoming"
	Active     = "active"
	Deferred   = "deferred"
	Held       = "held"
	Failed     = "failed"
	Quarantine = "quarantine"
)

// States lists every state directory.
var States = []string{Incoming, Active, Deferred, Held, Failed}

// ErrNotFound means no state file (or message) has that ID in the states
// asked for.
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

// Queue is an open queue/ directory.
type Queue struct {
	Root string // the spool root
	dirs map[string]*os.File
}

// OpenQueue opens the queue directories of the spool at root (they must
// exist: see Prepare).
func OpenQueue(root string) (*Queue, error) {
	q := &Queue{Root: root, dirs: map[string]*os.File{}}
	for _, d := range PrivateDirs {
		f, err := OpenDir(root, d)
		if err != nil {
			q.Close()
			return nil, err
		}
		q.dirs[strings.TrimPrefix(d, DirQueue+"/")] = f
	}
	return q, nil
}

// Close releases the directory descriptors.
func (q *Queue) Close() {
	for _, f := range q.dirs {
		f.Close()
	}
}

// MsgDir is queue/msg, for NewDrop.
func (q *Queue) MsgDir() *os.File { return q.dirs["msg"] }

// Dir returns the open directory of a state ("msg", "tmp" too).
func (q *Queue) Dir(state string) *os.File { return q.dirs[state] }

func (q *Queue) fd(state string) int { return int(q.dirs[state].Fd()) }

// OpenMessage opens queue/msg/<id> and decodes its header.
func (q *Queue) OpenMessage(id string) (*os.File, *Meta, error) {
	if !ValidID(id) {
		return nil, nil, fmt.Errorf("spool: bad queue id %q", id)
	}
	f, size, err := openRegular(q.fd("msg"), id, filepath.Join(q.Root, DirMsg, id), true)
	if err != nil {
		return nil, nil, err
	}
	m, err := Decode(f, size)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return f, m, nil
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

// HasMessage reports whether queue/msg/<id> exists.
func (q *Queue) HasMessage(id string) bool {
	var st unix.Stat_t
	return unix.Fstatat(q.fd("msg"), id, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// RemoveMessage removes queue/msg/<id> (an interrupted enqueue, or after
// Done) and fsyncs queue/msg.
func (q *Queue) RemoveMessage(id string) error {
	if err := unix.Unlinkat(q.fd("msg"), id, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlink", Path: filepath.Join(q.Root, DirMsg, id), Err: err}
	}
	return q.dirs["msg"].Sync()
}

// Locate returns the state of id, or ErrNotFound.
func (q *Queue) Locate(id string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	for _, s := range States {
		var st unix.Stat_t
		if unix.Fstatat(q.fd(s), id, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return s, nil
		}
	}
	return "", fmt.Errorf("%s: %w", id, ErrNotFound)
}

// List returns the IDs in a state directory, sorted (that is, by arrival).
func (q *Queue) List(state string) ([]string, error) {
	f, err := os.Open(filepath.Join(q.Root, DirQueue, state))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// ReadState reads the delivery record of id in state.
func (q *Queue) ReadState(state, id string) (*Delivery, error) {
	f, _, err := openRegular(q.fd(state), id, filepath.Join(q.Root, DirQueue, state, id), false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s in %s: %w", id, state, ErrNotFound)
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, err
	}
	d := new(Delivery)
	if len(b) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, fmt.Errorf("%s: %w: state file: %v", filepath.Join(q.Root, DirQueue, state, id), ErrCorrupt, err)
	}
	return d, nil
}

// WriteState atomically replaces (or creates) the state file of id in
// state: temp file in queue/tmp, fsync, rename, fsync of the directory.
func (q *Queue) WriteState(state, id string, d *Delivery) error {
	return q.writeState(true, state, id, d)
}

// WriteStateNoSync is WriteState without the fsyncs: the file is replaced
// atomically (a crash leaves the old record or the new one, never a mix)
// but the new one is durable only after Sync. It lets a batch of records
// share one Sync.
func (q *Queue) WriteStateNoSync(state, id string, d *Delivery) error {
	return q.writeState(false, state, id, d)
}

// CreateEmptyState creates the state file of a new message in state as an
// empty file (an empty record: never attempted), without fsync. One
// creation, no temporary file and no rename: an empty file has no content
// a crash could tear. It never replaces a file. Durable after Sync.
func (q *Queue) CreateEmptyState(state, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: bad queue id %q", id)
	}
	fd, err := unix.Openat(q.fd(state), id, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(q.Root, DirQueue, state, id), Err: err}
	}
	return unix.Close(fd)
}

// WriteFirstStateNoSync is WriteStateNoSync for a record that replaces an
// empty one (a message's first attempt): the record is written in place
// into the empty state file, sparing a temporary file, a rename and the
// allocation of a new inode. That is safe because the old record is
// empty: a crash before the caller's Sync leaves the file empty (never
// attempted) or, after a power loss in the middle of the write, torn — an
// unreadable record, which every reader treats as attempted and starts
// afresh, losing nothing that the empty record held. When the file is not
// empty it falls back to WriteStateNoSync.
func (q *Queue) WriteFirstStateNoSync(state, id string, d *Delivery) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: bad queue id %q", id)
	}
	fd, err := unix.Openat(q.fd(state), id, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return q.writeState(false, state, id, d)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 || st.Nlink != 1 {
		unix.Close(fd)
		return q.writeState(false, state, id, d)
	}
	b, err := json.Marshal(d)
	if err != nil {
		unix.Close(fd)
		return err
	}
	b = append(b, '\n')
	f := os.NewFile(uintptr(fd), filepath.Join(q.Root, DirQueue, state, id))
	_, werr := f.WriteAt(b, 0)
	if werr != nil {
		// Leave an empty record rather than a partial one.
		unix.Ftruncate(fd, 0)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("spool: writing state %s/%s: %w", state, id, werr)
	}
	return nil
}

func (q *Queue) writeState(sync bool, state, id string, d *Delivery) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: bad queue id %q", id)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	tmp := id + "." + state + ".tmp"
	tfd, err := unix.Openat(q.fd("tmp"), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(q.Root, DirTmp, tmp), Err: err}
	}
	f := os.NewFile(uintptr(tfd), tmp)
	_, werr := f.Write(b)
	if werr == nil && sync {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(q.fd("tmp"), tmp, q.fd(state), id)
	}
	if werr != nil {
		unix.Unlinkat(q.fd("tmp"), tmp, 0)
		return fmt.Errorf("spool: writing state %s/%s: %w", state, id, werr)
	}
	if !sync {
		return nil
	}
	return q.dirs[state].Sync()
}

// move renames the state file of id from one of the states in from to
// state to, and fsyncs both directories. It never replaces a state file.
func (q *Queue) move(id, to string, from ...string) (string, error) {
	return q.rename(true, id, to, from...)
}

// rename is move; sync says whether to fsync both directories.
func (q *Queue) rename(sync bool, id, to string, from ...string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	for _, s := range from {
		err := unix.Renameat2(q.fd(s), id, q.fd(to), id, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("spool: %s/%s -> %s: %w", s, id, to, err)
		}
		if !sync {
			return s, nil
		}
		if err := q.dirs[to].Sync(); err != nil {
			return s, err
		}
		return s, q.dirs[s].Sync()
	}
	return "", fmt.Errorf("%s (in %s): %w", id, strings.Join(from, " or "), ErrNotFound)
}

// Claim takes id for delivery: incoming or deferred → active. It returns
// the state it came from; ErrNotFound if it was in neither.
//
// No fsync: the claim itself promises nothing. If a crash loses the
// rename, the message is back in incoming/ or deferred/ with the record it
// had, exactly what Recover makes of a claim that did persist (active/ goes
// back to incoming/ or deferred/ by its record). What must be durable
// before dialing is the attempt record written next into active/ (by
// WriteState, or WriteStateNoSync followed by Sync); making it durable
// commits the rename too, on the journaling file systems a spool lives on.
// Should a crash ever leave the same ID in active/ and in incoming/ or
// deferred/, Recover keeps the active/ record (the newer) and removes the
// other.
func (q *Queue) Claim(id string) (string, error) {
	return q.rename(false, id, Active, Incoming, Deferred)
}

// Defer ends a delivery attempt with recipients left to try: active → deferred.
func (q *Queue) Defer(id string) error { _, err := q.move(id, Deferred, Active); return err }

// Fail ends a delivery for good and keeps the message: active → failed.
func (q *Queue) Fail(id string) error { _, err := q.move(id, Failed, Active); return err }

// Hold stops delivery of a waiting message: incoming or deferred → held.
func (q *Queue) Hold(id string) error { _, err := q.move(id, Held, Incoming, Deferred); return err }

// Release puts a held (or failed) message back for immediate delivery:
// held or failed → incoming.
func (q *Queue) Release(id string) error { _, err := q.move(id, Incoming, Held, Failed); return err }

// Requeue puts an interrupted delivery back: active → incoming (never
// attempted) or deferred.
func (q *Queue) Requeue(id string, attempted bool) error {
	to := Incoming
	if attempted {
		to = Deferred
	}
	_, err := q.move(id, to, Active)
	return err
}

// Done ends a delivery that needs nothing more: the state file is removed
// (that is the commit point), then the message.
//
// No fsync: the upstream has the message, so a crash that resurrects
// either unlink can only cause a duplicate, which at-least-once allows: a
// state file without its message is dropped by Recover, a message without
// a state file (and no maildrop copy) is removed as an orphan, and both
// together are delivered again. A process crash loses no unlink at all
// (the kernel has them); only a power loss can, and the next Sync (the
// next batch's attempt records, or the file system's own commit within
// seconds) bounds how many.
func (q *Queue) Done(id string) error {
	if err := unix.Unlinkat(q.fd(Active), id, 0); err != nil {
		return &os.PathError{Op: "unlink", Path: filepath.Join(q.Root, DirActive, id), Err: err}
	}
	if err := unix.Unlinkat(q.fd("msg"), id, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlink", Path: filepath.Join(q.Root, DirMsg, id), Err: err}
	}
	return nil
}

// Sync makes every change made so far in the spool's file system durable
// (syncfs(2) on queue/): the group commit of WriteStateNoSync, Claim and
// Done.
func (q *Queue) Sync() error {
	if err := unix.Syncfs(q.fd("tmp")); err != nil {
		return fmt.Errorf("spool: syncfs %s: %w", q.Root, err)
	}
	return nil
}

// Delete removes a message that is not being delivered (any state but
// active). It returns the state it was in.
func (q *Queue) Delete(id string) (string, error) {
	if !ValidID(id) {
		return "", fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	for _, s := range []string{Incoming, Deferred, Held, Failed} {
		err := unix.Unlinkat(q.fd(s), id, 0)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return "", &os.PathError{Op: "unlink", Path: filepath.Join(q.Root, DirQueue, s, id), Err: err}
		}
		if err := q.dirs[s].Sync(); err != nil {
			return s, err
		}
		return s, q.RemoveMessage(id)
	}
	if _, err := q.Locate(id); err == nil {
		return Active, fmt.Errorf("%s is being delivered right now; try again in a moment", id)
	}
	return "", fmt.Errorf("%s: %w", id, ErrNotFound)
}

// QuarantineMessage moves queue/msg/<id> to queue/quarantine/<id> and
// removes its state file from whichever state held it. Kept, never deleted.
func (q *Queue) QuarantineMessage(id string) error {
	name, err := q.QuarantineFile(q.dirs["msg"], id, id)
	if err != nil {
		return err
	}
	_ = name
	for _, s := range States {
		if unix.Unlinkat(q.fd(s), id, 0) == nil {
			q.dirs[s].Sync()
		}
	}
	return nil
}

// QuarantineFile moves the file name in dir (maildrop/ or queue/msg/) into
// queue/quarantine/ under a name derived from label that replaces nothing,
// and fsyncs both directories. It returns the new name.
func (q *Queue) QuarantineFile(dir *os.File, name, label string) (string, error) {
	base := sanitize(label)
	qfd := q.fd(Quarantine)
	for i := 0; i < 100; i++ {
		target := base
		if i > 0 {
			target = fmt.Sprintf("%s.%d", base, i)
		}
		err := unix.Renameat2(int(dir.Fd()), name, qfd, target, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("spool: quarantine %s: %w", filepath.Join(dir.Name(), name), err)
		}
		q.dirs[Quarantine].Sync()
		return target, dir.Sync()
	}
	return "", fmt.Errorf("spool: quarantine %s: too many files named %s", name, base)
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

// Recover runs at start, before any delivery: state files left in active/
// by a crash go back to deferred/ (attempted) or incoming/; state files
// whose message is missing are removed; messages without a state file
// whose maildrop file is gone (an enqueue that never finished, or a Done
// that did not) are removed; leftovers in queue/tmp are swept. hasDrop
// reports whether maildrop/<id> still exists (then pickup redoes the
// enqueue). It returns one line per action for the log.
func (q *Queue) Recover(hasDrop func(id string) bool) ([]string, error) {
	var log []string
	active, err := q.List(Active)
	if err != nil {
		return nil, err
	}
	for _, id := range active {
		d, err := q.ReadState(Active, id)
		attempted := err != nil || d.Attempts > 0
		// A Claim's rename is not fsync'd: should a crash have left an
		// older copy of the record where it came from, the active one
		// (the newer) wins.
		for _, s := range []string{Incoming, Deferred} {
			if unix.Unlinkat(q.fd(s), id, 0) == nil {
				q.dirs[s].Sync()
				log = append(log, fmt.Sprintf("removed-stale-state id=%s state=%s", id, s))
			}
		}
		if err := q.Requeue(id, attempted); err != nil {
			return log, err
		}
		log = append(log, fmt.Sprintf("requeued id=%s attempted=%v", id, attempted))
	}
	have := map[string]bool{}
	for _, s := range States {
		ids, err := q.List(s)
		if err != nil {
			return log, err
		}
		for _, id := range ids {
			if !q.HasMessage(id) {
				unix.Unlinkat(q.fd(s), id, 0)
				q.dirs[s].Sync()
				log = append(log, fmt.Sprintf("removed-state id=%s state=%s reason=\"message file missing\"", id, s))
				continue
			}
			have[id] = true
		}
	}
	msgs, err := q.List("msg")
	if err != nil {
		return log, err
	}
	for _, id := range msgs {
		if have[id] || hasDrop(id) {
			continue
		}
		q.RemoveMessage(id)
		log = append(log, fmt.Sprintf("removed-orphan id=%s", id))
	}
	// Named temporary files of a Drop into queue/msg cut short (file
	// systems without O_TMPFILE): relayd is their only writer.
	if names, err := os.ReadDir(filepath.Join(q.Root, DirMsg)); err == nil {
		for _, e := range names {
			if strings.HasPrefix(e.Name(), TempPrefix) && unix.Unlinkat(q.fd("msg"), e.Name(), 0) == nil {
				log = append(log, fmt.Sprintf("removed-temp file=%s", e.Name()))
			}
		}
		q.dirs["msg"].Sync()
	}
	if tmp, err := os.ReadDir(filepath.Join(q.Root, DirTmp)); err == nil {
		for _, e := range tmp {
			unix.Unlinkat(q.fd("tmp"), e.Name(), 0)
		}
	}
	return log, nil
}

// MsgWriter writes a message file into queue/msg like Drop, without the
// fsyncs: pickup's group commit (a batch of messages and their state files,
// then one Sync, then the maildrop files removed) makes it durable. Until
// that Sync the maildrop file is the message's durable copy. It needs
// O_TMPFILE (NewMessage fails otherwise: use NewDrop), so a relayd killed
// while writing leaves no name behind.
type MsgWriter struct {
	q       *Queue
	f       *os.File
	w       *bufio.Writer
	meta    Meta
	sizeOff int64
	crc     hash.Hash32
	n       int64
	done    bool
}

// NewMessage starts queue/msg/<m.ID> (see MsgWriter).
func (q *Queue) NewMessage(m *Meta) (*MsgWriter, error) {
	if !ValidID(m.ID) {
		return nil, fmt.Errorf("spool: bad queue id %q", m.ID)
	}
	fd, err := unix.Openat(q.fd("msg"), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, uint32(ModeDropFile.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: filepath.Join(q.Root, DirMsg), Err: err}
	}
	if _, err := os.Stat("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
		unix.Close(fd)
		return nil, err // no /proc to link it through
	}
	if err := unix.Fchmod(fd, uint32(ModeDropFile.Perm())); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "chmod", Path: filepath.Join(q.Root, DirMsg), Err: err}
	}
	w := &MsgWriter{q: q, f: os.NewFile(uintptr(fd), filepath.Join(q.Root, DirMsg, m.ID)), meta: *m, crc: NewCRC()}
	hdr, off := EncodeHeader(&w.meta)
	w.sizeOff = off
	w.w = writers.Get().(*bufio.Writer)
	w.w.Reset(w.f)
	if _, err := w.w.Write(hdr); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// Write appends message bytes.
func (w *MsgWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("spool: message already committed or aborted")
	}
	n, err := w.w.Write(p)
	w.crc.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Size is the number of message bytes written so far.
func (w *MsgWriter) Size() int64 { return w.n }

// Commit records the size and checksum and links the file in under its
// queue ID, never replacing a name. No fsync (see MsgWriter).
func (w *MsgWriter) Commit() error {
	if w.done {
		return errors.New("spool: message already committed or aborted")
	}
	defer w.Abort()
	if err := w.w.Flush(); err != nil {
		return err
	}
	if _, err := w.f.WriteAt(PatchSize(w.n, w.crc.Sum32()), w.sizeOff); err != nil {
		return err
	}
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(w.f.Fd())), w.q.fd("msg"), w.meta.ID, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		return &os.PathError{Op: "link", Path: filepath.Join(w.q.Root, DirMsg, w.meta.ID), Err: err}
	}
	return nil
}

// Abort discards an uncommitted message (the file has no name); safe to
// call more than once.
func (w *MsgWriter) Abort() {
	if !w.done {
		w.done = true
		w.f.Close()
		if w.w != nil {
			w.w.Reset(nil)
			writers.Put(w.w)
			w.w = nil
		}
	}
}

// writers recycles MsgWriter's 64 KiB buffers.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
