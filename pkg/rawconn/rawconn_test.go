package rawconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pair(t, ln)
}

// unixPair returns the two ends of a Unix stream connection.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	return pair(t, ln)
}

func pair(t *testing.T, ln net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	defer ln.Close()
	a, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// forEach runs test on each kind of socket, with the end under test
// wrapped, and also unwrapped: what the wrapped end gives is checked
// against what package net's own Read and Write give.
func forEach(t *testing.T, test func(t *testing.T, c, peer net.Conn)) {
	for _, kind := range []struct {
		name string
		pair func(*testing.T) (net.Conn, net.Conn)
	}{{"tcp", tcpPair}, {"unix", unixPair}} {
		for _, wrap := range []bool{true, false} {
			name := kind.name + "/raw"
			if !wrap {
				name = kind.name + "/net"
			}
			t.Run(name, func(t *testing.T) {
				c, peer := kind.pair(t)
				if wrap {
					c = Wrap(c)
					if _, ok := c.(*Conn); !ok {
						t.Fatalf("Wrap of a socket gave a %T", c)
					}
				}
				test(t, c, peer)
			})
		}
	}
}

// pattern returns n bytes that show where they were cut or reordered.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/7) ^ byte(i*13) ^ seed
	}
	return b
}

// Much more than the socket's buffers hold, both ways at once: each
// Write waits for the peer to read, each Read returns what there is;
// the bytes arrive whole and in order, then io.EOF at the peer's close.
func TestDialogue(t *testing.T) {
	forEach(t, func(t *testing.T, c, peer net.Conn) {
		const size = 8 << 20
		out, in := pattern(size, 1), pattern(size, 2)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		peer.SetDeadline(time.Now().Add(30 * time.Second))
		got := make(chan []byte, 1)
		go func() {
			time.Sleep(50 * time.Millisecond) // the first Write meets a full buffer
			b := make([]byte, size)
			io.ReadFull(peer, b)
			got <- b
		}()
		wrote := make(chan error, 1)
		go func() {
			_, err := peer.Write(in)
			wrote <- err
		}()
		if n, err := c.Write(out); n != size || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
		b := make([]byte, size)
		if n, err := io.ReadFull(c, b); n != size || err != nil {
			t.Fatalf("Read: %d, %v", n, err)
		}
		if !bytes.Equal(b, in) {
			t.Fatal("the bytes read are not the peer's, in order")
		}
		if b := <-got; !bytes.Equal(b, out) {
			t.Fatal("the peer did not get the bytes written, in order")
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		if n, err := c.Write(nil); n != 0 || err != nil {
			t.Fatalf("Write of nothing: %d, %v", n, err)
		}
		if n, err := c.Read(nil); n != 0 || err != nil {
			t.Fatalf("Read into nothing: %d, %v", n, err)
		}
		peer.Close()
		if n, err := c.Read(b); n != 0 || err != io.EOF {
			t.Fatalf("Read after the peer's close: %d, %v; want io.EOF", n, err)
		}
	})
}

// checkOpError checks that err is nc's *net.OpError for op.
func checkOpError(t *testing.T, err error, op string, nc net.Conn) *net.OpError {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op || oe.Net != nc.LocalAddr().Network() ||
		oe.Source.String() != nc.LocalAddr().String() || oe.Addr.String() != nc.RemoteAddr().String() {
		t.Fatalf("%s: %#v (%v), want the connection's *net.OpError", op, err, err)
	}
	// One *net.OpError, as package net's: not the RawConn's own
	// ("raw-read", "raw-write") inside it.
	if inner := new(*net.OpError); errors.As(oe.Err, inner) {
		t.Fatalf("%s: %v, a *net.OpError within the connection's", op, err)
	}
	return oe
}

// A deadline met is a timeout: before the call and while it waits, for
// Read and for Write (whose count says what went before it).
func TestDeadlines(t *testing.T) {
	forEach(t, func(t *testing.T, c, peer net.Conn) {
		timeout := func(op string, err error) {
			t.Helper()
			checkOpError(t, err, op, c)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("%s past the deadline: %v, want a timeout", op, err)
			}
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 64))
		timeout("read", err)
		_, err = c.Read(make([]byte, 64)) // the deadline has passed
		timeout("read", err)
		// The peer reads nothing: the buffers fill, the rest waits. (The
		// 64 MiB are allocated before the deadline is set: zeroing them
		// on a loaded machine took longer than the deadline once, and a
		// Write begun past its deadline rightly writes nothing.)
		const size = 64 << 20
		big := make([]byte, size)
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Write(big)
		timeout("write", err)
		if n <= 0 || n >= size {
			t.Fatalf("Write stopped by its deadline wrote %d of %d bytes", n, size)
		}
		// A new deadline, in the future: the peer's bytes are read.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		peer.Write([]byte("hello"))
		b := make([]byte, 64)
		if n, err := c.Read(b); string(b[:n]) != "hello" || err != nil {
			t.Fatalf("Read: %q, %v", b[:n], err)
		}
	})
}

