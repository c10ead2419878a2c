package origin

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/spool"
)

// Procs is ApplyProcess for a reader of many clients' processes (relayd's
// SMTP listener), with the /proc files of the processes it read last kept
// open: a process that connects again and again (a PHP-FPM worker, an
// application server) is read with three pread(2) and two readlinkat(2)
// instead of three open, read and close and two readlink, about 10 µs of
// CPU less per connection (the kernel builds status and cgroup anew for
// every read, but their open and close, and cmdline's, are the larger
// part).
//
// Where the kernel has PIDFD_GET_INFO (Linux 6.13), what status was read
// for (the name, the parent, the real UID and GID) comes from a pidfd of
// the process (its real IDs, as status gives them: in relayd's user
// namespace) and from /proc/PID/comm instead: the kernel renders the whole
// status file for every read (signal masks, capabilities, memory, CPU
// lists); BenchmarkProcs, a reading of a process, took 21-25 µs of CPU
// with status and ~15 µs with the pidfd and comm.
//
// Nothing read of a process is kept: every call reads the process's
// files again, at offset 0, and the kernel generates their content then,
// from the process as it is at that moment (its status, command line,
// cgroup, executable and directory). The one thing kept is, per cgroup
// of the unified hierarchy, the systemd unit its path names: a process
// whose cgroup ID (asked at every reading, with its IDs) is one whose
// unit was read before is not read for it again (unitCache: BenchmarkProcsUnit,
// a process in a cgroup named as a unit, 14.7 -> 9.8 µs of CPU). What
// is kept of the process is the open files, and a file
// of /proc/PID names the process it was opened for, not its PID: once
// that process has exited and been reaped, its files fail to read
// (ESRCH), never another process's, even when its PID has gone to
// another process. Such an entry is dropped and the process is read
// through its path, as ApplyProcess does (it may be the new process at
// that PID: ApplyHolder tells its caller when what it read is certainly
// of the process found at the PID, and otherwise the caller's check that
// the process still holds the client's socket after the reading decides).
//
// At most max processes are kept (the least recently read is closed for
// a new one); a Procs is safe for concurrent use (reads of one process's
// files may run at once: each is one pread(2) from offset 0 of a file of
// up to a few KB, which the kernel serves from one generation of it).
type Procs struct {
	mu   sync.Mutex
	m    map[int]*procEntry
	max  int
	tick uint64
	// byPath: the real and effective gids of this process differ (a
	// setgid program): its reading of links needs the fs gid switch
	// (readLinks), which ApplyProcess makes.
	byPath bool
	root   string // "/proc"; another directory in tests
	// clock orders the opening of pidfds and the callers' marks (Mark,
	// ApplyHolder): each takes the next value.
	clock atomic.Uint64
	units unitCache // the units of the cgroups the processes read were in
}

type procEntry struct {
	pid  int
	used uint64 // Procs.tick at its last use, under Procs.mu
	// opened is Procs.clock taken once pidfd was open (before the entry
	// is shared).
	opened uint64
	// rw: readers hold it shared while they use the descriptors; closing
	// them takes it exclusively.
	rw     sync.RWMutex
	closed bool
	dir    int // /proc/PID (O_PATH): exe and cwd are read relative to it
	// Either status, or (a kernel with PIDFD_GET_INFO) pidfd and comm.
	status int
	pidfd  int // the process's pidfd: its IDs and parent (PIDFD_GET_INFO)
	comm   int // /proc/PID/comm: its name
	cmd    int
	cgroup int
}

// NewProcs returns a Procs that keeps the files of up to max processes
// open (5 descriptors each, 4 on a kernel without PIDFD_GET_INFO). It
// is for a process whose real and effective gids are equal and stay so
// (relayd); otherwise it reads every process through its path
// (ApplyProcess).
func NewProcs(max int) *Procs {
	return &Procs{m: map[int]*procEntry{}, max: max, byPath: unix.Getgid() != unix.Getegid(), root: "/proc"}
}

// Mark returns the present moment for ApplyHolder: a caller takes it
// before it looks for a process in /proc (the readlink of /proc/PID/fd/N
// that finds the client's socket there).
func (ps *Procs) Mark() uint64 { return ps.clock.Add(1) }

