package smtptest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// countConn counts the writes that reach the connection.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *countConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// TestBatchConn: what the server writes is held until it reads again (or
// closes), then sent in one write.
func TestBatchConn(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	// A batchConn that never sends what it holds fails the test here
	// instead of leaving both ends waiting for the other.
	server.SetDeadline(time.Now().Add(10 * time.Second))
	client.SetDeadline(time.Now().Add(10 * time.Second))
	counted := &countConn{Conn: server}
	l := &trackListener{conns: map[net.Conn]struct{}{}}
	c := &batchConn{trackedConn: &trackedConn{Conn: counted, l: l}}
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 100)
		n, _ := io.ReadAtLeast(client, b, len("250 a\r\n250 b\r\n354 c\r\n"))
		got <- string(b[:n])
		client.Write([]byte("x"))
	}()
	for _, r := range []string{"250 a\r\n", "250 b\r\n", "354 c\r\n"} {
		if _, err := c.Write([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	if n := counted.count(); n != 0 {
		t.Fatalf("%d writes before the read", n)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := counted.count(); n != 1 {
		t.Fatalf("%d writes, want 1", n)
	}
	if s := <-got; s != "250 a\r\n250 b\r\n354 c\r\n" {
		t.Fatalf("client got %q", s)
	}
	// Close sends what is held.
	go io.Copy(io.Discard, client)
	c.Write([]byte("221 bye\r\n"))
	c.Close()
	if n := counted.count(); n != 2 {
		t.Fatalf("%d writes after Close, want 2", n)
	}
}

// TestBatchRepliesSession: a whole session with pipelined commands
// against a server with BatchReplies gets every reply, in order.
func TestBatchRepliesSession(t *testing.T) {
	s := New(t, Options{BatchReplies: true, NoTLS: true})
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	expect := func(want ...string) {
		t.Helper()
		for _, w := range want {
			l, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(l, w) {
				t.Fatalf("got %q %v, want %s", l, err, w)
			}
		}
	}
	expect("220 ")
	c.Write([]byte("EHLO client.example\r\n"))
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	c.Write([]byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"))
	expect("250 ", "250 ", "354 ")
	c.Write([]byte("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"))
	expect("250 ", "221 ")
	if n := s.Count(); n != 1 {
		t.Fatalf("%d messages", n)
	}
	if m := s.Messages(); len(m) != 1 || !strings.Contains(string(m[0].Data), "body") {
		t.Fatalf("messages %+v", m)
	}
}

// TestBatchRepliesTLS: go-smtp's client over STARTTLS and AUTH against a
// server with BatchReplies, messages one after the other and QUIT: the
// 221 and the close_notify held at the server's Close still leave (TLS's
// Close sets the write deadline to now before closing the connection).
func TestBatchRepliesTLS(t *testing.T) {
	s := New(t, Options{BatchReplies: true, Username: "u", Password: "p", NoStore: true})
	c, err := smtp.DialStartTLS(s.Addr, &tls.Config{RootCAs: s.CAPool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(i, err)
		}
		if err := c.Rcpt("b@example.net", nil); err != nil {
			t.Fatal(i, err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(i, err)
		}
		w.Write([]byte("Subject: x\r\n\r\nhi\r\n"))
		if err := w.Close(); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	if n := s.Count(); n != 20 {
		t.Fatalf("%d messages, want 20", n)
	}
}
