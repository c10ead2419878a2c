//go:build race

package rawconn

import "syscall"

// With the race detector, read(2) and write(2) are made through package
// syscall, whose calls tell the detector that I/O orders what goroutines
// do (a raw call would hide it: the detector would report the races
// that a test's client and server never had).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errno(err)
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errno(err)
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
