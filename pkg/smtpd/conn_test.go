package smtpd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/rawconn"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	return pair(t, "tcp", "127.0.0.1:0")
}

// unixPair returns the two ends of a Unix stream connection.
func unixPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	return pair(t, "unix", filepath.Join(t.TempDir(), "s"))
}

// pair returns the two ends of a connection to a listener on network and
// address, closed at the test's end.
func pair(t *testing.T, network, address string) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

func newTestConn(raw net.Conn) *conn {
	s := &Server{conns: map[*conn]bool{}}
	return newConn(raw, nil, time.Now().Add(time.Minute), func() {}, s)
}

// A reply written line by line leaves in one write when the session next
// reads; the last reply leaves at Close.
func TestConnHoldsRepliesUntilRead(t *testing.T) {
	raw, client := tcpPair(t)
	cc := &countConn{Conn: raw}
	c := newTestConn(cc)
	for _, l := range []string{"250-host\r\n", "250-PIPELINING\r\n", "250 SIZE\r\n"} {
		if n, err := c.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes before the session read", n)
	}
	client.Write([]byte("QUIT\r\n"))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "QUIT\r\n" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Errorf("%d writes for a 3-line reply, want 1", n)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len("250-host\r\n250-PIPELINING\r\n250 SIZE\r\n"))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "250-host\r\n250-PIPELINING\r\n250 SIZE\r\n" {
		t.Fatalf("client got %q, %v", got, err)
	}
	c.Write([]byte("221 Bye\r\n"))
	c.Close()
	rest, err := io.ReadAll(client)
	if err != nil || string(rest) != "221 Bye\r\n" {
		t.Fatalf("after Close the client got %q, %v", rest, err)
	}
}

// More than maxHeld is sent at once, in order.
func TestConnLargeWrite(t *testing.T) {
	raw, client := tcpPair(t)
	c := newTestConn(raw)
	big := bytes.Repeat([]byte("x"), maxHeld+1)
	go func() {
		c.Write([]byte("first\r\n"))
		c.Write(big)
		c.Close()
	}()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "first\r\n"+string(big) {
		t.Fatalf("client got %d bytes, %v", len(got), err)
	}
}

// A Close from another goroutine (Shutdown) does not wait for a session
// stuck writing to a client that reads nothing.
func TestConnCloseDoesNotWaitForStuckWrite(t *testing.T) {
	raw, _ := tcpPair(t)
	c := newTestConn(raw)
	stuck := make(chan struct{})
	go func() {
		defer close(stuck)
		for {
			if _, err := c.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the socket's buffers fill
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the stuck write")
	}
	<-stuck
}

// A socket's conn reads and writes with raw system calls (package
// rawconn); what the session sees of them through the conn's held
// replies is what net.Conn's Read and Write give: the bytes in order
// however the socket's buffers cut them, io.EOF itself at the client's
// close, a timeout error at a deadline. (A Close ending a waiting Read is
// the socket's own Close, which package rawconn's TestClosed checks.)
func TestConnRawSocket(t *testing.T) {
	for _, kind := range []struct {
		name string
		pair func(*testing.T) (net.Conn, net.Conn)
	}{{"tcp", tcpPair}, {"unix", unixPair}} {
		t.Run(kind.name, func(t *testing.T) {
			t.Run("dialogue", func(t *testing.T) {
				raw, client := kind.pair(t)
				c := newTestConn(raw)
				if _, ok := c.Conn.(*rawconn.Conn); !ok {
					t.Fatal("no raw access to a socket")
				}
				// Held replies larger than what the socket takes at
				// once: the write waits for the client to read.
				reply := bytes.Repeat([]byte("250-0123456789abcdefghijklmnopqrstuvwxyz\r\n"), maxHeld/42)
				c.Write(reply)
				got := make(chan []byte, 1)
				go func() {
					client.SetReadDeadline(time.Now().Add(10 * time.Second))
					time.Sleep(50 * time.Millisecond)
					b := make([]byte, len(reply))
					io.ReadFull(client, b)
					got <- b
					client.Write([]byte("QUIT\r\n"))
				}()
				buf := make([]byte, 64)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "QUIT\r\n" {
					t.Fatalf("Read: %q, %v", buf[:n], err)
				}
				if b := <-got; !bytes.Equal(b, reply) {
					t.Fatalf("the client got %d bytes, not the %d written", len(b), len(reply))
				}
				client.Close()
				if n, err := c.Read(buf); n != 0 || err != io.EOF {
					t.Fatalf("Read after the client's close: %d, %v; want io.EOF", n, err)
				}
			})
			t.Run("deadline", func(t *testing.T) {
				raw, _ := kind.pair(t)
				c := newTestConn(raw)
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, err := c.Read(make([]byte, 64))
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Read past the deadline: %v, want a timeout", err)
				}
				// The client reads nothing: once the socket's buffers are
				// full, held bytes wait to leave until the write deadline.
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				var oe *net.OpError
				for range 1000 {
					c.Write(bytes.Repeat([]byte("x"), maxHeld))
					c.SetReadDeadline(time.Now().Add(time.Millisecond))
					if _, err := c.Read(make([]byte, 64)); errors.As(err, &oe) && oe.Op == "write" {
						break
					}
				}
				if oe == nil || oe.Op != "write" || !oe.Timeout() {
					t.Fatalf("sending to a client that reads nothing: %v, want a write timeout", oe)
				}
			})
		})
	}
}
