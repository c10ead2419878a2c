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
// effective set (LowerCaps) and raises them only on a dedicated thread for
// the scan (WithScanCaps): no other code of relayd — TLS, the SMTP
// dialogue, the upstream client — ever runs with them in force.
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

// WithScanCaps runs f on an OS thread of its own with CAP_DAC_READ_SEARCH
// and CAP_SYS_PTRACE raised in that thread's effective set (as far as they
// are permitted), and ends the thread with f: capabilities are per thread,
// the goroutine never unlocks it, so the Go runtime destroys the thread
// instead of running anything else on it (and it creates no threads from
// a locked one: those come from its clean template thread).
func WithScanCaps(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with us
		if d, err := capget(); err == nil && d.Permitted&scanCapMask != 0 && d.Effective&scanCapMask != d.Permitted&scanCapMask {
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var all [2]unix.CapUserData
			if unix.Capget(&hdr, &all[0]) == nil {
				all[0].Effective |= all[0].Permitted & scanCapMask
				unix.Capset(&hdr, &all[0])
			}
		}
		f()
	}()
	<-done
}