// ApplyHolder is the package's ApplyProcess for pid, reading through the
// files kept open when it can, for a process the caller found holding a
// socket after it took mark (Mark; 0: none). same reports whether what
// was read is certainly of that process: its pidfd, kept since before
// mark, still answered when the reading began (PIDFD_GET_INFO). A process is not
// released from its PID until it is reaped, and a reaped process's pidfd
// no longer answers: the process of the pidfd held pid from before mark
// until the reading, so it is the one whose descriptors the caller read
// after mark, and every file read names it (they were opened while it
// held pid, and read nothing once it is reaped). Otherwise (no such pidfd
// or kernel, kept files opened after mark, or read through the path),
// same is false: pid may have gone to another process after the caller
// found it, and only finding the socket in pid's descriptors again after
// the reading tells that the process read held it.
func (ps *Procs) ApplyHolder(o *spool.Origin, pid int, mark uint64) (gid int, same bool) {
	p, unit, opened, ok := ps.read(pid)
	if !ok {
		return ApplyProcess(o, pid), false
	}
	if p.Comm == "" && len(p.Cmdline) == 0 {
		return -1, false
	}
	p.record(o)
	o.Cgroup = unit
	return p.GID, opened != 0 && opened < mark
}

// ApplyProcessOf is the package's ApplyProcessOf, reading through the
// files kept open when it can.
func (ps *Procs) ApplyProcessOf(o *spool.Origin, pid, uid int) (gid int, ok bool) {
	p, unit, _, read := ps.read(pid)
	if !read {
		return ApplyProcessOf(o, pid, uid)
	}
	if p.Comm == "" && len(p.Cmdline) == 0 || p.UID != uid {
		return -1, false
	}
	p.record(o)
	o.Cgroup = unit
	return p.GID, true
}

// Close closes every file kept open.
func (ps *Procs) Close() {
	ps.mu.Lock()
	m := ps.m
	ps.m = map[int]*procEntry{}
	ps.mu.Unlock()
	for _, e := range m {
		e.close()
	}
}

// errGone is a process whose kept files no longer read: it has exited.
var errGone = errors.New("origin: the process's files no longer read")

// read reads process pid through its kept files (opening them first when
// none are kept): its status and command line, its exe and cwd links
// when it has either, and its systemd unit. opened is the Procs clock
// when the pidfd read was opened (0: none). ok is false when its files
// could not be opened or no longer read (dropped then): the caller reads
// it through its path.
func (ps *Procs) read(pid int) (p Process, unit string, opened uint64, ok bool) {
	if ps.byPath || pid <= 0 {
		return p, "", 0, false
	}
	e := ps.entry(pid)
	if e == nil {
		return p, "", 0, false
	}
	p, unit, err := e.readUnits(&ps.units)
	if err != nil {
		ps.drop(e)
		return Process{}, "", 0, false
	}
	if e.pidfd >= 0 {
		opened = e.opened
	}
	return p, unit, opened, true
}

// readUnits reads the process through its kept files: its IDs (from the
// pidfd, else its status) and name, its command line, its exe and cwd
// links when it has either, and its systemd unit, taken from units (nil:
// none) when its cgroup's is there. err is errGone once the files no
// longer read.
func (e *procEntry) readUnits(units *unitCache) (p Process, unit string, err error) {
	e.rw.RLock()
	defer e.rw.RUnlock()
	if e.closed {
		return p, "", errGone
	}
	p = Process{PID: e.pid, UID: -1, GID: -1}
	var cgid uint64
	if e.pidfd >= 0 {
		// The IDs first: once the process is reaped the ioctl fails
		// (ESRCH), as every file of its own /proc/PID does.
		var ok bool
		if cgid, ok = pidfdIDs(e.pidfd, &p); !ok {
			return p, "", errGone
		}
		if err := readWith(preader(e.comm), 0, func(b []byte, _ bool) { p.parseComm(b) }); err != nil {
			return p, "", errGone
		}
	} else if err := readWith(preader(e.status), 0, func(b []byte, _ bool) { p.parseStatus(b) }); err != nil {
		return p, "", errGone
	}
	readWith(preader(e.cmd), maxCmdline, p.parseCmdline)
	if p.Comm != "" || len(p.Cmdline) > 0 {
		p.Exe, p.Cwd = readlinkAt(e.dir, "exe"), readlinkAt(e.dir, "cwd")
	}
	if units == nil || cgid == 0 {
		readWith(preader(e.cgroup), 0, func(b []byte, _ bool) { unit = cgroupUnit(b) })
		return p, unit, nil
	}
	if u, ok := units.get(cgid); ok {
		return p, u, nil
	}
	var unified bool
	readWith(preader(e.cgroup), 0, func(b []byte, _ bool) { unit, unified = cgroupUnits(b) })
	// The unified line's unit, when it has one, is the unit whatever the
	// other lines say: the unit of cgroup cgid if the process was in it
	// when the file was read (asked again after).
	if unified {
		var q Process
		if again, ok := pidfdIDs(e.pidfd, &q); ok && again == cgid {
			units.put(cgid, unit)
		}
	}
	return p, unit, nil
}

