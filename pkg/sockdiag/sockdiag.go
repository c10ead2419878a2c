// Package sockdiag tells who holds the other end of a local TCP
// connection: the owner (UID) and inode of the client's socket from the
// kernel's socket table (NETLINK_SOCK_DIAG, inet_diag: the same lookup as
// "ss -e"), and the process whose file table holds that socket
// (/proc/PID/fd, as "ss -p" finds it).
//
// The UID is the kernel's: the effective UID of the process that created
// the client's socket (sock_i_uid). It cannot be forged by the client,
// and it is found only when the client's socket is in the caller's
// network namespace. The process is advisory: sockets are inherited and
// passed between processes, and a process may have exited since.
//
// Its Go API is not stable.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Netlink constants of linux/sock_diag.h and linux/inet_diag.h.
const (
	sockDiagByFamily = 20         // SOCK_DIAG_BY_FAMILY
	noCookie         = 0xffffffff // INET_DIAG_NOCOOKIE
	reqLen           = 56         // sizeof(struct inet_diag_req_v2)
	msgLen           = 72         // sizeof(struct inet_diag_msg)
)

// ErrNotFound is a connection whose client socket is not in this network
// namespace's socket table: it is gone (closed, reset), or it is in
// another network namespace (a container reaching relayd's socket through
// a forwarded or inherited descriptor).
var ErrNotFound = errors.New("the client's socket is not in this network namespace's socket table (closed already, or in another network namespace)")

// ErrOrphan is a client socket that no process holds any more (closed,
// waiting for the connection to end): the kernel reports no owner for it.
var ErrOrphan = errors.New("the client's socket has no owner any more (the client closed it)")

// Owner is the client's socket as the kernel's socket table has it.
type Owner struct {
	UID   uint32 // the socket's owner
	Inode uint64 // the socket's inode: "socket:[Inode]" in /proc/PID/fd
}

// TCPOwner looks up the TCP socket whose local end is client and whose
// remote end is server — the client's side of a connection that relayd
// accepted on server from client — and returns its owner. Both addresses
// must be of the same family (IPv4-mapped IPv6 addresses are looked up as
// IPv4, which also finds IPv6 sockets connected to a mapped address).
func TCPOwner(client, server netip.AddrPort) (Owner, error) {
	ca, sa := client.Addr().Unmap(), server.Addr().Unmap()
	if ca.Is4() != sa.Is4() {
		return Owner{}, fmt.Errorf("sockdiag: address families differ: %v, %v", client, server)
	}
	family := uint8(unix.AF_INET6)
	if ca.Is4() {
		family = unix.AF_INET
	}
	req := make([]byte, reqLen)
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.LittleEndian.PutUint32(req[4:], 0xffffffff) // every TCP state
	id := req[8:]
	binary.BigEndian.PutUint16(id[0:], client.Port())
	binary.BigEndian.PutUint16(id[2:], server.Port())
	putAddr(id[4:20], ca)
	putAddr(id[20:36], sa)
	binary.LittleEndian.PutUint32(id[40:], noCookie)
	binary.LittleEndian.PutUint32(id[44:], noCookie)

	msgs, err := diag.execute(req)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Owner{}, ErrNotFound
		}
		return Owner{}, fmt.Errorf("sockdiag: inet_diag lookup: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < msgLen {
			continue
		}
		d := m.Data
		mid := d[4:52]
		// The kernel found the socket by this 4-tuple; check that the
		// answer is that socket and not another one.
		if binary.BigEndian.Uint16(mid[0:]) != client.Port() || binary.BigEndian.Uint16(mid[2:]) != server.Port() ||
			getAddr(d[0], mid[4:20]) != ca || getAddr(d[0], mid[20:36]) != sa {
			continue
		}
		uid := binary.LittleEndian.Uint32(d[64:])
		inode := binary.LittleEndian.Uint32(d[68:])
		if inode == 0 {
			// An orphaned socket reports uid 0 and inode 0: no owner,
			// certainly not root.
			return Owner{}, ErrOrphan
		}
		return Owner{UID: uid, Inode: uint64(inode)}, nil
	}
	return Owner{}, ErrNotFound
}

// diag is the process's NETLINK_SOCK_DIAG socket, shared by every lookup
// (dialling one per lookup cost more than the lookup itself).
var diag diagConn