// A Close ends a Read waiting, and the calls after it, with
// net.ErrClosed.
func TestClosed(t *testing.T) {
	forEach(t, func(t *testing.T, c, peer net.Conn) {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 64))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		c.Close()
		select {
		case err := <-errc:
			checkOpError(t, err, "read", c)
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read ended by Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Read still waiting after Close")
		}
		if _, err := c.Read(make([]byte, 64)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
		}
		// Into no buffer too: not a success that a caller could take
		// for a connection still open.
		n, err := c.Read(nil)
		if n != 0 || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read into nothing after Close: %d, %v, want net.ErrClosed", n, err)
		}
		checkOpError(t, err, "read", c)
	})
}

// A connection the peer reset gives the system call's error, ECONNRESET
// in an *os.SyscallError, to Read and then EPIPE to Write.
func TestReset(t *testing.T) {
	forEach(t, func(t *testing.T, c, peer net.Conn) {
		tc, ok := peer.(*net.TCPConn)
		if !ok {
			t.Skip("a reset is TCP's")
		}
		c.Write([]byte("unread")) // closed with unread data: RST
		time.Sleep(20 * time.Millisecond)
		tc.SetLinger(0)
		tc.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 64))
		oe := checkOpError(t, err, "read", c)
		var se *os.SyscallError
		if !errors.As(oe.Err, &se) || se.Syscall != "read" || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Read of a reset connection: %#v (%v), want read's ECONNRESET", oe.Err, err)
		}
		_, err = c.Write([]byte("x"))
		checkOpError(t, err, "write", c)
		if !errors.As(err, &se) || se.Syscall != "write" || !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("Write to a reset connection: %v, want write's EPIPE", err)
		}
	})
}

// What is not a socket is left as it is.
func TestWrapNotASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := Wrap(a); c != a {
		t.Fatalf("Wrap of a pipe gave a %T", c)
	}
}

// noLocalAddr is a socket whose LocalAddr is nil, as package net gives it
// when getsockname(2) failed at the connection's start.
type noLocalAddr struct{ *net.TCPConn }

func (noLocalAddr) LocalAddr() net.Addr { return nil }

// An error on a connection without a local address is still the
// connection's *net.OpError, named after the remote address's network.
func TestErrorWithoutLocalAddr(t *testing.T) {
	a, _ := tcpPair(t)
	c := Wrap(noLocalAddr{a.(*net.TCPConn)})
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("Wrap gave a %T", c)
	}
	c.Close()
	for op, call := range map[string]func([]byte) (int, error){"read": c.Read, "write": c.Write} {
		_, err := call(make([]byte, 1))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != op || oe.Net != "tcp" || oe.Source != nil || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("%s of a closed connection without a local address: %#v (%v)", op, err, err)
		}
	}
}
