package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawConn is the upstream's TCP connection read and written with raw
// read(2) and write(2) through its syscall.RawConn: the runtime's poller
// waits for the socket and applies the deadlines as net.Conn's Read and
// Write do, but the calls themselves (non-blocking: each returns at once)
// are not announced to the scheduler as calls that may block. Such an
// announced call wakes the runtime's monitor (sysmon), which then polls
// every 20 us for a while, and one that lasts (a loopback write runs the
// upstream's side of TCP) may have its P handed to a newly woken thread:
// thread wake-ups that cost relayd more than the calls.
type rawConn struct {
	net.Conn // the *net.TCPConn: deadlines, Close, addresses
	rc       syscall.RawConn
}

// rawSocket returns nc read and written with raw system calls when it is
// a TCP connection, else nc itself (a test's dialer).
func rawSocket(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	return &rawConn{Conn: tc, rc: rc}
}

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var e syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, e = rawRead(fd, p)
			if e != syscall.EINTR {
				return e != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case e != 0:
		return 0, c.opError("read", os.NewSyscallError("read", e))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) Write(p []byte) (int, error) {
	var n int
	var e syscall.Errno
	// The RawConn calls f again, once the socket takes more, each time
	// it returns false.
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			k, en := rawWrite(fd, p[n:])
			switch en {
			case 0:
				n += k
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				e = en
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, c.opError("write", err)
	}
	if e != 0 {
		return n, c.opError("write", os.NewSyscallError("write", e))
	}
	return n, nil
}

// opError is err as net.Conn's Read and Write report it: a *net.OpError
// of op ("read", "write"; the RawConn says "raw-read", "raw-write"), so
// that the error and its text are those of the connection's own calls.
func (c *rawConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
