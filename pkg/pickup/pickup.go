// Package pickup drains maildrop/ into relayd's private queue.
//
// Every file in maildrop/ is examined exactly like Postfix's pickup does:
// opened without following links or blocking (O_NOFOLLOW|O_NONBLOCK),
// fstat'd — it must be a regular file with one link — and its owner taken
// as the caller's UID (the kernel wrote it; the header's uid is only
// compared, and a mismatch logged). Anything else — symbolic links, FIFOs,
// directories, hard links, files that do not decode, bad names — is moved
// to queue/quarantine/ with a log line, never deleted, never fatal. A file
// relayd may not read is left where it is with a loud error line that
// names its owner and the fix (Pickup.unreadableFile).
// Temporary files of killed writers (spool.TempPrefix) are removed after
// [queue] temp_grace.
//
// A well-formed file whose message pickup will not queue — a header
// section over the limits of package message (the same scanner and limits
// sendmail used), no recipients — is not damaged but refused: sendmail told
// its caller it was stored, so it is bounced to its sender with the reason
// and the fix (Pickup.Reject, a DSN) and removed, with a loud
// event=rejected line; one with no one to tell (the null sender, a NOTIFY
// without FAILURE) is quarantined, up to the account's max_quarantined
// files there, and beyond it removed with that line saying so.
//
// A good message is rewritten on its way into the queue (enqueue): the
// recipients are qualified and aliases expanded, the sender resolved
// through [senders] (envelope and a bare local From: alike), and
// Received: (naming the UID), the origin header, and a missing Date:,
// Message-ID: and From: added. It is streamed into the queue (a segment
// of spool.Queue) under the same queue ID, in incoming, made durable (a
// scan writes a batch of up to batchSize messages, then one Queue.Sync for
// all of them: group commit), and only then is the maildrop file
// unlinked. After a crash between the two, relayd's start
// (spool.Queue.Recover) drops the queued copy, and pickup queues the
// message again from the maildrop file. Messages are streamed: only the
// header section is held in memory.
//
// Files appear through inotify (IN_CREATE, IN_MOVED_TO) and a periodic scan,
// and everything already in maildrop/ is picked up at start.
//
// Its Go API is not stable.
package pickup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// readBuffer is the size of the buffer the message is streamed through.
const readBuffer = 64 << 10

// readers recycles the read buffers (one 64 KiB allocation per message
// was a visible share of a drain's CPU).
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBuffer) }}