// diagConn is a netlink socket opened on first use and kept while it
// answers. Lookups take turns on it: each is one request and its answer,
// which the kernel gives at once. A socket whose exchange failed in any
// other way than the kernel's "no such socket" (a timeout, a short read)
// may still hold a late answer, which would be read as the next lookup's:
// it is closed, and the next lookup opens a new one. (An answer's sequence
// number and port are also checked against its request's.)
//
// The socket is netlink's (Dial: the socket, its binding and port); the
// exchange is one sendto(2) and one recvmsg(2) on it through its
// syscall.RawConn, into a buffer of a page (the kernel's answer to one
// lookup is one message of ~120 bytes; a truncated one is refused).
// netlink.Conn.Execute costs one more system call (a peek for the
// answer's size) and starts a goroutine for each of its system calls to
// watch for a cancellation that a lookup never asks for: half of the
// lookup's time (BenchmarkIdentify/inet_diag 9.8 -> 5.0 µs).
//
// The kernel answers a sock_diag request within the sendto(2) that
// makes it (netlink hands the request to its handler, which queues the
// answer on this socket, before the call returns): the recvmsg(2) right
// after it, on the non-blocking socket, finds the answer there. Both are
// made in one RawConn.Control, on buffers, address and message header
// kept here, with no deadline to set: only an answer not there yet
// (EAGAIN, or more parts of a multipart answer) waits through the
// poller, under a deadline set then.
type diagConn struct {
	mu   sync.Mutex
	conn *netlink.Conn
	rc   syscall.RawConn
	seq  uint32
	buf  []byte
	req  [nlHeaderLen + maxReqLen]byte // the request being sent
	to   unix.SockaddrNetlink          // the kernel (port 0)
	from unix.RawSockaddrNetlink       // the sender of an answer
	iov  unix.Iovec
	msg  unix.Msghdr
	// The request of d.req to send (out), what sending it and reading
	// the answer gave, and the function that does both on the socket
	// (made once: a closure made per lookup would be allocated, with what
	// it captures).
	out        []byte
	n          int
	serr, rerr error
	sendRecv   func(fd uintptr)
}

// maxReqLen is the longest request: inet_diag's (unix_diag's is shorter).
const maxReqLen = reqLen

// kernelError is the kernel's error answer to a request (NLMSG_ERROR).
type kernelError struct{ errno unix.Errno }

func (e *kernelError) Error() string { return "netlink: " + e.errno.Error() }
func (e *kernelError) Unwrap() error { return e.errno }

func (d *diagConn) execute(req []byte) ([]netlink.Message, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A kept socket that fails is replaced and the lookup tried once more
	// on the new one: a lookup fails only when a fresh socket fails too.
	for kept := d.conn != nil; ; kept = false {
		if d.conn == nil {
			c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
			if err != nil {
				return nil, fmt.Errorf("sockdiag: %w", err)
			}
			rc, err := c.SyscallConn()
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("sockdiag: %w", err)
			}
			d.conn, d.rc = c, rc
		}
		msgs, err := d.exchange(req)
		if err == nil || isKernelNoEnt(err) {
			return msgs, err
		}
		d.conn.Close()
		d.conn, d.rc = nil, nil
		if !kept {
			return nil, err
		}
	}
}

// Netlink message header and types (linux/netlink.h).
const (
	nlHeaderLen = 16
	nlError     = 0x2 // NLMSG_ERROR
	nlDone      = 0x3 // NLMSG_DONE
)

