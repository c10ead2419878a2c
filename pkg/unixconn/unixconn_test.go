package unixconn

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func listen(t *testing.T) (string, *net.UnixListener) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return path, ln
}

// A request and its answer: what the client writes the server reads up
// to the client's CloseWrite, and the server's answer is read to io.EOF.
func TestExchange(t *testing.T) {
	path, ln := listen(t)
	done := make(chan error, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		req, err := io.ReadAll(c)
		if err != nil {
			done <- err
			return
		}
		_, err = c.Write([]byte("answer to " + string(req)))
		done <- err
	}()
	c, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("x", 1<<20) // more than the socket buffer
	if n, err := c.Write([]byte(big)); err != nil || n != len(big) {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "answer to "+big {
		t.Errorf("answer of %d bytes, want %d", len(got), len("answer to "+big))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A socket nobody listens on is the connect(2) error, as net's dialer
// reports it.
func TestDialMissing(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if !errors.Is(err, syscall.ENOENT) || err.Error() != "connect: no such file or directory" {
		t.Errorf("Dial: %v", err)
	}
}

// A listener whose backlog is full makes Dial wait for its timeout, no
// longer.
func TestDialTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	var conns []*Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; ; i++ {
		start := time.Now()
		c, err := Dial(path, 100*time.Millisecond)
		if err == nil {
			conns = append(conns, c)
			if i > 10 {
				t.Fatal("the backlog never filled")
			}
			continue
		}
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Dial: %v", err)
		}
		if d := time.Since(start); d < 90*time.Millisecond || d > 5*time.Second {
			t.Errorf("Dial gave up after %v, want 100ms", d)
		}
		break
	}
}

// SetTimeout bounds each read; Abort ends a read that waits, from
// another goroutine.
func TestTimeoutAndAbort(t *testing.T) {
	path, ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // never answers
		}
	}()
	c, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetTimeout(50 * time.Millisecond)
	start := time.Now()
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Read: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("Read timed out after %v", d)
	}

	c2, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	time.AfterFunc(50*time.Millisecond, c2.Abort)
	if _, err := c2.Read(make([]byte, 10)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Read after Abort: %v, want a timeout", err)
	}
	if _, err := c2.Write([]byte("x")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Write after Abort: %v, want a timeout", err)
	}
}

// A peer that has gone is EPIPE on Write, not SIGPIPE (which would end
// a program that does not ignore it).
func TestWriteToClosedPeer(t *testing.T) {
	path, ln := listen(t)
	accepted := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		close(accepted)
	}()
	c, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-accepted
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = c.Write([]byte("x"))
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Errorf("Write to a closed peer: %v", werr)
	}
	var se *os.SyscallError
	if !errors.As(werr, &se) || se.Syscall != "write" {
		t.Errorf("Write error %#v is not a write SyscallError", werr)
	}
}

// An Abort after Close (a timer that fired as the exchange ended) does
// not shut down whatever socket has the descriptor number by then.
func TestAbortAfterClose(t *testing.T) {
	path, ln := listen(t)
	c, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The server's end is accepted before c is closed, so that it cannot
	// take the descriptor c frees: c2's socket does. c2 is never accepted;
	// it writes to its peer's buffer all the same.
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	fd := c.fd
	c.Close()
	c2, err := Dial(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.fd != fd {
		t.Skipf("descriptor %d not reused (%d)", fd, c2.fd)
	}
	c.Abort()
	if _, err := c2.Write([]byte("x")); err != nil {
		t.Errorf("the descriptor's new socket was shut down: %v", err)
	}
	if err := c.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
