package sockdiag

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inodeOf returns the inode of c's socket, as /proc/self/fd shows it.
func inodeOf(t testing.TB, c net.Conn) uint64 {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestTCPOwner(t *testing.T) {
	for _, network := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(network.net, func(t *testing.T) {
			ln, err := net.Listen(network.net, network.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network.net, err)
			}
			defer ln.Close()
			client, err := net.Dial(network.net, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			peer := server.RemoteAddr().(*net.TCPAddr).AddrPort()
			local := server.LocalAddr().(*net.TCPAddr).AddrPort()
			o, err := TCPOwner(peer, local)
			if err != nil {
				t.Fatal(err)
			}
			if int(o.UID) != os.Geteuid() {
				t.Errorf("uid %d, want %d", o.UID, os.Geteuid())
			}
			// The client's socket, not the accepted one.
			if want := inodeOf(t, client); o.Inode != want {
				t.Errorf("inode %d, want the client's %d (server's is %d)", o.Inode, want, inodeOf(t, server))
			}
			h := FindHolder("", o.Inode, o.UID, 10*time.Second)
			if h.PID != os.Getpid() {
				t.Errorf("holder %+v, want pid %d", h, os.Getpid())
			}
		})
	}
}

// A 4-tuple that no socket has is not found (never a zero owner).
func TestTCPOwnerNotFound(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = TCPOwner(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:"+strconv.Itoa(port)))
	if err != ErrNotFound {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
}

// A client that closed its end (its socket orphaned, waiting for the
// connection to end) has no owner: an error, never uid 0.
func TestTCPOwnerClosed(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client.Close()
	_, err = TCPOwner(server.RemoteAddr().(*net.TCPAddr).AddrPort(), server.LocalAddr().(*net.TCPAddr).AddrPort())
	if err != ErrOrphan && err != ErrNotFound {
		t.Fatalf("err %v, want ErrOrphan or ErrNotFound", err)
	}
}

// BenchmarkIdentify is what the listener does per TCP connection before
// the greeting: the inet_diag lookup, then the /proc scan for the holder.
func BenchmarkIdentify(b *testing.B) {
	_, server := tcpPair(b)
	peer := server.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := server.LocalAddr().(*net.TCPAddr).AddrPort()
	b.Run("inet_diag", func(b *testing.B) {
		for b.Loop() {
			if _, err := TCPOwner(peer, local); err != nil {
				b.Fatal(err)
			}
		}
	})
	o, _ := TCPOwner(peer, local)
	b.Run("proc-scan", func(b *testing.B) {
		for b.Loop() {
			if h := FindHolder("", o.Inode, o.UID, 0); h.PID == 0 {
				b.Fatal("not found")
			}
		}
	})
	b.Run("proc-hint", func(b *testing.B) {
		for b.Loop() {
			if h := FindHolder("", o.Inode, o.UID, 0, 1, os.Getpid()); h.PID == 0 {
				b.Fatal("not found")
			}
		}
	})
}

// UnixPeer names the client's socket of an accepted Unix connection, the
// one this process holds (Holds), and no other.
func TestUnixPeer(t *testing.T) {
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	f.Close()
	got, err := UnixPeer(sc.(*net.UnixConn))
	if err != nil || got != st.Ino {
		t.Fatalf("UnixPeer = %d, %v; want %d", got, err, st.Ino)
	}
	if !Holds("", os.Getpid(), got, 0) {
		t.Error("Holds: this process holds the client's socket, not found")
	}
	c.Close()
	if Holds("", os.Getpid(), got, 0) {
		t.Error("Holds: the closed socket is still held")
	}
}

// Lookups share one netlink socket: concurrent lookups each get their
// own connection's answer, and a shared socket that broke is replaced
// without failing the lookup.
func TestTCPOwnerShared(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type pair struct {
		peer, local netip.AddrPort
		inode       uint64
	}
	var pairs []pair
	for range 16 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pairs = append(pairs, pair{s.RemoteAddr().(*net.TCPAddr).AddrPort(), s.LocalAddr().(*net.TCPAddr).AddrPort(), inodeOf(t, c)})
	}
	errs := make(chan error, len(pairs)*20)
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				o, err := TCPOwner(p.peer, p.local)
				if err == nil && o.Inode != p.inode {
					err = fmt.Errorf("%v: inode %d, want %d", p.peer, o.Inode, p.inode)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Break the shared socket behind the package's back: the next lookup
	// still answers, on a new socket.
	diag.mu.Lock()
	if diag.conn == nil {
		diag.mu.Unlock()
		t.Fatal("no shared socket kept after the lookups")
	}
	old := diag.conn
	old.Close()
	diag.mu.Unlock()
	if o, err := TCPOwner(pairs[0].peer, pairs[0].local); err != nil || o.Inode != pairs[0].inode {
		t.Fatalf("after the shared socket broke: %+v, %v", o, err)
	}
	if diag.conn == old {
		t.Error("the broken socket was kept")
	}
	// The kernel's "no such socket" keeps the shared socket.
	cur := diag.conn
	if _, err := TCPOwner(netip.MustParseAddrPort("127.0.0.1:1"), pairs[0].local); err != ErrNotFound {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
	if diag.conn != cur {
		t.Error("a socket that answered ENOENT was replaced")
	}
}

// A lookup's answer is read at once, in the call that sends it; when none
// is there the read waits through the poller under its deadline (here a
// short one, nothing having been asked: it fails, it does not hang), and
// the socket answers the next lookup at once all the same.
func TestDiagAnswerWait(t *testing.T) {
	_, server := tcpPair(t)
	peer := server.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := server.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := TCPOwner(peer, local); err != nil {
		t.Fatal(err)
	}
	diag.mu.Lock()
	cur := diag.conn
	cur.SetDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, _, err := diag.recvWaiting()
	diag.mu.Unlock()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("waiting for no answer: %v, want the deadline's error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the wait took %v", d)
	}
	if o, err := TCPOwner(peer, local); err != nil || o.Inode == 0 {
		t.Fatalf("after a wait that timed out: %+v, %v", o, err)
	}
	if diag.conn != cur {
		t.Error("the socket was replaced")
	}
}
