package rawconn

import (
	"syscall"
	"testing"
)

// The two ways of making read(2) and write(2), raw (relayd's) and through
// package syscall (race builds', which CI does not make), give the same
// counts and errors: data, a full or empty non-blocking socket (EAGAIN),
// the peer's close (0 bytes, then EPIPE), a bad descriptor (EBADF).
func TestSyscallWaysAgree(t *testing.T) {
	type rw struct {
		name        string
		read, write func(uintptr, []byte) (int, syscall.Errno)
	}
	ways := []rw{{"raw", rawSyscallRead, rawSyscallWrite}, {"syscall", syscallRead, syscallWrite}}
	type result struct {
		n int
		e syscall.Errno
	}
	norm := func(n int, e syscall.Errno) result {
		if e != 0 {
			n = -1 // the count of a failed call is not looked at
		}
		return result{n, e}
	}
	run := func(w rw) []result {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		a, b := uintptr(fds[0]), uintptr(fds[1])
		defer syscall.Close(fds[0])
		var rs []result
		buf := make([]byte, 3)
		rs = append(rs, norm(w.read(a, buf)))              // empty: EAGAIN
		rs = append(rs, norm(w.write(b, []byte("hello")))) // 5
		rs = append(rs, norm(w.read(a, buf)))              // 3
		rs = append(rs, result{n: int(buf[0])<<16 | int(buf[1])<<8 | int(buf[2])})
		rs = append(rs, norm(w.read(a, buf))) // 2
		big := make([]byte, 1<<20)
		for { // fill b's way to a: a partial count, then EAGAIN
			r := norm(w.write(b, big))
			rs = append(rs, result{n: min(r.n, 1), e: r.e})
			if r.e != 0 {
				break
			}
		}
		syscall.Close(fds[1])
		for { // the bytes written, then 0 (the peer closed)
			r := norm(w.read(a, big))
			if r.e != 0 || r.n == 0 {
				rs = append(rs, r)
				break
			}
		}
		rs = append(rs, norm(w.write(a, []byte("x"))))   // EPIPE
		rs = append(rs, norm(w.read(^uintptr(0), buf)))  // EBADF
		rs = append(rs, norm(w.write(^uintptr(0), buf))) // EBADF
		return rs
	}
	want := run(ways[0])
	if len(want) < 8 || want[0].e != syscall.EAGAIN || want[1].n != 5 || want[len(want)-3].e != syscall.EPIPE || want[len(want)-1].e != syscall.EBADF {
		t.Fatalf("raw: %v", want)
	}
	for _, w := range ways[1:] {
		if got := run(w); len(got) != len(want) {
			t.Fatalf("%s: %v, raw: %v", w.name, got, want)
		} else {
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s: %v, raw: %v", w.name, got, want)
				}
			}
		}
	}
}
