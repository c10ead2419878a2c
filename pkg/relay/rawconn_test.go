package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// tcpPair returns the two ends of a loopback TCP connection, the first
// read and written with raw system calls (rawSocket).
func tcpPair(t *testing.T) (raw, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	raw = rawSocket(nc)
	if _, ok := raw.(*rawConn); !ok {
		t.Fatalf("rawSocket(%T) = %T, want a *rawConn", nc, raw)
	}
	t.Cleanup(func() { raw.Close(); peer.Close() })
	return raw, peer
}

// The upstream's connection read and written with raw system calls gives
// what net.Conn's Read and Write give: the bytes in order however the
// socket's buffers cut them, io.EOF at the peer's close, a timeout at a
// deadline (with net.Conn's own error text), net.ErrClosed once closed.
func TestRawConn(t *testing.T) {
	t.Run("dialogue", func(t *testing.T) {
		raw, peer := tcpPair(t)
		// More than the socket takes at once: the write waits for the
		// peer to read.
		msg := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\r\n"), 8<<20/38)
		got := make(chan []byte, 1)
		go func() {
			peer.SetDeadline(time.Now().Add(20 * time.Second))
			time.Sleep(50 * time.Millisecond)
			b := make([]byte, len(msg))
			io.ReadFull(peer, b)
			got <- b
			peer.Write([]byte("250 ok\r\n"))
			peer.Close()
		}()
		raw.SetDeadline(time.Now().Add(20 * time.Second))
		if n, err := raw.Write(msg); n != len(msg) || err != nil {
			t.Fatalf("Write: %d of %d, %v", n, len(msg), err)
		}
		if b := <-got; !bytes.Equal(b, msg) {
			t.Fatal("the peer did not get the bytes written")
		}
		b, err := io.ReadAll(raw)
		if err != nil || string(b) != "250 ok\r\n" {
			t.Fatalf("ReadAll: %q, %v", b, err)
		}
		if n, err := raw.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("Read after the peer's close: %d, %v; want io.EOF", n, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		raw, _ := tcpPair(t)
		raw.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := raw.Read(make([]byte, 64))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) || !strings.HasPrefix(err.Error(), "read tcp ") {
			t.Fatalf("Read past the deadline: %v, want net.Conn's read timeout", err)
		}
		// The peer reads nothing: the write waits until its deadline.
		raw.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := raw.Write(make([]byte, 64<<20))
		if !errors.As(err, &ne) || !ne.Timeout() || !strings.HasPrefix(err.Error(), "write tcp ") || n >= 64<<20 {
			t.Fatalf("Write to a peer that reads nothing: %d, %v; want a write timeout", n, err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		raw, _ := tcpPair(t)
		errc := make(chan error, 1)
		go func() {
			_, err := raw.Read(make([]byte, 64))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		raw.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read of a closed connection: %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Read still waiting after Close")
		}
	})
	t.Run("session", func(t *testing.T) {
		// A session to a real upstream (STARTTLS, AUTH) goes over it.
		srv := authServer(t, smtptest.Options{})
		s := dialOK(t, srv.Upstream(), testOpts())
		if _, ok := s.raw.(*rawConn); !ok {
			t.Fatalf("the session's connection is a %T, want a *rawConn", s.raw)
		}
		if res := s.Send(context.Background(), testMsg(simple, "a@example.net")); res.Err != nil {
			t.Fatal(res.Err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		raw, peer := tcpPair(t)
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close() // RST
		time.Sleep(50 * time.Millisecond)
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := raw.Read(make([]byte, 64))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || !strings.Contains(err.Error(), "connection reset") {
			t.Fatalf("Read of a reset connection: %v, want net.Conn's read error", err)
		}
	})
}