// exchange sends one request and reads the kernel's answer (d.mu held):
// the messages it holds, or the kernel's error. The answer must come from
// the kernel (port 0), for this request (its sequence number) and to this
// socket (its port), whole (not truncated).
func (d *diagConn) exchange(req []byte) ([]netlink.Message, error) {
	if len(req) > maxReqLen {
		return nil, errors.New("sockdiag: request too long")
	}
	d.seq++
	seq, port := d.seq, d.conn.PID()
	b := d.req[:nlHeaderLen+len(req)]
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(b[6:], uint16(netlink.Request))
	binary.NativeEndian.PutUint32(b[8:], seq)
	binary.NativeEndian.PutUint32(b[12:], port)
	copy(b[nlHeaderLen:], req)
	if d.buf == nil {
		d.buf = make([]byte, os.Getpagesize())
	}
	d.to.Family = unix.AF_NETLINK
	// The request and, at once, its answer (normally there already).
	if d.sendRecv == nil {
		d.sendRecv = func(fd uintptr) {
			d.n = 0
			if d.serr = unix.Sendto(int(fd), d.out, 0, &d.to); d.serr == nil {
				d.n, d.rerr = d.recv(fd)
			}
		}
	}
	d.out = b
	err := d.rc.Control(d.sendRecv)
	n, serr, rerr := d.n, d.serr, d.rerr
	// (serr is this call's once Control ran sendRecv: err nil.)
	if err == nil && serr != nil {
		err = serr
		if serr == unix.EAGAIN {
			err = d.sendWaiting(b)
			rerr = unix.EAGAIN
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sockdiag: send: %w", err)
	}
	var msgs []netlink.Message
	waited := false
	for {
		if rerr == unix.EAGAIN {
			// Not there yet: wait for it through the poller.
			if !waited {
				d.conn.SetDeadline(time.Now().Add(5 * time.Second))
				waited = true
			}
			var err error
			if n, rerr, err = d.recvWaiting(); err != nil {
				return nil, fmt.Errorf("sockdiag: receive: %w", err)
			}
		}
		if rerr != nil {
			return nil, fmt.Errorf("sockdiag: receive: %w", rerr)
		}
		var end bool
		if msgs, end, err = parseAnswer(msgs, d.buf[:n], seq, port); err != nil || end {
			return msgs, err
		}
		n, rerr = 0, unix.EAGAIN
	}
}

// sendWaiting sends b, waiting through the poller (under a deadline)
// while the socket's buffer is full.
func (d *diagConn) sendWaiting(b []byte) error {
	d.conn.SetDeadline(time.Now().Add(5 * time.Second))
	var serr error
	err := d.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &d.to)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	return err
}

// recvWaiting is recv, waiting through the poller until a datagram is
// there (err: the wait failed, its deadline passed).
func (d *diagConn) recvWaiting() (n int, rerr, err error) {
	err = d.rc.Read(func(fd uintptr) bool {
		n, rerr = d.recv(fd)
		return rerr != unix.EAGAIN
	})
	return n, rerr, err
}

// recv reads one datagram of the socket fd into d.buf without waiting
// (recvmsg(2) on the address and header kept in d: no allocation). It
// fails with EAGAIN when none is there, and refuses a truncated datagram
// or one not from the kernel.
func (d *diagConn) recv(fd uintptr) (int, error) {
	d.from = unix.RawSockaddrNetlink{}
	d.iov.Base = &d.buf[0]
	d.iov.SetLen(len(d.buf))
	d.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&d.from)), Namelen: uint32(unsafe.Sizeof(d.from)), Iov: &d.iov, Iovlen: 1}
	for {
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&d.msg)), unix.MSG_DONTWAIT)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return 0, e
		case d.msg.Flags&unix.MSG_TRUNC != 0:
			return 0, errors.New("answer truncated")
		case d.from.Family != unix.AF_NETLINK || d.from.Pid != 0:
			return 0, errors.New("answer not from the kernel")
		}
		return int(r), nil
	}
}

// parseAnswer appends to msgs the messages of one datagram b of the
// kernel's answer to request seq of port; end is false when more
// datagrams follow (the last message says NLM_F_MULTI, and no NLMSG_DONE
// or acknowledgement ended it). The kernel's error answer is a *kernelError;
// a message for another request or port, or whose length does not fit,
// fails the whole answer.
func parseAnswer(msgs []netlink.Message, b []byte, seq, port uint32) (_ []netlink.Message, end bool, err error) {
	more := false
	for len(b) > 0 {
		if len(b) < nlHeaderLen {
			return nil, false, errors.New("sockdiag: receive: short message")
		}
		l := int(binary.NativeEndian.Uint32(b[0:]))
		if l < nlHeaderLen || l > len(b) {
			return nil, false, errors.New("sockdiag: receive: bad message length")
		}
		var m netlink.Message
		m.Header.Length = uint32(l)
		m.Header.Type = netlink.HeaderType(binary.NativeEndian.Uint16(b[4:]))
		m.Header.Flags = netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:]))
		m.Header.Sequence = binary.NativeEndian.Uint32(b[8:])
		m.Header.PID = binary.NativeEndian.Uint32(b[12:])
		m.Data = append([]byte(nil), b[nlHeaderLen:l]...)
		b = b[min(len(b), (l+3)&^3):]
		if m.Header.Sequence != seq || m.Header.PID != port {
			return nil, false, errors.New("sockdiag: receive: answer to another request")
		}
		switch m.Header.Type {
		case nlError:
			if len(m.Data) < 4 {
				return nil, false, errors.New("sockdiag: receive: short error message")
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return nil, false, &kernelError{errno: unix.Errno(-e)}
			}
			return msgs, true, nil // an acknowledgement
		case nlDone:
			return msgs, true, nil
		}
		msgs = append(msgs, m)
		more = m.Header.Flags&netlink.Multi != 0
	}
	return msgs, !more, nil
}