// Pickup moves messages from maildrop/ into the queue.
type Pickup struct {
	Queue *spool.Queue
	Log   *maillog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Enqueued is called after each message is queued (the queue's Kick).
	Enqueued func(id string)
	// Reject queues a bounce (DSN) to m.Env.Sender for a maildrop file
	// pickup refuses (queue.Queue.Reject); headers is the message's header
	// section. It returns the bounce's queue ID. When nil, such files are
	// quarantined.
	Reject func(m *spool.Meta, why *RejectError, headers []byte) (string, error)
	// Gate, when set (before Run), is the per-account policy: every
	// message passes it once its envelope and header are final, and is
	// queued, held, deferred or refused as it says (policy.go).
	Gate *policy.Gate
	// Deferred is told of a message the policy queued as deferred and
	// when it may be sent (the queue's Schedule), once it is durable.
	Deferred func(id string, at time.Time)

	rw        atomic.Pointer[Rewriter]
	scanEvery atomic.Int64 // [queue] scan_interval
	grace     atomic.Int64 // [queue] temp_grace
	maildrop  *os.File
	mu        sync.Mutex // one pass over maildrop/ at a time
	// pending (under mu) is the current batch of a scan: maildrop files
	// whose queued copy is written but not yet durable, and the IDs to
	// announce. See flush.
	pending   []string
	announced []string
	// deferredAt (under mu) holds the batch's messages the policy
	// deferred, and until when, to tell the queue at the flush.
	deferredAt map[string]time.Time
	users      map[int]string // user names looked up during one pass ("": none)
	// unreadable (under mu) holds the maildrop files found unreadable and
	// already reported; seen collects those of the current pass, so that
	// a file that went away is forgotten (see unreadableFile).
	unreadable, seen map[string]bool
	// quarFailed (under mu) holds the maildrop files whose quarantine
	// failed, with when: tried again at the next periodic scan, not at
	// once (the move undone wakes the inotify watch: no retry loop).
	quarFailed map[string]time.Time
	// quarCount (under mu) counts the files of queue/quarantine/ by
	// owner, from a scan at quarScan (see quarantinedBy).
	quarCount map[int]int
	quarScan  time.Time
	// held (under heldMu) is pending as a set, for the queue (Holds).
	heldMu sync.Mutex
	held   map[string]bool
	// committer groups the messages of Store (commit.go).
	committer committer
}

// Holds reports whether pickup still has the maildrop file of a queued
// message id (its batch is not committed yet): the queue must not deliver
// it before the maildrop file is gone, or a crash would queue it again —
// a duplicate per message of the batch instead of at most one per session.
func (p *Pickup) Holds(id string) bool {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	return p.held[id]
}

func (p *Pickup) hold(name string) {
	p.pending = append(p.pending, name)
	p.setHeld(name, true)
}

func (p *Pickup) setHeld(name string, held bool) {
	p.heldMu.Lock()
	if held {
		p.held[name] = true
	} else {
		delete(p.held, name)
	}
	p.heldMu.Unlock()
}

// batchSize bounds the messages a scan queues before one Sync makes them
// all durable and their maildrop files are removed.
const batchSize = 256

// New returns a Pickup for the spool whose queue is q.
func New(q *spool.Queue, rw *Rewriter, log *maillog.Logger) (*Pickup, error) {
	md, err := spool.OpenDir(q.Root, spool.DirMaildrop)
	if err != nil {
		return nil, err
	}
	p := &Pickup{Queue: q, Log: log, maildrop: md, held: map[string]bool{}}
	p.rw.Store(rw)
	p.SetIntervals(time.Minute, time.Hour)
	return p, nil
}

// SetIntervals sets how often maildrop/ is scanned beside inotify (taken
// into account at the next scan) and how old an abandoned temporary file
// must be before it is removed. Safe to call while Run runs.
func (p *Pickup) SetIntervals(scan, tempGrace time.Duration) {
	if scan <= 0 {
		scan = time.Minute
	}
	p.scanEvery.Store(int64(scan))
	p.grace.Store(int64(tempGrace))
}

// SetRewriter replaces the rewriting rules (config reload).
func (p *Pickup) SetRewriter(rw *Rewriter) { p.rw.Store(rw) }

// Sender is the envelope sender a message of o given sender is queued
// with, and so sent upstream: [senders] as configured now (Rewriter.Sender).
func (p *Pickup) Sender(sender string, o *spool.Origin) string {
	return p.rw.Load().Sender(sender, o)
}

// Close releases maildrop/.
func (p *Pickup) Close() { p.maildrop.Close() }

func (p *Pickup) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// HasDrop reports whether maildrop/<id> exists (for spool.Queue.Recover).
func (p *Pickup) HasDrop(id string) bool {
	var st unix.Stat_t
	return unix.Fstatat(int(p.maildrop.Fd()), id, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// Run picks up everything in maildrop/, then follows inotify events and
// scans every scan interval, until ctx is done.
func (p *Pickup) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	ino, err := p.watch(poke)
	if err != nil {
		p.Log.Warning("inotify unavailable, scanning only", err)
	} else {
		defer ino.Close()
	}
	for {
		p.scan(ctx)
		t := time.NewTimer(time.Duration(p.scanEvery.Load()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// watch starts an inotify watch on maildrop/ that calls poke on every
// event (and on queue overflow).
func (p *Pickup) watch(poke func()) (io.Closer, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	path := filepath.Join(p.Queue.Root, spool.DirMaildrop)
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify_add_watch %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			poke()
		}
	}()
	return f, nil
}

// scan makes one pass over maildrop/ and returns how many messages it
// queued.
func (p *Pickup) scan(ctx context.Context) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = map[int]string{}
	f, err := os.Open(filepath.Join(p.Queue.Root, spool.DirMaildrop))
	if err != nil {
		p.Log.Error("cannot read maildrop", err)
		return 0
	}
	p.seen = map[string]bool{}
	defer func() { p.unreadable, p.seen = p.seen, nil }()
	n := 0
	whole := false // every entry of maildrop/ was seen
	for {
		names, err := f.Readdirnames(512)
		for _, name := range names {
			if ctx.Err() != nil {
				break
			}
			if p.file(name) {
				n++
			}
			if len(p.pending) >= batchSize {
				p.flush()
			}
		}
		if err != nil || ctx.Err() != nil {
			whole = err == io.EOF && ctx.Err() == nil
			break
		}
	}
	f.Close()
	p.flush()
	if whole {
		// A file whose quarantine failed is tried again by the first
		// pass after its wait (file); one still waiting after a whole
		// pass was not seen: it has left maildrop/.
		for name, t := range p.quarFailed {
			if p.now().Sub(t) >= time.Duration(p.scanEvery.Load()) {
				delete(p.quarFailed, name)
			}
		}
	}
	return n
}

// flush ends a batch (group commit): one Sync of the queue makes every
// message the batch wrote durable, and only
// then are the batch's maildrop files removed and the queue told. If the
// Sync fails, the maildrop files stay: the next pass finds their queued
// copies and removes them after a Sync that succeeded (pickup-duplicate).
func (p *Pickup) flush() {
	if len(p.pending) == 0 && len(p.announced) == 0 {
		return
	}
	p.savePolicy()
	// SyncIDs: a message of the batch that another caller's failed Sync
	// dropped fails the batch too, so that its maildrop file stays.
	if err := p.Queue.SyncIDs(p.pending...); err != nil {
		p.Log.Error("cannot make the picked-up messages durable; will retry", err, slog.Int("n", len(p.pending)))
		// Still held: the next pass finds them again.
		p.pending = p.pending[:0]
		p.announced = p.announced[:0]
		return
	}
	// The batch's pickup lines are in the log before its maildrop files
	// are gone (one write for the batch).
	p.Log.WriteOut()
	for _, name := range p.pending {
		p.unlinkDrop(name)
	}
	p.syncDrops()
	p.heldMu.Lock()
	for _, name := range p.pending {
		delete(p.held, name)
	}
	p.heldMu.Unlock()
	p.pending = p.pending[:0]
	for _, id := range p.announced {
		if p.Enqueued != nil {
			p.Enqueued(id)
		}
	}
	p.announced = p.announced[:0]
	for id, at := range p.deferredAt {
		if p.Deferred != nil {
			p.Deferred(id, at)
		}
		delete(p.deferredAt, id)
	}
}

// quarantine moves maildrop/<name> to queue/quarantine with a log line,
// and reports whether it did.
func (p *Pickup) quarantine(name, reason string, more ...slog.Attr) bool {
	to, err := p.Queue.QuarantineFile(p.maildrop, name, name)
	if err != nil {
		p.Log.FileError(name, "cannot quarantine: "+reason, err, more...)
		if p.quarFailed == nil {
			p.quarFailed = map[string]time.Time{}
		}
		p.quarFailed[name] = p.now()
		return false
	}
	p.Log.QuarantineFile(name, reason, filepath.Join(spool.DirQuarantine, to), more...)
	return true
}

// unreadableFile reports a maildrop file relayd may not open — one loud
// error line per file, naming its owner and the fix — and leaves it in
// place: it is a message its sender was told was stored. sendmail gives
// every file it writes the maildrop's group (spool.NewDrop), so this one
// was written some other way (an older sendmail run by root without its
// setgid bit, a copy by hand). Every scan tries it again, so the fix
// (giving the file the maildrop's group) is all it takes.
func (p *Pickup) unreadableFile(name string, err error) {
	if p.seen != nil {
		p.seen[name] = true
	}
	if p.unreadable[name] {
		return
	}
	var more []slog.Attr
	var st, dst unix.Stat_t
	dfd := int(p.maildrop.Fd())
	path := filepath.Join(p.Queue.Root, spool.DirMaildrop, name)
	group := "the maildrop's group"
	if unix.Fstat(dfd, &dst) == nil {
		group = strconv.Itoa(int(dst.Gid))
		if g, err := user.LookupGroupId(group); err == nil {
			group = g.Name
		}
	}
	if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		owner := strconv.Itoa(int(st.Uid))
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		more = append(more, slog.Int("uid", int(st.Uid)), slog.String("user", owner), slog.Int("gid", int(st.Gid)),
			slog.String("mode", fmt.Sprintf("%04o", st.Mode&0o7777)), slog.String("cause", fmt.Sprintf("written by %s (uid %d) with group %d instead of the maildrop's group %s: a sendmail not installed setgid, run by root or with CAP_DAC_OVERRIDE, or a file copied in by hand", owner, st.Uid, st.Gid, group)))
	}
	more = append(more, slog.String("fix", fmt.Sprintf("as root: chgrp %s %s && chmod g+r %s (relayd retries it at every scan); then reinstall sendmail setgid %s", group, path, path, group)))
	p.Log.FileError(name, "relayd cannot read this maildrop file: "+err.Error(), nil, more...)
}

// file handles one maildrop entry; it reports whether a message was queued.
func (p *Pickup) file(name string) bool {
	dfd := int(p.maildrop.Fd())
	if strings.HasPrefix(name, spool.TempPrefix) {
		var st unix.Stat_t
		if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			return false
		}
		age := p.now().Sub(time.Unix(st.Mtim.Unix()))
		if age >= time.Duration(p.grace.Load()) {
			if err := unix.Unlinkat(dfd, name, 0); err == nil {
				p.Log.TempRemoved(name, int(st.Uid), age.Round(time.Second))
			}
		}
		return false
	}
	if t, ok := p.quarFailed[name]; ok {
		if p.now().Sub(t) < time.Duration(p.scanEvery.Load()) {
			return false
		}
		delete(p.quarFailed, name)
	}
	if !spool.ValidID(name) {
		p.quarantine(name, "not a queue file name")
		return false
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
		case errors.Is(err, unix.ELOOP):
			p.quarantine(name, "symbolic link")
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			p.unreadableFile(name, err)
		default:
			p.Log.FileError(name, "cannot open", err)
		}
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		p.Log.FileError(name, "fstat", err)
		return false
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		unix.Close(fd)
		p.quarantine(name, "not a regular file", slog.Int("uid", int(st.Uid)))
		return false
	case st.Nlink != 1:
		unix.Close(fd)
		p.quarantine(name, "hard link", slog.Int("uid", int(st.Uid)), slog.Uint64("links", uint64(st.Nlink)))
		return false
	}
	f, err := openDrop(fd, st.Size)
	if err != nil {
		// As a file whose header cannot be read (Decode below).
		p.quarantine(name, err.Error(), slog.Int("uid", int(st.Uid)))
		return false
	}
	defer f.Close()
	m, err := spool.Decode(f, st.Size)
	if err != nil {
		p.quarantine(name, err.Error(), slog.Int("uid", int(st.Uid)))
		return false
	}
	if m.ID != name {
		p.quarantine(name, "queue id in the file differs from its name", slog.Int("uid", int(st.Uid)), slog.String("file_id", m.ID))
		return false
	}
	owner := int(st.Uid)
	if m.Origin.UID != owner {
		p.Log.UIDMismatch(name, owner, m.Origin.UID)
		m.Origin.UID = owner
		m.Origin.User = ""
	}
	uname, ok := p.users[owner]
	if !ok {
		// Cached even when not found ("", kept for the pass): a UID with
		// no passwd entry must not cost a lookup per message.
		if u, err := user.LookupId(strconv.Itoa(owner)); err == nil {
			uname = u.Username
		}
		p.users[owner] = uname
	}
	if uname != "" {
		m.Origin.User = uname
	}
	if m.Origin.Via == "" {
		m.Origin.Via = "maildrop"
	}

	// A copy already queued: a batch whose Sync failed (the maildrop
	// file stayed). At start there is none: Recover drops every queued
	// copy whose maildrop file is still there.
	if st, err := p.Queue.Locate(name); err == nil {
		// Removed once the batch's Sync succeeds: the queued copy
		// may be one a failed Sync left not durable. The queue is
		// told then, as of the batch's own messages: it was not when
		// that Sync failed, and it lists incoming mail only when woken.
		p.hold(name)
		p.announced = append(p.announced, name)
		p.Log.PickupDuplicate(name, st)
		return false
	}
	// Held before it is queued, so the queue never sees it unheld
	// while the maildrop file is there.
	p.setHeld(name, true)
	id, err := p.enqueue(m, m.Body(f), inBatch, true)
	if err != nil {
		var re *RejectError
		switch {
		case errors.Is(err, spool.ErrCorrupt):
			p.setHeld(name, false)
			p.quarantine(name, err.Error(), slog.Int("uid", owner))
		case errors.As(err, &re):
			// Still held: its bounce may be queued under its name.
			p.reject(name, f, m, re)
		default:
			p.setHeld(name, false)
			p.Log.MessageError(name, "cannot queue; will retry", err)
		}
		return false
	}
	p.hold(name)
	p.announced = append(p.announced, id)
	return true
}