// unitCache is the systemd unit of the unified hierarchy's cgroups, by
// cgroup ID (PIDFD_GET_INFO's PIDFD_INFO_CGROUPID: the process's cgroup
// of the unified hierarchy), for those whose path names one: on a
// system with the unified hierarchy (cgroup v2), the unit is read from
// /proc/PID/cgroup once per cgroup instead of once per connection (the
// kernel renders that file under the global cgroup lock, ~3.5 µs). A
// cgroup ID names one cgroup for the life of the system (64-bit IDs are
// not reused), and a cgroup of the unified hierarchy cannot be renamed:
// the unit its path names never changes. Only a unit found on the
// unified line is kept (it is the unit whatever the other lines of the
// file say), so a cgroup without one, or a system of cgroup v1 only,
// reads the file each time, as before. The ID is asked before and after
// the file is read and must be the same: a process moved into another
// cgroup meanwhile does not leave that cgroup's unit under the first's
// ID (a process moved away and back within the reading could: only by
// whoever may write to both cgroups, a user's own delegated subtree,
// whose processes alone are in them).
type unitCache struct {
	mu sync.Mutex
	m  map[uint64]string
}

// maxUnits bounds the cgroups a unitCache keeps (forgotten all at once
// when full).
const maxUnits = 1024

func (c *unitCache) get(id uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u, ok := c.m[id]
	return u, ok
}

func (c *unitCache) put(id uint64, unit string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxUnits {
		c.m = map[uint64]string{}
	}
	c.m[id] = unit
}

// preader reads the open file fd from an offset (pread(2)).
func preader(fd int) func(p []byte, off int) (int, error) {
	return func(p []byte, off int) (int, error) {
		if len(p) == 0 {
			return 0, nil
		}
		for {
			n, err := unix.Pread(fd, p, int64(off))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return 0, err
			}
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
	}
}

// readlinkAt reads the link name relative to the directory dir, bounded
// as the other advisory fields ("" when unreadable).
func readlinkAt(dir int, name string) string {
	var buf [maxField + 1]byte
	n, err := unix.Readlinkat(dir, name, buf[:])
	if err != nil || n < 0 {
		return ""
	}
	return clean(string(buf[:n]))
}

// entry returns pid's kept files, opened now when none are kept (nil when
// they cannot be).
func (ps *Procs) entry(pid int) *procEntry {
	ps.mu.Lock()
	ps.tick++
	if e := ps.m[pid]; e != nil {
		e.used = ps.tick
		ps.mu.Unlock()
		return e
	}
	ps.mu.Unlock()
	e := openEntry(ps.root, pid)
	if e == nil {
		return nil
	}
	e.opened = ps.clock.Add(1)
	var evict *procEntry
	ps.mu.Lock()
	if cur := ps.m[pid]; cur != nil {
		// Another reader opened them meanwhile: one set is kept.
		cur.used = ps.tick
		ps.mu.Unlock()
		e.close()
		return cur
	}
	if len(ps.m) >= ps.max {
		for _, o := range ps.m {
			if evict == nil || o.used < evict.used {
				evict = o
			}
		}
		delete(ps.m, evict.pid)
	}
	e.used = ps.tick
	ps.m[pid] = e
	ps.mu.Unlock()
	if evict != nil {
		evict.close()
	}
	return e
}

