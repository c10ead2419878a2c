package spool

// The fdatasyncs of a Sync made at the same time through Linux's
// asynchronous I/O (io_submit(2) of IOCB_CMD_FDSYNC, one per file, then
// io_getevents(2) for all of them): the kernel runs each on a worker
// thread of its own, so the disk gets them together and the Sync lasts
// about as long as the slowest, whatever Go's scheduler is doing. A
// goroutine making the journal's fdatasync while the Sync's makes the
// segments' needs a P (Go's scheduler context) to start: on a two-CPU
// machine both are mostly busy with the sessions, so it mostly started
// only after the segment's fdatasync had returned (strace of relayd under
// the loopback benchmark), and BenchmarkCommitSync took as long as with
// the two one after the other, at 25-30 µs more CPU per Sync. Where
// asynchronous I/O is refused (ENOSYS, EPERM, fs.aio-max-nr reached), Sync
// makes them one after the other, the journal's last, as before.

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// aioMax is how many fdatasyncs one io_submit carries; a Sync with more
// files makes the rest in further rounds.
const aioMax = 32

// iocb is struct iocb of linux/aio_abi.h (little-endian layout: the key
// before the flags).
type iocb struct {
	data     uint64
	key      uint32
	rwFlags  int32
	opcode   uint16
	reqprio  int16
	fildes   uint32
	buf      uint64
	nbytes   uint64
	offset   int64
	reserved uint64
	flags    uint32
	resfd    uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

// The opcodes: IOCB_CMD_FDSYNC for the files, IOCB_CMD_FSYNC for a
// directory (see fdatasync).
const (
	iocbCmdFsync  = 2
	iocbCmdFdsync = 3
)

// aio is a Queue's asynchronous I/O context (q.syncMu).
type aio struct {
	ctx    uintptr
	failed bool // io_setup was refused: one fdatasync after the other
	cbs    [aioMax]iocb
	ptrs   [aioMax]*iocb
	events [aioMax]ioEvent
}

// aioSubmits counts the io_submit calls and aioFiles the fdatasyncs they
// carried (tests).
var aioSubmits, aioFiles atomic.Uint64

// setup makes the context at the first Sync (nothing at start: sendmail
// links this package and never syncs).
func (a *aio) setup() bool {
	if a.ctx != 0 {
		return true
	}
	if a.failed {
		return false
	}
	if os.Getenv("MAILSHIM_SPOOL_AIO") == "off" {
		// One fdatasync after the other (tests that make a single
		// fdatasync fail with strace, which cannot reach one of a
		// batch submitted together; a kernel whose asynchronous I/O
		// misbehaves).
		a.failed = true
		return false
	}
	var ctx uintptr
	if _, _, e := unix.RawSyscall(unix.SYS_IO_SETUP, aioMax, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		a.failed = true
		return false
	}
	a.ctx = ctx
	return true
}

// close destroys the context.
func (a *aio) close() {
	if a.ctx != 0 {
		unix.RawSyscall(unix.SYS_IO_DESTROY, a.ctx, 0, 0)
		a.ctx = 0
	}
}

// fdatasync makes the fdatasync of every file at the same time and
// returns each one's result. raw: the wait is a raw system call, keeping
// the P (see holdP); one that took longer than slowSync turns the raw way
// off. ok is false when the context cannot be had (errs is then nil).
//
// The last dirs files are directories: they get a full fsync
// (IOCB_CMD_FSYNC), as File.Sync gives them when made one by one. An
// fdatasync of a directory may leave a new entry unwritten: ext4 commits
// for a directory's fdatasync only a change of its size, and a new name
// in a block it has is not one.
func (a *aio) fdatasync(files []*os.File, dirs int, raw bool) (errs []error, ok bool) {
	if !a.setup() {
		return nil, false
	}
	errs = make([]error, len(files))
	for lo := 0; lo < len(files); lo += aioMax {
		hi := min(lo+aioMax, len(files))
		a.round(files[lo:hi], max(0, hi-(len(files)-dirs)), errs[lo:], raw)
	}
	return errs, true
}

// round is fdatasync for at most aioMax files, the last dirs of them
// directories.
func (a *aio) round(files []*os.File, dirs int, errs []error, raw bool) {
	n := len(files)
	fds := make([]int, n)
	for i, f := range files {
		fds[i] = -1
		rc, err := f.SyscallConn()
		if err == nil {
			// The descriptor is used after Control returns: the files
			// are closed only under q.syncMu, which this Sync holds
			// (Close's teardown, a rewrite replacing the journal, an
			// emptied segment unlinked at the end of a Sync).
			err = rc.Control(func(fd uintptr) { fds[i] = int(fd) })
		}
		if err != nil {
			errs[i] = err
		}
	}
	k := 0
	idx := make([]int, 0, n)
	for i, fd := range fds {
		if fd < 0 {
			continue
		}
		op := uint16(iocbCmdFdsync)
		if i >= n-dirs {
			op = iocbCmdFsync
		}
		a.cbs[k] = iocb{data: uint64(i), opcode: op, fildes: uint32(fd)}
		a.ptrs[k] = &a.cbs[k]
		idx = append(idx, i)
		k++
	}
	start := time.Now()
	sub := 0
	for sub < k {
		r, _, e := unix.RawSyscall(unix.SYS_IO_SUBMIT, a.ctx, uintptr(k-sub), uintptr(unsafe.Pointer(&a.ptrs[sub])))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			// Not submitted: those files the usual way, one by one.
			for _, i := range idx[sub:] {
				if i >= n-dirs {
					errs[i] = unix.Fsync(fds[i])
				} else {
					errs[i] = unix.Fdatasync(fds[i])
				}
			}
			k = sub
			break
		}
		aioSubmits.Add(1)
		aioFiles.Add(uint64(r))
		sub += int(r)
	}
	got := make([]bool, n)
	for left := k; left > 0; {
		var r uintptr
		var e unix.Errno
		if raw {
			r, _, e = unix.RawSyscall6(unix.SYS_IO_GETEVENTS, a.ctx, uintptr(left), uintptr(left), uintptr(unsafe.Pointer(&a.events[0])), 0, 0)
		} else {
			r, _, e = unix.Syscall6(unix.SYS_IO_GETEVENTS, a.ctx, uintptr(left), uintptr(left), uintptr(unsafe.Pointer(&a.events[0])), 0, 0)
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			// Cannot happen with a valid context. The results not
			// received are unknown, and an fdatasync made now would
			// not tell (a writeback error is reported once per open
			// file: the asynchronous one may have taken it), so they
			// count as failed. Destroying the context waits for them.
			for _, i := range idx {
				if !got[i] && errs[i] == nil {
					errs[i] = fmt.Errorf("io_getevents: %w", e)
				}
			}
			a.close()
			a.failed = true
			return
		}
		for _, ev := range a.events[:r] {
			got[ev.data] = true
			if ev.res < 0 {
				errs[ev.data] = unix.Errno(-ev.res)
			}
		}
		left -= int(r)
	}
	if raw {
		rawSyncDone(start)
	}
}