// reject handles a well-formed maildrop file whose message pickup will
// not queue (re): it is bounced to its sender with the reason — sendmail
// told the caller it was stored, so the sender must hear of it — and
// removed. With no sender to tell (a bounce, "<>", or a NOTIFY without
// FAILURE) or no bouncer, it is quarantined; either way the log line is
// loud (event=rejected).
//
// The bounce is queued under the file's queue ID (queue.Queue.Reject)
// while name is held, and joins the batch: the queue does not deliver it
// until the batch's flush has removed the file and made that durable, and
// Recover drops it should the file still be there after a crash or a
// power loss (pickup then refuses the file again and bounces it anew):
// one bounce, never two.
func (p *Pickup) reject(name string, f io.ReaderAt, m *spool.Meta, re *RejectError) {
	rw := p.rw.Load()
	sender := rw.Sender(m.Env.Sender, &m.Origin)
	rj := maillog.Rejection{ID: name, UID: m.Origin.UID, User: m.Origin.User, From: sender, Rcpts: len(m.Env.Recipients),
		Cause: re.Cause, Fix: re.Fix}
	if _, err := message.ParseAddress(sender); err != nil || sender == "<>" || p.Reject == nil {
		p.setHeld(name, false)
		p.unnoticed(name, m, rj, re, "no sender to bounce to")
		return
	}
	if !message.NotifyAllows(m.Env.Notify, message.NotifyFailure) {
		// RFC 3461 5.2.2: the sender asked for no failure notice.
		p.setHeld(name, false)
		p.unnoticed(name, m, rj, re, "NOTIFY="+m.Env.Notify+": no failure notice wanted")
		return
	}
	bm := *m
	bm.Env.Sender = sender
	dsn, err := p.Reject(&bm, re, headerSection(f, m))
	if err != nil {
		p.setHeld(name, false)
		p.Log.RejectionError(rj, "cannot queue the bounce for a rejected message; will retry", err)
		return
	}
	p.Log.Rejected(rj, "bounced", dsn)
	if dsn == name {
		p.hold(name) // removed, durably, by the batch's flush
		p.announced = append(p.announced, dsn)
		return
	}
	p.setHeld(name, false)
	p.unlinkDrop(name)
}