// drop forgets e (its process has exited) and closes its files.
func (ps *Procs) drop(e *procEntry) {
	ps.mu.Lock()
	if ps.m[e.pid] == e {
		delete(ps.m, e.pid)
	}
	ps.mu.Unlock()
	e.close()
}

// openEntry opens the files of process pid under root: a pidfd and
// comm where the kernel answers PIDFD_GET_INFO (and root is /proc: a
// pidfd names a process of the kernel's, not of another directory),
// status otherwise. The pidfd is opened before /proc/PID: when the ioctl
// answers for it later (every read asks it first), the process was there
// all along, and /proc/PID, opened meanwhile, is the same process (its
// PID could not go to another one while it lived); once it is reaped the
// ioctl fails (ESRCH).
func openEntry(root string, pid int) *procEntry {
	pidfd := -1
	if root == "/proc" && pidfdInfoWorks() {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return nil
		}
		pidfd = fd
	}
	dir, err := unix.Open(root+"/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return nil
	}
	e := &procEntry{pid: pid, dir: dir, status: -1, pidfd: pidfd, comm: -1, cmd: -1, cgroup: -1}
	files := []struct {
		name string
		fd   *int
	}{{"comm", &e.comm}, {"cmdline", &e.cmd}, {"cgroup", &e.cgroup}}
	if pidfd < 0 {
		files[0].name, files[0].fd = "status", &e.status
	}
	for _, f := range files {
		fd, err := unix.Openat(dir, f.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			e.close()
			return nil
		}
		*f.fd = fd
	}
	return e
}

// pidfdInfoWorks reports whether the kernel answers PIDFD_GET_INFO (asked
// once, for this process) and /proc is of this process's PID namespace
// (procOfOwnPIDNamespace): a pidfd names the process that /proc/PID does.
var pidfdInfoWorks = sync.OnceValue(func() bool {
	if !procOfOwnPIDNamespace() {
		return false
	}
	fd, err := unix.PidfdOpen(unix.Getpid(), 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var p Process
	_, ok := pidfdIDs(fd, &p)
	return ok
})

// procOfOwnPIDNamespace reports whether /proc is of this process's PID
// namespace. /proc/self/status's NSpid line lists the process's PID in
// each namespace from /proc's down to its own: one PID, getpid(2)'s, when
// they are the same namespace. (/proc/self alone, the PID in /proc's
// namespace, can be the same number as getpid(2)'s in another.)
func procOfOwnPIDNamespace() bool {
	own := false
	withFile("/proc/self/status", 0, func(b []byte, _ bool) {
		for len(b) > 0 {
			var l []byte
			l, b, _ = bytes.Cut(b, []byte{'\n'})
			if v, ok := bytes.CutPrefix(l, []byte("NSpid:")); ok {
				f := bytes.Fields(v)
				own = len(f) == 1 && string(f[0]) == strconv.Itoa(unix.Getpid())
				return
			}
		}
	})
	return own
}

// pidfdIDs records the real UID and GID and the parent of the process of
// pidfd in p (PIDFD_GET_INFO, in this process's user namespace, as
// /proc/PID/status gives them). It reports false when the kernel has no
// such ioctl or the process has been reaped.
func pidfdIDs(pidfd int, p *Process) (cgid uint64, ok bool) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS | unix.PIDFD_INFO_CGROUPID}
	if err := unix.IoctlPidfdInfo(pidfd, &info); err != nil || info.Mask&unix.PIDFD_INFO_CREDS == 0 {
		return 0, false
	}
	p.UID, p.GID, p.PPID = int(info.Ruid), int(info.Rgid), int(info.Ppid)
	if info.Mask&unix.PIDFD_INFO_CGROUPID != 0 {
		cgid = info.Cgroupid
	}
	return cgid, true
}

// close closes e's files once no reader uses them.
func (e *procEntry) close() {
	e.rw.Lock()
	defer e.rw.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	for _, fd := range []int{e.dir, e.status, e.pidfd, e.comm, e.cmd, e.cgroup} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
