package sockdiag

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// An answer that another netlink socket sends to the lookup's socket,
// for the lookup's next sequence number and port and naming the
// connection's 4-tuple with another owner, is not taken: only the
// kernel's answer (port 0) gives the owner. Sending to another process's
// netlink port needs CAP_NET_ADMIN: the test runs as root only.
func TestTCPOwnerSpoofedAnswer(t *testing.T) {
	client, server := tcpPair(t)
	peer := server.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := server.LocalAddr().(*net.TCPAddr).AddrPort()
	// The first lookup opens the shared socket.
	if _, err := TCPOwner(peer, local); err != nil {
		t.Fatal(err)
	}

	const forgedUID = 4242
	m := make([]byte, msgLen)
	m[0] = unix.AF_INET
	binary.BigEndian.PutUint16(m[4:], peer.Port())
	binary.BigEndian.PutUint16(m[6:], local.Port())
	putAddr(m[8:24], peer.Addr().Unmap())
	putAddr(m[24:40], local.Addr().Unmap())
	binary.LittleEndian.PutUint32(m[64:], forgedUID)
	binary.LittleEndian.PutUint32(m[68:], 12345)
	diag.mu.Lock()
	seq, port := diag.seq+1, diag.conn.PID()
	diag.mu.Unlock()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = unix.Sendto(fd, nlmsg(sockDiagByFamily, 0, seq, port, m), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port})
	if errors.Is(err, unix.EPERM) {
		t.Skip("sending to another netlink port needs CAP_NET_ADMIN")
	}
	if err != nil {
		t.Fatal(err)
	}

	o, err := TCPOwner(peer, local)
	if err != nil {
		t.Fatal(err)
	}
	if o.UID == forgedUID || int(o.UID) != os.Geteuid() {
		t.Errorf("uid %d, want the kernel's %d", o.UID, os.Geteuid())
	}
	if o.Inode != inodeOf(t, client) {
		t.Errorf("inode %d, want the client's %d", o.Inode, inodeOf(t, client))
	}
}