// unnoticed handles a refused maildrop file whose sender gets no notice
// (why says why not): it is quarantined for the administrator while its
// account has fewer than max_quarantined files in queue/quarantine/, and
// beyond that removed, as Postfix discards what it cannot bounce, with
// the event=rejected line (cause, fix, sender, UID) saying so: that line
// is what is kept of it. So one account cannot fill the spool's disk
// through the quarantine, while a few refusals stay there to look at.
func (p *Pickup) unnoticed(name string, m *spool.Meta, rj maillog.Rejection, re *RejectError, why string) {
	uid := m.Origin.UID
	max := policy.Defaults().MaxQuarantined
	if p.Gate != nil {
		max = p.Gate.Limits(&policy.Message{ID: m.ID, Account: policy.Account{UID: uid, User: m.Origin.User}}).MaxQuarantined
	}
	if n := p.quarantinedBy(uid, max); max > 0 && n >= max {
		p.Log.Rejected(rj, fmt.Sprintf("discarded (%s; the account has %d files in quarantine, the most allowed: max_quarantined)", why, n), "")
		p.unlinkDrop(name)
		return
	}
	p.Log.Rejected(rj, "quarantined ("+why+")", "")
	if p.quarantine(name, "rejected: "+re.Cause, slog.Int("uid", uid)) {
		p.quarCount[uid]++
	}
}

