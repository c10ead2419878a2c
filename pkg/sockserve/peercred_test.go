package sockserve

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// PeerCred gives the kernel's credentials of the peer, and its error
// names SO_PEERCRED (the one place that says so: its callers pass it on).
func TestPeerCred(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	cred, err := PeerCred(s)
	if err != nil || int(cred.Uid) != os.Getuid() || int(cred.Pid) != os.Getpid() {
		t.Fatalf("PeerCred = %+v, %v; want uid %d pid %d", cred, err, os.Getuid(), os.Getpid())
	}
	s.Close()
	if _, err := PeerCred(s); err == nil || !strings.HasPrefix(err.Error(), "SO_PEERCRED: ") {
		t.Errorf("PeerCred of a closed connection: %v; want an error saying SO_PEERCRED", err)
	}
}
