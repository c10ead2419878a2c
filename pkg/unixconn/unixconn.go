// Package unixconn is the client end of a unix stream socket on plain
// blocking system calls: the submission and control socket clients,
// which are linked into the setgid sendmail. Package net's dialer would
// bring its resolver and dialing machinery into that binary (a tenth of
// it, 340 KB, every page of which the kernel maps at every call and
// unmaps at its exit) and the runtime's network poller into the process
// (an epoll descriptor that a caller's low RLIMIT_NOFILE can deny: the
// runtime then dies instead of the client reporting an error).
//
// Time limits are the socket's own (SO_RCVTIMEO, SO_SNDTIMEO: per
// system call) plus Abort, which shuts the socket down from another
// goroutine and so ends a read or write that is waiting: the callers
// bound a whole exchange with a timer or a context that calls it.
//
// Its Go API is not stable.
package unixconn

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTimeout is returned (wrapped) when a system call waited longer than
// the socket's time limit, or the exchange was aborted.
var ErrTimeout = errors.New("i/o timeout")

// Conn is a connected unix stream socket. Read and Write may not be used
// by two goroutines at once; Abort may be called from any goroutine.
type Conn struct {
	fd      int
	aborted atomic.Bool
	mu      sync.Mutex // Abort against Close: no shutdown of a closed (reused) descriptor
	closed  bool
}

// Dial connects to the socket at path, waiting at most timeout (> 0) for
// a listener whose backlog is full. Reads and writes on the connection
// have no time limit until SetTimeout gives one.
func Dial(path string, timeout time.Duration) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c := &Conn{fd: fd}
	if err := c.SetTimeout(timeout); err != nil {
		unix.Close(fd)
		return nil, err
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		if err == unix.EAGAIN || err == unix.EINPROGRESS {
			return nil, &os.SyscallError{Syscall: "connect", Err: ErrTimeout}
		}
		return nil, os.NewSyscallError("connect", err)
	}
	if err := c.SetTimeout(0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return c, nil
}

// SetTimeout bounds each later read and write to d (0: no bound).
func (c *Conn) SetTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if d > 0 && tv.Sec == 0 && tv.Usec == 0 {
		tv.Usec = 1
	}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}

// err turns a system call's error into the one the caller sees.
func (c *Conn) err(op string, err error) error {
	if err == unix.EAGAIN || c.aborted.Load() {
		err = ErrTimeout
	}
	return &os.SyscallError{Syscall: op, Err: err}
}

// Read reads from the socket; io.EOF once the peer has shut down its
// write side.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(c.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, c.err("read", err)
		case n == 0:
			if c.aborted.Load() {
				return 0, c.err("read", ErrTimeout)
			}
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of p (MSG_NOSIGNAL: a peer gone is EPIPE, never
// SIGPIPE).
func (c *Conn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.SendmsgN(c.fd, p[written:], nil, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return written, c.err("write", err)
		}
		written += n
	}
	return written, nil
}

// CloseWrite shuts down the write side: the peer reads the end of the
// request.
func (c *Conn) CloseWrite() error {
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		return os.NewSyscallError("shutdown", err)
	}
	return nil
}

// Abort shuts the socket down in both directions: a Read or Write under
// way or to come fails with ErrTimeout. The descriptor stays open until
// Close, so that it cannot be reused under a call that is using it.
func (c *Conn) Abort() {
	c.aborted.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

// Close closes the socket. An Abort that comes after (a timer that fired
// as the exchange ended) does nothing.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return os.ErrClosed
	}
	c.closed = true
	return unix.Close(c.fd)
}