// isKernelNoEnt reports whether err is the kernel's own error answer
// ENOENT (the socket looked up does not exist): a complete exchange.
func isKernelNoEnt(err error) bool {
	var ke *kernelError
	return errors.As(err, &ke) && ke.errno == unix.ENOENT
}

func putAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}

func getAddr(family byte, b []byte) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16])).Unmap()
}

// Holder is the result of FindHolder.
type Holder struct {
	PID int // 0 when no process was found
	// Denied is the number of processes whose descriptors could not be
	// read (EACCES: another user's process, and not both of
	// CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE).
	Denied int
	// Partial is set when the scan was cut short by its time limit.
	Partial bool
	// FD is the descriptor of PID that holds the socket (see Slot).
	FD int
}

// Slot is a descriptor of a process: where a process held a client's
// socket. A process that connects again (a PHP-FPM worker, a long-running
// app) usually gets the same descriptor number for its next socket, so
// the slots of the last few connections of a user find its next one with
// one readlink each (InSlot), before any scan.
type Slot struct{ PID, FD int }

// InSlot reports whether /proc/PID/fd/FD of sl is the socket inode now:
// one readlink, the same test as the scan's. The path and the link's
// expected text are built in buffers on the stack and the system call
// made on them: no allocation (the listener makes a few of these per
// connection).
func InSlot(procRoot string, sl Slot, inode uint64) bool {
	if procRoot == "" {
		procRoot = "/proc"
	}
	if sl.PID <= 0 || sl.FD < 0 {
		return false
	}
	var path [128]byte
	p := append(path[:0], procRoot...)
	p = append(p, '/')
	p = strconv.AppendInt(p, int64(sl.PID), 10)
	p = append(p, "/fd/"...)
	p = strconv.AppendInt(p, int64(sl.FD), 10)
	p = append(p, 0) // (past 128 bytes, a long procRoot in tests, on the heap)
	var buf [64]byte
	cwd := unix.AT_FDCWD
	for {
		r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(cwd), uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
		if e == unix.EINTR {
			continue
		}
		return e == 0 && isSocket(buf[:r], inode)
	}
}

// isSocket reports whether link, the target of a /proc/PID/fd link, is
// "socket:[inode]".
func isSocket(link []byte, inode uint64) bool {
	var want [32]byte
	return string(link) == string(appendSocketLink(want[:0], inode))
}

// appendSocketLink appends "socket:[inode]", the target of a /proc/PID/fd
// link to the socket, to b.
func appendSocketLink(b []byte, inode uint64) []byte {
	b = append(b, "socket:["...)
	b = strconv.AppendUint(b, inode, 10)
	return append(b, ']')
}

// FindHolder scans /proc (procRoot, "/proc" when empty) for a process
// whose file table holds the socket inode, within limit (no limit when
// zero). It tries, in order: the processes in hint (those that held the
// user's last sockets: a client that connects again is found at once),
// the processes whose /proc directory belongs to uid (the socket's owner
// is normally the holder), newest first (a client is usually young),
// then all others, newest first. Reading another user's /proc/PID/fd
// needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (see caps.go); without them
// only processes of relayd's own user are readable, and Denied counts the
// others.
func FindHolder(procRoot string, inode uint64, uid uint32, limit time.Duration, hint ...int) Holder {
	if procRoot == "" {
		procRoot = "/proc"
	}
	var h Holder
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	target := string(appendSocketLink(nil, inode))
	tried := map[int]bool{}
	for _, pid := range hint {
		if pid > 0 && !tried[pid] {
			tried[pid] = true
			switch r, fd := holds(procRoot, pid, target, deadline); r {
			case 1:
				h.PID, h.FD = pid, fd
				return h
			case cutShort:
				h.Partial = true
			}
		}
	}
	d, err := os.Open(procRoot)
	if err != nil {
		return h
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	var others, first []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 || tried[pid] {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(procRoot+"/"+n, &st) == nil && st.Uid == uid {
			first = append(first, pid)
		} else {
			others = append(others, pid)
		}
	}
	slices.SortFunc(first, func(a, b int) int { return b - a })
	slices.SortFunc(others, func(a, b int) int { return b - a })
	for _, pid := range append(first, others...) {
		if !deadline.IsZero() && time.Now().After(deadline) {
			h.Partial = true
			return h
		}
		switch r, fd := holds(procRoot, pid, target, deadline); r {
		case 1:
			h.PID, h.FD = pid, fd
			return h
		case -1:
			h.Denied++
		case cutShort:
			h.Partial = true
			return h
		}
	}
	return h
}

// cutShort is holds' answer when deadline passed before it read all of
// the process's descriptors.
const cutShort = -2

// holds reports whether process pid has target open: 1 yes (and the
// descriptor), 0 no, -1 its descriptors are not readable, cutShort the
// deadline (none when zero) passed before the end of its descriptors.
// The first batch of descriptors is always read, the others only before
// the deadline: a process the client fills with descriptors costs relayd
// at most one batch past its time limit, hints included.
func holds(procRoot string, pid int, target string, deadline time.Time) (int, int) {
	dir := procRoot + "/" + strconv.Itoa(pid) + "/fd"
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return -1, 0
		}
		return 0, 0
	}
	defer f.Close()
	buf := make([]byte, 64)
	for batch := 0; ; batch++ {
		if batch > 0 && !deadline.IsZero() && time.Now().After(deadline) {
			return cutShort, 0
		}
		names, err := f.Readdirnames(256)
		for _, n := range names {
			l, rerr := unix.Readlink(dir+"/"+n, buf)
			if rerr != nil {
				if errors.Is(rerr, unix.EACCES) {
					return -1, 0
				}
				continue
			}
			// (Compared in place: no string made for each descriptor.)
			if string(buf[:l]) == target {
				fd, _ := strconv.Atoi(n)
				return 1, fd
			}
		}
		if err != nil {
			return 0, 0
		}
	}
}

