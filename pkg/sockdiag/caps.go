package sockdiag

import (
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reading another user's /proc/PID/fd takes two capabilities: listing the
// directory (mode 0500, owned by the process's user) needs
// CAP_DAC_READ_SEARCH, and reading its links needs the kernel's ptrace
// access check to pass, CAP_SYS_PTRACE. relayd keeps them out of its
// effective set (LowerCaps) and raises them only for the scan, on the
// scanning goroutine's thread while it is locked to it (WithScanCaps): no
// other code of relayd — TLS, the SMTP dialogue, the upstream client —
// ever runs with them in force.
const scanCapMask = uint32(1<<unix.CAP_DAC_READ_SEARCH | 1<<unix.CAP_SYS_PTRACE)

func capget() (unix.CapUserData, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var d [2]unix.CapUserData
	err := unix.Capget(&hdr, &d[0])
	return d[0], err
}

// LowerCaps takes CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE out of the
// effective set of every thread of the process (they stay permitted, for
// WithScanCaps) and empties the ambient set (nothing relayd starts
// inherits them). It reports whether both are permitted: whether a scan
// can read other users' processes. It needs a binary built without cgo
// (syscall.AllThreadsSyscall); otherwise the error says so and the
// capabilities stay in force.
func LowerCaps() (permitted bool, err error) {
	d, err := capget()
	if err != nil {
		return false, err
	}
	permitted = d.Permitted&scanCapMask == scanCapMask
	if d.Effective&scanCapMask != 0 {
		// Capset takes both 32-bit halves; only the lower one changes.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var all [2]unix.CapUserData
		if err := unix.Capget(&hdr, &all[0]); err != nil {
			return permitted, err
		}
		all[0].Effective &^= scanCapMask
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&all[0])), 0); e != 0 {
			return permitted, e
		}
	}
	// (EINVAL: a kernel without ambient capabilities, before 4.3.)
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != unix.EINVAL {
		return permitted, e
	}
	return permitted, nil
}

// WithScanCaps runs f with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE raised
// in the effective set of the OS thread that runs it (as far as they are
// permitted), and lowers them again before it returns. Capabilities are
// per thread: the calling goroutine is locked to its thread from before
// the raise until after the lowering, so no other goroutine runs on that
// thread while they are in force, and the Go runtime starts no thread
// from a locked one (new threads come from its clean template thread), so
// none inherits them. Between scans no thread of relayd has them in force.
//
// (It runs on the caller's thread rather than on a thread of its own: a
// thread started and ended per scan, or handed each scan, costs ~30 µs of
// thread creation or switches per connection; the raise and the lowering
// are two capset(2) calls, ~4 µs.)
//
// Lowering a capability that is permitted cannot fail; if it ever did,
// the thread could not be trusted with anything else, and WithScanCaps
// panics (relayd stops; nothing it answered is lost) rather than return
// on it.
func WithScanCaps(f func()) {
	// The sets are read on the thread they are then written to: the
	// lowering restores that thread's own sets, not another thread's.
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var all [2]unix.CapUserData
	if err := unix.Capget(&hdr, &all[0]); err != nil || all[0].Permitted&scanCapMask == 0 {
		runtime.UnlockOSThread()
		f() // nothing to raise
		return
	}
	lowered, raised := all, all
	lowered[0].Effective &^= scanCapMask
	raised[0].Effective |= all[0].Permitted & scanCapMask
	if err := unix.Capset(&hdr, &raised[0]); err != nil {
		runtime.UnlockOSThread()
		f() // could not raise them: the scan sees what it can without
		return
	}
	defer func() {
		if err := unix.Capset(&hdr, &lowered[0]); err != nil {
			if err = unix.Capset(&hdr, &lowered[0]); err != nil {
				panic("sockdiag: cannot lower the scan capabilities: " + err.Error())
			}
		}
		runtime.UnlockOSThread()
	}()
	f()
}