// quarantinedBy returns how many files of queue/quarantine/ uid owns: a
// count kept from a scan of the directory and what pickup added since,
// scanned again when it reaches max (at most once a second), so that
// files the administrator removed make room (p.mu held).
func (p *Pickup) quarantinedBy(uid, max int) int {
	if p.quarCount == nil || max > 0 && p.quarCount[uid] >= max && p.now().Sub(p.quarScan) >= time.Second {
		c, err := p.Queue.QuarantineOwners()
		if err != nil {
			p.Log.Error("cannot count the files in quarantine", err)
			if p.quarCount != nil {
				return p.quarCount[uid]
			}
			c = map[int]int{}
		}
		p.quarCount, p.quarScan = c, p.now()
	}
	return p.quarCount[uid]
}

// headerSection returns the stored message's header section, at most
// maxBounceHeaders bytes of it, for a bounce.
func headerSection(f io.ReaderAt, m *spool.Meta) []byte {
	br := bufio.NewReader(io.LimitReader(io.NewSectionReader(f, m.BodyOffset, m.Size), maxBounceHeaders))
	var b []byte
	for {
		line, err := br.ReadBytes('\n')
		if string(line) == "\n" || string(line) == "\r\n" {
			break
		}
		b = append(b, line...)
		if err != nil {
			break
		}
	}
	return b
}

// maxBounceHeaders bounds the original header section copied into a
// bounce.
const maxBounceHeaders = 64 << 10

// RejectError is a message pickup will not queue for what it says, not
// because its file is damaged: too large a header section, no recipients.
// A maildrop file refused so is bounced to its sender (Pickup.Reject); a
// submission over the socket is refused with Code.
type RejectError struct {
	Code   int    // sysexits code for a submitter that is still there
	Status string // RFC 3463 status for the DSN
	Cause  string // in plain words
	Fix    string // what the sender can change
	Err    error
	// Temporary is set for a refusal that a later try may pass (a rate
	// limit): an SMTP server answers it 4xx rather than 5xx.
	Temporary bool
}

