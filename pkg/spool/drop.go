package spool

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrTooLarge is returned by Drop.Write when the message exceeds the limit
// given to NewDrop. The temporary file is gone by then.
var ErrTooLarge = errors.New("spool: message too large")

// IsFull reports whether err means the spool file system (or the caller's
// RLIMIT_FSIZE or quota) has no room: the caller should exit EX_CANTCREAT
// and say "the spool is full".
func IsFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// OpenDir opens dir (relative to root, no symbolic link followed at either
// step) as a directory file descriptor for NewDrop.
//
// The root is opened O_PATH (it is 0711: searchable, not readable, for
// sendmail). The directory is opened for reading when the caller may read
// it (relayd, root, tests); a setgid sendmail may only write and search
// maildrop/ (1730), so it gets an O_PATH descriptor, which serves openat
// and linkat but cannot be fsync'd: Commit then makes the new name durable
// by an fsync of the file after the link (see Commit).
func OpenDir(root, dir string) (*os.File, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat(rfd, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.EACCES {
		fd, err = unix.Openat(rfd, dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root, dir), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, dir)), nil
}

// isPathFD reports whether f was opened O_PATH.
func isPathFD(f *os.File) bool {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_PATH != 0
}

// Drop is a message being written into a spool directory (maildrop/, or
// relayd's queue for socket submissions). It implements io.Writer for the
// message bytes; Commit makes it durable under its final name, Abort throws
// it away. Nothing is ever visible under the final name before Commit
// returns nil.
type Drop struct {
	dir     *os.File
	f       *os.File
	raw     syscall.RawConn // f's descriptor, held while in use (see writev)
	vec     vecWrite        // writev's state
	vecFn   func(fd uintptr) bool
	buf     []byte // bytes not yet written to f (capacity bufSize)
	tmpName string // "" when the file is an unnamed O_TMPFILE
	meta    Meta
	sizeOff int64
	pos     int64 // bytes handed to the file so far (header included)
	crc     hash.Hash32
	n       int64
	max     int64
	err     error

	mu   sync.Mutex
	done bool
}

// NewDrop starts a message file in dir for m (m.ID must be set; Size and
// CRC are filled in by Commit). max > 0 limits the number of message bytes.
//
// It prefers an O_TMPFILE file, which has no name until Commit links it in,
// so a writer killed with SIGKILL leaves nothing behind; on file systems
// without O_TMPFILE (or without /proc to link it through) it falls back to a
// named file "tmp.<id>" created with O_EXCL|O_NOFOLLOW, which relayd sweeps
// after a grace period.
func NewDrop(dir *os.File, m *Meta, max int64) (*Drop, error) {
	if !ValidID(m.ID) {
		return nil, fmt.Errorf("spool: bad queue id %q", m.ID)
	}
	d := &Drop{dir: dir, meta: *m, crc: NewCRC(), max: max}
	dfd := int(dir.Fd())
	fd, err := unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, uint32(ModeDropFile.Perm()))
	if err == nil {
		if _, serr := os.Stat("/proc/self/fd/" + strconv.Itoa(fd)); serr != nil {
			unix.Close(fd)
			err = serr
		}
	}
	if err != nil {
		d.tmpName = TempPrefix + m.ID
		fd, err = unix.Openat(dfd, d.tmpName, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(ModeDropFile.Perm()))
		if err != nil {
			return nil, &os.PathError{Op: "create", Path: filepath.Join(dir.Name(), d.tmpName), Err: err}
		}
	}
	// The umask may have taken bits away; the mode is part of the contract
	// (relayd reads through the group), so set it explicitly.
	if err := unix.Fchmod(fd, uint32(ModeDropFile.Perm())); err != nil {
		unix.Close(fd)
		d.removeTemp()
		return nil, &os.PathError{Op: "chmod", Path: dir.Name(), Err: err}
	}
	if err := shareGroup(fd, dfd); err != nil {
		unix.Close(fd)
		d.removeTemp()
		return nil, &os.PathError{Op: "chgrp", Path: dir.Name(), Err: err}
	}
	d.f = os.NewFile(uintptr(fd), filepath.Join(dir.Name(), m.ID))
	if d.raw, err = d.f.SyscallConn(); err != nil {
		d.Abort()
		return nil, err
	}
	d.vec.iov = make([][]byte, 0, 2)
	d.vecFn = d.vec.run
	hdr, off := EncodeHeader(&d.meta)
	d.sizeOff = off
	d.buf = make([]byte, 0, bufSize)
	d.pos = int64(len(hdr))
	if _, err := d.buffer(hdr); err != nil {
		d.Abort()
		return nil, err
	}
	return d, nil
}

