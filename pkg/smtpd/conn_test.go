package smtpd

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
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
	return &conn{Conn: raw, hard: time.Now().Add(time.Minute), release: func() {}, srv: s}
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
