package sockdiag

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tcpPair opens one loopback connection and returns its client and
// server ends, closed when the test ends.
func tcpPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { server.Close() })
	return client, server
}

// dialN opens n loopback connections and returns the client ends.
func dialN(tb testing.TB, n int) []net.Conn {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	var cs []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close(); s.Close() })
		cs = append(cs, c)
	}
	return cs
}

// FindHolder reports the descriptor that holds the socket; InSlot finds
// it there with one readlink, and not once the socket is closed or in
// another descriptor.
func TestInSlot(t *testing.T) {
	cs := dialN(t, 3)
	in := inodeOf(t, cs[1])
	h := FindHolder("", in, uint32(os.Geteuid()), 10*time.Second, os.Getpid())
	if h.PID != os.Getpid() || h.FD <= 2 {
		t.Fatalf("FindHolder: %+v", h)
	}
	if !InSlot("", Slot{PID: h.PID, FD: h.FD}, in) {
		t.Errorf("not in the slot FindHolder reported (%d)", h.FD)
	}
	other := inodeOf(t, cs[2])
	if InSlot("", Slot{PID: h.PID, FD: h.FD}, other) {
		t.Error("another socket found in the slot")
	}
	if InSlot("", Slot{PID: h.PID, FD: 0}, in) || InSlot("", Slot{PID: 0, FD: h.FD}, in) {
		t.Error("found in the wrong slot")
	}
	// A procRoot whose path does not fit InSlot's buffer on the stack
	// (a link to /proc under a long directory name).
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 150))
	if err := os.Mkdir(long, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc", filepath.Join(long, "proc")); err != nil {
		t.Fatal(err)
	}
	if !InSlot(filepath.Join(long, "proc"), Slot{PID: h.PID, FD: h.FD}, in) {
		t.Errorf("not in the slot through a long procRoot")
	}
	if InSlot(filepath.Join(long, "proc"), Slot{PID: h.PID, FD: h.FD}, other) {
		t.Error("another socket found in the slot through a long procRoot")
	}
	cs[1].Close()
	if InSlot("", Slot{PID: h.PID, FD: h.FD}, in) {
		t.Error("found after the socket was closed")
	}
}

// A process with 40 sockets open that connects again: the walk over its
// descriptors (FindHolder with the process as hint) against the slot.
func BenchmarkFindHolderHint(b *testing.B) {
	cs := dialN(b, 40)
	in := inodeOf(b, cs[len(cs)-1])
	pid := os.Getpid()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if h := FindHolder("", in, uint32(os.Geteuid()), 0, pid); h.PID != pid {
			b.Fatal(h)
		}
	}
}

func BenchmarkInSlot(b *testing.B) {
	cs := dialN(b, 40)
	in := inodeOf(b, cs[len(cs)-1])
	h := FindHolder("", in, uint32(os.Geteuid()), 0, os.Getpid())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !InSlot("", Slot{PID: h.PID, FD: h.FD}, in) {
			b.Fatal("not found")
		}
	}
}

// The time limit bounds the walk over a hinted process's descriptors too:
// a client that fills its process with descriptors and holds the socket
// past the first batch is not walked to the end once the limit is spent
// (the hints are what is tried when a user's scan budget is gone).
func TestFindHolderHintWithinLimit(t *testing.T) {
	for i := 0; i < 600; i++ {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Skip("cannot open 600 descriptors:", err)
		}
		t.Cleanup(func() { f.Close() })
	}
	cs := dialN(t, 1)
	in := inodeOf(t, cs[0])
	pid := os.Getpid()
	if h := FindHolder("", in, uint32(os.Geteuid()), time.Nanosecond, pid); h.PID != 0 || !h.Partial {
		t.Errorf("limit spent: %+v, want not found and partial", h)
	}
	if h := FindHolder("", in, uint32(os.Geteuid()), 10*time.Second, pid); h.PID != pid {
		t.Errorf("within the limit: %+v, want pid %d", h, pid)
	}
}

// Holds stops at its limit too: a socket past the first batch of
// descriptors is reported not held once the limit is spent, and held
// without a limit.
func TestHoldsWithinLimit(t *testing.T) {
	for i := 0; i < 600; i++ {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Skip("cannot open 600 descriptors:", err)
		}
		t.Cleanup(func() { f.Close() })
	}
	cs := dialN(t, 1)
	in := inodeOf(t, cs[0])
	if Holds("", os.Getpid(), in, time.Nanosecond) {
		t.Error("limit spent: reported held")
	}
	if !Holds("", os.Getpid(), in, 0) {
		t.Error("no limit: not found")
	}
}
