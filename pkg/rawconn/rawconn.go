// Package rawconn reads and writes a socket with read(2) and write(2) made
// as raw system calls, through the socket's syscall.RawConn: waiting in
// the runtime's poller while there is nothing to read or no room to write,
// with the connection's deadlines, as net.Conn's Read and Write do, and
// giving the same errors (io.EOF, a timeout, net.ErrClosed, in a
// *net.OpError).
//
// A socket from package net is non-blocking, so each call returns at once
// (EAGAIN when it would wait). A call made through package syscall is
// announced to the scheduler as one that may block: the first such call
// after all of the process's Ps were idle wakes the runtime's monitor
// (sysmon), which then polls every 20 µs for a while, and a call that
// lasts (a loopback write runs the peer's side of TCP and wakes it) may
// have its P handed to another thread woken for it. Under load those
// thread wake-ups are much of relayd's context switches; a raw call causes
// none of them.
//
// With the race detector the calls go through package syscall (see
// sys.go).
package rawconn

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Conn is a socket's net.Conn whose Read and Write are this package's;
// everything else (deadlines, Close, addresses) is the socket's.
type Conn struct {
	net.Conn
	rc syscall.RawConn
}

// Wrap returns nc as a *Conn when it is a socket that gives its RawConn,
// and nc itself otherwise.
func Wrap(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	return &Conn{Conn: nc, rc: rc}
}

// Read reads into p as the socket's own Read would: at most len(p)
// bytes, waiting (with the read deadline) until there is at least one,
// io.EOF once the peer closed its side.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		// Nothing to read, as package net's Read: no system call, but a
		// closed connection's error (Control fails once it is closed)
		// rather than a success.
		if err := c.rc.Control(func(uintptr) {}); err != nil {
			return 0, c.opError("read", err)
		}
		return 0, nil
	}
	var (
		n    int
		rerr syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, e := rawRead(fd, p)
			switch e {
			case 0:
				n = r
				return true
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				rerr = e
				return true
			}
		}
	})
	if err == nil && rerr != 0 {
		err = os.NewSyscallError("read", rerr)
	}
	if err != nil {
		return 0, c.opError("read", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p as the socket's own Write would: waiting (with
// the write deadline) while the socket's buffer is full; with an error it
// returns how much was written before it.
func (c *Conn) Write(p []byte) (int, error) {
	var (
		n    int
		werr error
	)
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			w, e := rawWrite(fd, p[n:])
			switch e {
			case 0:
				if w == 0 {
					werr = io.ErrUnexpectedEOF // as package net gives it
					return true
				}
				n += w
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				werr = os.NewSyscallError("write", e)
				return true
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// opError wraps err, from a system call or from the RawConn (whose own
// *net.OpError names the operation "raw-read" or "raw-write"), as the
// socket's Read or Write would.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	// An address is nil when package net could not learn it (a failed
	// getsockname(2) or getpeername(2)): the network is then the other's.
	la, ra := c.Conn.LocalAddr(), c.Conn.RemoteAddr()
	network := ""
	if la != nil {
		network = la.Network()
	} else if ra != nil {
		network = ra.Network()
	}
	return &net.OpError{Op: op, Net: network, Source: la, Addr: ra, Err: err}
}