// shareGroup gives the new file fd the group of its directory dfd when it
// has another one. relayd reads maildrop files through that group (mode
// 0440): the setgid sendmail's files have it already (its effective group
// is the maildrop's), but a caller that may create files in maildrop/
// without it — root or any process with CAP_DAC_OVERRIDE running a
// sendmail that is not setgid, a member of the group whose primary group
// is another — would otherwise leave a file relayd cannot open, after
// telling its caller the message was stored. Root (CAP_CHOWN) and members
// of the group may make the change; anyone else gets EPERM, and
// maildrop.Local then uses the submission socket instead.
func shareGroup(fd, dfd int) error {
	var fst, dst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return err
	}
	if err := unix.Fstat(dfd, &dst); err != nil {
		return err
	}
	if fst.Gid == dst.Gid {
		return nil
	}
	return unix.Fchown(fd, -1, int(dst.Gid))
}

// Write appends message bytes. Past the size limit it aborts the drop and
// returns ErrTooLarge.
func (d *Drop) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.max > 0 && d.n+int64(len(p)) > d.max {
		d.err = ErrTooLarge
		d.Abort()
		return 0, d.err
	}
	n, err := d.write(p)
	d.crc.Write(p[:n])
	d.n += int64(n)
	if err != nil {
		d.err = err
		d.Abort()
	}
	return n, err
}

// page is the unit in which ext4 (and the page cache) prefers writes.
const page = 4096

// bufSize is the capacity of a Drop's write buffer.
const bufSize = 8 << 10

// write hands p to the file. Small writes are gathered in d.buf. A large
// one is written with what d.buf holds by one writev(2), up to the last
// page boundary of the file it reaches; the rest (less than a page) goes
// into d.buf. A write that starts or ends inside a page costs the kernel
// more than whole pages (writing a 100 MB message in unaligned 64 KB
// pieces took about a third more system time), and one system call
// instead of two per piece (the buffer up to the boundary, then the bulk)
// saves a 1 MB message 16 of them.
func (d *Drop) write(p []byte) (int, error) {
	if len(p) < 4*page {
		n, err := d.buffer(p)
		d.pos += int64(n)
		return n, err
	}
	head := int((page - d.pos%page) % page)
	bulk := head + (len(p)-head)/page*page
	n, err := d.writev(d.buf, p[:bulk])
	n -= len(d.buf)
	d.buf = d.buf[:0]
	if err != nil {
		n = max(n, 0)
		d.pos += int64(n)
		return n, err
	}
	d.pos += int64(bulk)
	m, err := d.buffer(p[bulk:])
	d.pos += int64(m)
	return bulk + m, err
}