func (e *RejectError) Error() string { return e.Cause }
func (e *RejectError) Unwrap() error { return e.Err }

// errHeaderRefused is the RejectError for a header section over the limits
// of package message.
func errHeaderRefused(err error) *RejectError {
	return &RejectError{
		Code: sysexits.DataErr, Status: "5.3.4", Err: err,
		Cause: fmt.Sprintf("the message header is too large (a header field longer than %s with its continuation lines, or a header section over %s)",
			config.FormatSize(message.MaxField), config.FormatSize(message.MaxHeader)),
		Fix: "put long data in the body, not in a header field; send to fewer recipients per message (or list them on the command line instead of one long To:)",
	}
}

// errEnvelope is the RejectError for an envelope message.ValidateEnvelope
// refused.
func errEnvelope(err error) *RejectError {
	re := &RejectError{Code: sysexits.DataErr, Status: "5.1.3", Err: err,
		Cause: "the envelope is not valid: " + err.Error(),
		Fix:   "check the sender and recipient addresses given to sendmail (-f, -F, the arguments, or To:/Cc:/Bcc: with -t)"}
	var ee *message.EnvelopeError
	if errors.As(err, &ee) {
		re.Code = ee.Code
	}
	return re
}

var errNoRecipients = &RejectError{
	Code: sysexits.Usage, Status: "5.1.3", Err: errors.New("no recipients"),
	Cause: "the message has no recipients (none given, or every alias expanded to nothing)",
	Fix:   "give the recipients on the command line, or with -t in To:, Cc: or Bcc:; check [aliases] and /etc/aliases",
}

