package rawconn

import (
	"syscall"
	"unsafe"
)

// rawRead and rawWrite are read(2) and write(2) as raw system calls (see
// the package's comment). With the race detector they go through package
// syscall instead, whose calls tell the detector that I/O orders what
// goroutines do (a raw call would hide it: the detector would report the
// races that a test's client and server never had). Both ways are
// compiled in every build, and TestSyscallWaysAgree checks that they give
// the same results.
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if raceEnabled {
		return syscallRead(fd, p)
	}
	return rawSyscallRead(fd, p)
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	if raceEnabled {
		return syscallWrite(fd, p)
	}
	return rawSyscallWrite(fd, p)
}

func rawSyscallRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func rawSyscallWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func syscallRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errno(err)
}

func syscallWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