// Holds reports whether process pid has the socket inode open now. A
// caller that read /proc/PID after FindHolder found pid, and holds no
// pidfd of that process from before the search, asks again afterwards:
// if the process exited meanwhile and its PID went to another
// process, what was read is that other process's. The walk over pid's
// descriptors stops at limit (none when zero; the first batch of 256 is
// always read), and a walk cut short reports false: a client that moves
// its socket to a high descriptor between the search and this check does
// not make relayd walk a descriptor table of any size.
func Holds(procRoot string, pid int, inode uint64, limit time.Duration) bool {
	if procRoot == "" {
		procRoot = "/proc"
	}
	if pid <= 0 {
		return false
	}
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	r, _ := holds(procRoot, pid, string(appendSocketLink(nil, inode)), deadline)
	return r == 1
}

// Netlink constants of linux/unix_diag.h.
const (
	unixDiagShowPeer = 0x4 // UDIAG_SHOW_PEER
	unixDiagPeer     = 2   // UNIX_DIAG_PEER
	unixReqLen       = 24  // sizeof(struct unix_diag_req)
	unixMsgLen       = 16  // sizeof(struct unix_diag_msg)
)

// UnixPeer returns the inode of the socket at the other end of c, a
// connected Unix stream socket of this process (the unix_diag lookup of
// "ss -x"): the client's socket, for FindHolder. SO_PEERCRED's PID is the
// process that connected, which may since have handed the socket on and
// exited, and its PID may belong to another process by now; the inode
// names the connection itself.
func UnixPeer(c interface {
	SyscallConn() (syscall.RawConn, error)
}) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("sockdiag: %w", err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		return 0, fmt.Errorf("sockdiag: %w", err)
	}
	if serr != nil {
		return 0, fmt.Errorf("sockdiag: fstat: %w", serr)
	}
	req := make([]byte, unixReqLen)
	req[0] = unix.AF_UNIX
	binary.LittleEndian.PutUint32(req[4:], 0xffffffff) // every state
	binary.LittleEndian.PutUint32(req[8:], uint32(st.Ino))
	binary.LittleEndian.PutUint32(req[12:], unixDiagShowPeer)
	binary.LittleEndian.PutUint32(req[16:], noCookie)
	binary.LittleEndian.PutUint32(req[20:], noCookie)
	msgs, err := diag.execute(req)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("sockdiag: unix_diag lookup: %w", err)
	}
	for _, m := range msgs {
		d := m.Data
		if len(d) < unixMsgLen || d[0] != unix.AF_UNIX || uint64(binary.LittleEndian.Uint32(d[4:])) != st.Ino {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(d[unixMsgLen:])
		if err != nil {
			return 0, fmt.Errorf("sockdiag: unix_diag answer: %w", err)
		}
		for ad.Next() {
			if ad.Type() == unixDiagPeer {
				if peer := ad.Uint32(); peer != 0 {
					return uint64(peer), nil
				}
			}
		}
		return 0, ErrOrphan
	}
	return 0, ErrNotFound
}