// unlinkDrop removes maildrop/<name> once its message is durable in the
// queue (or bounced, or already queued). flush makes a batch's removals
// durable (syncDrops) before its messages can be delivered.
func (p *Pickup) unlinkDrop(name string) {
	// An ordinary (blocking) system call: the runtime hands this
	// goroutine's P to other goroutines while the removal waits for the
	// disk, so a stalled disk holds up pickup only, never the listener,
	// the control socket or a garbage collection's stop-the-world.
	if err := unix.Unlinkat(int(p.maildrop.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		p.Log.MessageError(name, "cannot remove the maildrop file", err)
	}
}

// syncDrops makes the batch's maildrop removals durable: one fsync of
// maildrop/ per batch, before flush lets the queue deliver the batch's
// messages. Without it a power loss could bring back a maildrop file
// whose message was already sent, and it would be sent again. A crash
// before it finds each message both queued (not yet delivered) and in
// maildrop/, which a scan settles (pickup-duplicate). If it fails the
// messages are delivered all the same (they are durable in the queue;
// holding them would hold mail on a directory error): the log says a
// power loss may now bring duplicates.
func (p *Pickup) syncDrops() {
	if len(p.pending) == 0 {
		return
	}
	if err := unix.Fsync(int(p.maildrop.Fd())); err != nil {
		p.Log.Error("cannot make the removal of picked-up maildrop files durable; a power loss may deliver them twice", err, slog.Int("n", len(p.pending)))
	}
}

// EnqueueOwn rewrites the message described by m with its body in body,
// and queues it under m.ID (a new ID when empty) in incoming, durable
// when it returns nil (its own Sync: Store is the group-committed variant
// the doors use). It returns after logging the pickup line. It is for relayd's own
// mail (the admin notice): it does not pass the per-account policy, which
// limits what the local accounts send. relayd's own user falls under the
// "*" table like every UID, and a notice held or refused there would keep
// the admin from hearing of an account that tripped a limit just when
// several do.
func (p *Pickup) EnqueueOwn(m *spool.Meta, body io.Reader) (string, error) {
	return p.enqueue(m, body, synced, false)
}

// How enqueue makes a message durable.
type enqueueMode int

const (
	// synced: the message is made durable (Queue.Sync) before enqueue
	// returns, and the queue is told.
	synced enqueueMode = iota
	// inBatch: written without fsync; durable only after the scan's
	// Queue.Sync (flush), which also tells the queue (under mu).
	inBatch
	// inGroup: written without fsync; the caller waits for the group
	// commit (commit.go), which syncs and tells the queue.
	inGroup
)

// enqueue queues m, with the durability of mode. With gated false the
// message does not pass the Gate (EnqueueOwn).
func (p *Pickup) enqueue(m *spool.Meta, body io.Reader, mode enqueueMode, gated bool) (string, error) {
	id, _, _, err := p.enqueueAt(m, body, mode, gated)
	return id, err
}

// enqueueAt is enqueue; it also returns, in mode inGroup, when a message
// the policy deferred may be sent (zero: not deferred), which the group
// commit tells the queue, and undo, which takes back what the gate
// counted for the message (the group commit calls it when its Sync fails
// and the message is removed).
func (p *Pickup) enqueueAt(m *spool.Meta, body io.Reader, mode enqueueMode, gated bool) (string, time.Time, func(), error) {
	sync := mode == synced
	rw := p.rw.Load()
	q := *m
	if q.ID == "" {
		q.ID = spool.NewID(p.now())
	}
	if q.Time.IsZero() {
		q.Time = p.now()
	}
	// No password of the caller's command line is queued (or logged),
	// whatever wrote the record (a maildrop file of an older sendmail).
	q.Origin.ParentCmdline = origin.MaskCmdline(q.Origin.ParentCmdline)
	// The envelope gets the check sendmail and the submission socket make
	// (a maildrop file need not come from sendmail): defence in depth.
	// (It normalises in place: work on a copy of the recipients.)
	q.Env.Recipients = append([]string(nil), m.Env.Recipients...)
	if err := message.ValidateEnvelope(&q.Env); err != nil {
		return "", time.Time{}, nil, errEnvelope(err)
	}
	orig := q.Env
	// Unknown keys of the incoming file are nobody's to add: only pickup's
	// own are kept in the queue.
	q.Extra = nil
	if orig.Sender != "" && orig.Sender != "<>" {
		q.Extra = append(q.Extra, [2]string{"orig-sender", orig.Sender})
	}
	q.Env.Sender = rw.Sender(orig.Sender, &q.Origin)
	q.Env.Recipients = rw.Recipients(orig.Recipients)
	for _, r := range orig.Recipients {
		q.Extra = append(q.Extra, [2]string{"orig-rcpt", r})
	}
	if len(q.Env.Recipients) == 0 {
		return "", time.Time{}, nil, errNoRecipients
	}

	br := readers.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	h, err := readHeader(br)
	if err != nil {
		if errors.Is(err, ErrHeaderTooLarge) {
			return "", time.Time{}, nil, errHeaderRefused(err)
		}
		return "", time.Time{}, nil, err
	}
	// A caller cannot forge the trace: its own copies of our trace
	// fields are renamed (trace.go) before ours are added.
	forged := rw.disarmTrace(h)
	if f, n := h.Lookup("From"); f != nil && n == 1 {
		v := f.Value()
		if nv := rw.RewriteFrom(v, &q.Origin); nv != v {
			*f = message.NewField(f.Name, nv)
		}
	} else if f == nil {
		from := q.Env.Sender
		if from == "<>" {
			from = "MAILER-DAEMON@" + rw.Hostname
		}
		h.Fields = append(h.Fields, message.NewField("From", message.FormatFrom(q.Env.FullName, from)))
	}
	// Bare local addresses in the address fields get our host name, as
	// the envelope's do (aliases are not expanded here).
	for i := range h.Fields {
		if isAddressField(h.Fields[i].Name) {
			h.Fields[i].Raw = rw.QualifyField(h.Fields[i].Raw)
		}
	}
	if !h.Has("Date") {
		h.Fields = append(h.Fields, message.NewField("Date", q.Time.Format(time.RFC1123Z)))
	}
	if !h.Has("Message-ID") {
		h.Fields = append(h.Fields, message.NewField("Message-ID", "<"+q.ID+"@"+rw.Hostname+">"))
	}
	pre := []message.Field{rw.receivedField(&q.Origin, q.ID, q.Time)}
	if rw.TraceHeader != "" {
		if v := rw.Origin(&q.Origin); v != "" {
			if rw.TraceKey != nil {
				msgid := ""
				if f, _ := h.Lookup("Message-ID"); f != nil {
					msgid = f.Value()
				}
				v = SignOrigin(rw.TraceKey, rw.TraceHeader, v+" id="+q.ID, msgid)
			}
			pre = append(pre, originField(rw.TraceHeader, v))
		}
	}

	// Streamed into a segment of the queue, without fsync: the batch's
	// Sync (inBatch), the group commit's (inGroup) or the one below
	// (synced) makes it durable.
	d, err := p.Queue.NewMessage(&q)
	if err != nil {
		return "", time.Time{}, nil, err
	}
	// However this ends without a commit (an error, a refusal, or a
	// panic reading the data, which the session's server recovers from),
	// the segment is cut back and given back: a writer left open would
	// keep it busy for good. A no-op once committed or aborted.
	defer d.Abort()
	if err := h.write(d, pre); err != nil {
		return "", time.Time{}, nil, err
	}
	if _, err := io.Copy(d, br); err != nil {
		return "", time.Time{}, nil, err
	}
	size := d.Size()
	state, deliv := spool.Incoming, (*spool.Delivery)(nil)
	// undo takes back what the gate counted when the message is not
	// queued after all: it is tried again (a maildrop file stays, a
	// caller is told), and the retries must not use up the account's
	// allowance.
	undo := func() {}
	if p.Gate != nil && gated {
		var re *RejectError
		state, deliv, undo, re = p.admit(&q, h, size)
		if re != nil {
			return "", time.Time{}, nil, re
		}
	}
	// Queued in the state the policy gave it, in one step: the queue
	// never sees a held or deferred message in incoming first.
	if err := d.CommitState(state, deliv); err != nil {
		undo()
		return "", time.Time{}, nil, err
	}
	if sync {
		if err := p.Queue.SyncIDs(q.ID); err != nil {
			p.Queue.RemoveMessage(q.ID)
			undo()
			return "", time.Time{}, nil, err
		}
	}
	// From here on the message is in relayd's queue.
	// The SMTP listener's client (Via smtp): its peer, its process
	// (advisory: found through the socket's inode) and the AUTH name it
	// claimed.
	proc := q.Origin.ParentExe
	if proc == "" {
		proc = q.Origin.ParentCmdline
	}
	p.Log.Pickup(maillog.Pickup{ID: q.ID, UID: q.Origin.UID, User: q.Origin.User, Script: q.Origin.Script,
		From: q.Env.Sender, Rcpts: len(q.Env.Recipients), Size: size, Via: q.Origin.Via, Caller: q.Origin.Caller,
		Client: q.Origin.Client, PID: q.Origin.ParentPID, Process: proc, AuthClaim: q.Origin.AuthUser,
		Ignored: q.Origin.Ignored})
	if len(forged) > 0 {
		p.Log.ForgedTrace(q.ID, q.Origin.UID, q.Origin.User, forged, "renamed "+ForgedPrefix+"*")
	}
	var at time.Time
	if state == spool.Deferred && deliv != nil {
		if mode == inGroup {
			at = deliv.Next
		} else if sync {
			if p.Deferred != nil {
				p.Deferred(q.ID, deliv.Next)
			}
		} else {
			if p.deferredAt == nil {
				p.deferredAt = map[string]time.Time{}
			}
			p.deferredAt[q.ID] = deliv.Next
		}
	}
	if sync && p.Enqueued != nil {
		p.Enqueued(q.ID)
	}
	return q.ID, at, undo, nil
}

// Store is the store of the submission socket and the SMTP listener
// (submit.Store): the message is queued exactly as a maildrop file would
// be after pickup, under a fresh queue ID, limited to maxSize bytes (0: no
// limit). It returns only once the message is durable: the stores of
// concurrent sessions share one Sync (group commit, commit.go).
func (p *Pickup) Store(maxSize int64) func(m *spool.Meta, body io.Reader) (string, error) {
	return func(m *spool.Meta, body io.Reader) (string, error) {
		mm := *m
		mm.ID = spool.NewID(p.now())
		mm.Time = p.now()
		if maxSize > 0 {
			body = &limitReader{r: body, left: maxSize, limit: maxSize}
		}
		// Counted among the Stores under way (which the group commit
		// waits for) until it joins a group; uncounted however it ends
		// before that (a refusal, an error, a panic the session's
		// server recovers from), or every later group would wait for it.
		epoch := p.committer.begin()
		counted := true
		defer func() {
			if counted {
				p.committer.end(epoch)
			}
		}()
		id, at, undo, err := p.enqueueAt(&mm, body, inGroup, true)
		if err == nil {
			counted = false // commit uncounts it as it joins
			err = p.commit(id, at, undo, epoch)
			// The pickup line waited in the log's buffer (with those
			// of the group's other messages: the first member to get
			// here writes them all at once); it is in the log before
			// the client is answered.
			p.Log.WriteOut()
		}
		if re := (*RejectError)(nil); errors.As(err, &re) {
			// The submitter is there to be told: no bounce.
			return "", &submit.Error{Code: re.Code, Msg: re.Cause, Temporary: re.Temporary}
		}
		if err != nil {
			return "", err
		}
		return id, nil
	}
}

// limitReader ends a message over limit bytes with a *submit.SizeError
// (spool.ErrTooLarge, its text naming the limit).
type limitReader struct {
	r     io.Reader
	left  int64
	limit int64
}

func (l *limitReader) Read(b []byte) (int, error) {
	n, err := l.r.Read(b)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, &submit.SizeError{Limit: l.limit}
	}
	return n, err
}
