// Package spool is mailshim's on-disk format and every state transition of a
// message at rest. It uses only the standard library and x/sys.
//
// # Layout
//
//	<spool>/                 0711 mailshim:mailshim
//	  maildrop/              1730 mailshim:mailshim-drop  sendmail writes, relayd reads and removes
//	  queue/                 0700 mailshim:mailshim      relayd only, from here on
//	    journal              the state journal: one line per change of a message's state or record
//	    seg/<16 hex digits>  message segments: the messages, appended (same format as maildrop files)
//	    quarantine/          corrupt or hostile files, kept as found, never deleted
//	    tmp/                 relayd's temp files, swept at start
//	  relayd.lock            flock'd by the one running relayd
//
// relayd creates no file per message in queue/: a message is a section of
// a segment, its state one entry of the journal (queue.go, journal.go,
// segment.go). A queue of the old layout (queue/msg/<id> and a directory
// per state) is imported at start (Recover).
//
// # The durability promise
//
// A maildrop file appears under its final name only when it is complete
// and fsync'd, and the directory holding the name has been fsync'd too
// (see Drop.Commit). sendmail exits 0 only after that. relayd removes the
// maildrop file only after the queued copy is durable (Queue.Sync), and
// at start drops a queued copy whose maildrop file is still there
// (Recover): so a crash at any point leaves each message queued once, or
// in maildrop/ only. From there on every transition is a journal line;
// the ones that must survive a power loss are followed by a Sync. The
// state machine as a whole, with the scheduler that drives it, is drawn
// in docs/ARCHITECTURE.md ("The delivery engine").
//
// # Identity
//
// The UID recorded in a file is advisory; relayd takes the caller's UID from
// the maildrop file's owner (fstat), which only the kernel sets.
//
// Its Go API is not stable.
package spool

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Directory names under the spool root, and their modes.
const (
	DirMaildrop   = "maildrop"
	DirQueue      = "queue"
	DirQuarantine = "queue/quarantine"
	DirTmp        = "queue/tmp"
	LockFile      = "relayd.lock"

	ModeRoot     os.FileMode = 0o711
	ModeMaildrop os.FileMode = 0o730 | os.ModeSticky
	ModePrivate  os.FileMode = 0o700

	// ModeDropFile is the mode of a maildrop file: owned by the caller's
	// UID, group mailshim-drop (sendmail's effective group), which relayd's
	// user is a member of. Other users cannot even list maildrop/.
	ModeDropFile os.FileMode = 0o440

	// TempPrefix starts the name of a named temporary file in maildrop/
	// (used only where O_TMPFILE is unavailable). relayd removes such files
	// once they are older than a grace period; it never picks them up.
	TempPrefix = "tmp."
)

// PrivateDirs are relayd's directories, in the order they are created.
var PrivateDirs = []string{DirQueue, DirSeg, DirQuarantine, DirTmp}

// DirMsg is the message directory of the old queue layout (a file per
// message), imported at start by Recover.
const DirMsg = "queue/msg"

// NewID returns a fresh queue ID: 13 upper-case hex digits of the time in
// microseconds, then 7 random ones. IDs sort by arrival time, are safe as
// file names, and are unique without coordination between processes.
//
// The random digits come from getrandom(2) directly: crypto/rand would
// bring its package initialisers (and the FIPS module's) into sendmail,
// which pays for them at every call.
func NewID(now time.Time) string {
	var r [4]byte
	for n := 0; n < len(r); {
		m, err := unix.Getrandom(r[n:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic("spool: no randomness: " + err.Error())
		}
		n += m
	}
	us := uint64(now.UnixMicro())
	const digits = "0123456789ABCDEF"
	var b [20]byte
	for i := 12; i >= 0; i-- {
		b[i] = digits[us&0xf]
		us >>= 4
	}
	rnd := uint32(r[0])<<24 | uint32(r[1])<<16 | uint32(r[2])<<8 | uint32(r[3])
	for i := 19; i >= 13; i-- { // the first 7 of the 8 hex digits of rnd
		b[i] = digits[rnd>>4&0xf]
		rnd >>= 4
	}
	return string(b[:])
}

// IDTime returns the arrival time queue ID id encodes (NewID's time,
// to the microsecond); ok is false when id is not a queue ID.
func IDTime(id string) (t time.Time, ok bool) {
	if !ValidID(id) {
		return time.Time{}, false
	}
	var us int64
	for i := 0; i < 13; i++ {
		c := id[i]
		d := c - '0'
		if c >= 'A' {
			d = c - 'A' + 10
		}
		us = us<<4 | int64(d)
	}
	return time.UnixMicro(us), true
}

// ValidID reports whether s has the shape of a queue ID (and so is safe to
// use as a file name).
func ValidID(s string) bool {
	if len(s) != 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