// buffer appends p to d.buf, writing it out each time it is full.
func (d *Drop) buffer(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if len(d.buf) == cap(d.buf) {
			if err := d.flush(); err != nil {
				return n, err
			}
		}
		k := copy(d.buf[len(d.buf):cap(d.buf)], p)
		d.buf = d.buf[:len(d.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

// flush writes out d.buf.
func (d *Drop) flush() error {
	_, err := d.writev(d.buf, nil)
	d.buf = d.buf[:0]
	return err
}

// writev writes a, then b, to the file at its offset, all of them, and
// returns how many bytes of the two it wrote. The descriptor is used
// through d.raw, which holds it for the duration: Abort may close d.f from
// a signal handler's goroutine while a write is under way, and the number
// of a descriptor already closed could be reused by the next open (the
// handler's syslog socket) and receive the message bytes. The state of
// the call is d.vec and its function d.vecFn, made once in NewDrop, so
// that a write allocates nothing.
func (d *Drop) writev(a, b []byte) (int, error) {
	v := &d.vec
	v.a, v.b, v.total, v.err = a, b, 0, nil
	err := d.raw.Write(d.vecFn)
	total, werr := v.total, v.err
	*v = vecWrite{iov: v.iov[:0]} // no reference to the caller's bytes kept
	if werr == nil {
		werr = err // the file was closed (Abort)
	}
	if werr != nil {
		return total, &os.PathError{Op: "write", Path: d.f.Name(), Err: werr}
	}
	return total, nil
}

// vecWrite is one writev call's state: the bytes left to write (a, then
// b), how many were written, and the error that stopped it.
type vecWrite struct {
	a, b  []byte
	total int
	err   error
	iov   [][]byte // capacity 2
}

// run writes v.a and v.b to fd; it is the function given to
// RawConn.Write, which calls it with the descriptor held.
func (v *vecWrite) run(fd uintptr) bool {
	for len(v.a)+len(v.b) > 0 {
		v.iov = v.iov[:0]
		if len(v.a) > 0 {
			v.iov = append(v.iov, v.a)
		}
		if len(v.b) > 0 {
			v.iov = append(v.iov, v.b)
		}
		n, err := unix.Writev(int(fd), v.iov)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			v.err = err
			return true
		}
		if n <= 0 {
			v.err = io.ErrShortWrite
			return true
		}
		v.total += n
		k := min(n, len(v.a))
		v.a, v.b = v.a[k:], v.b[n-k:]
	}
	return true
}

// Size is the number of message bytes written so far.
func (d *Drop) Size() int64 { return d.n }

// Meta returns the header as it will be (or was) committed.
func (d *Drop) Meta() Meta {
	m := d.meta
	m.Size, m.CRC = d.n, d.crc.Sum32()
	return m
}

// Commit records the size and checksum, fsyncs the file, gives it its final
// name (the queue ID) in the directory without ever replacing an existing
// name, and fsyncs the directory. When it returns nil the message is safe;
// on error nothing is left under the final name.
func (d *Drop) Commit() error {
	if d.err != nil {
		return d.err
	}
	fail := func(err error) error {
		d.err = err
		d.Abort()
		return err
	}
	// The size and checksum go into the header: into the buffer when the
	// header is still there (a short message, written by one writev
	// then), else into the file.
	patch := PatchSize(d.n, d.crc.Sum32())
	inBuf := d.sizeOff - (d.pos - int64(len(d.buf)))
	if inBuf >= 0 && inBuf+int64(len(patch)) <= int64(len(d.buf)) {
		copy(d.buf[inBuf:], patch)
		patch = nil
	}
	if err := d.flush(); err != nil {
		return fail(err)
	}
	if patch != nil {
		if _, err := d.f.WriteAt(patch, d.sizeOff); err != nil {
			return fail(err)
		}
	}
	if err := d.f.Sync(); err != nil {
		return fail(err)
	}
	dfd := int(d.dir.Fd())
	d.mu.Lock()
	if d.done {
		d.mu.Unlock()
		return fail(errors.New("spool: drop aborted"))
	}
	var err error
	if d.tmpName == "" {
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(d.f.Fd())), dfd, d.meta.ID, unix.AT_SYMLINK_FOLLOW)
	} else {
		err = unix.Renameat2(dfd, d.tmpName, dfd, d.meta.ID, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// No RENAME_NOREPLACE here: link+unlink never replaces either.
			if err = unix.Linkat(dfd, d.tmpName, dfd, d.meta.ID, 0); err == nil {
				unix.Unlinkat(dfd, d.tmpName, 0)
			}
		}
	}
	if err != nil {
		d.mu.Unlock()
		return fail(&os.PathError{Op: "link", Path: filepath.Join(d.dir.Name(), d.meta.ID), Err: err})
	}
	d.done = true
	d.tmpName = ""
	d.mu.Unlock()
	// Make the new name durable. With a readable directory: fsync it.
	// With an O_PATH one (setgid sendmail, maildrop/ 1730) that is
	// impossible; fsync the file again instead: the link changed the
	// inode (its link count) in the same journal transaction as the
	// directory entry, and fsync of the inode commits that transaction
	// on the journaling file systems a spool lives on (ext4, xfs,
	// btrfs). A failure unlinks the name, so that the caller's failure
	// report is true.
	if isPathFD(d.dir) {
		err = d.f.Sync()
	} else {
		err = d.dir.Sync()
	}
	d.f.Close()
	if err != nil {
		unix.Unlinkat(dfd, d.meta.ID, 0)
		d.err = err
		return err
	}
	// From here on the mail is safe.
	return nil
}

// Abort discards the message. It is safe to call more than once, after a
// failed Commit, and concurrently from a signal handler goroutine.
func (d *Drop) Abort() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	d.done = true
	d.removeTemp()
	if d.f != nil {
		d.f.Close()
	}
}

func (d *Drop) removeTemp() {
	if d.tmpName != "" {
		unix.Unlinkat(int(d.dir.Fd()), d.tmpName, 0)
		d.tmpName = ""
	}
}
