package origin

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// startShell starts "sh -c script" in dir and waits until the child runs
// the shell (its command line is the shell's).
func startShell(t *testing.T, dir, script string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script, "procs-test")
	cmd.Dir = dir
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); cmd.Process.Kill(); cmd.Wait() })
	waitfor.True(t, "the shell", 30*time.Second, func() bool {
		p := readProcess(cmd.Process.Pid)
		return len(p.Cmdline) > 0 && p.Cmdline[0] == "/bin/sh"
	})
	return cmd, w
}

// applyProcess is what relayd reads of process pid through ps
// (ApplyHolder), with no mark: the package's ApplyProcess through the
// files ps keeps.
func applyProcess(ps *Procs, o *spool.Origin, pid int) (gid int) {
	gid, _ = ps.ApplyHolder(o, pid, 0)
	return gid
}

func kept(ps *Procs) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.m)
}

// Procs records what ApplyProcess records, through the files it keeps
// open from the first reading on.
func TestProcsSameAsApplyProcess(t *testing.T) {
	cmd, _ := startShell(t, "/tmp", "read x")
	pid := cmd.Process.Pid
	ps := NewProcs(4)
	defer ps.Close()
	var want spool.Origin
	wantGID := ApplyProcess(&want, pid)
	if want.ParentExe == "" || want.ParentCwd != "/tmp" || want.ParentCmdline == "" {
		t.Fatalf("ApplyProcess read %+v", want)
	}
	for i := range 2 {
		var o spool.Origin
		if gid := applyProcess(ps, &o, pid); gid != wantGID || !reflect.DeepEqual(o, want) {
			t.Errorf("reading %d: gid %d, %+v; want %d, %+v", i+1, gid, o, wantGID, want)
		}
		if kept(ps) != 1 {
			t.Errorf("reading %d: %d processes' files kept, want 1", i+1, kept(ps))
		}
	}
	var o spool.Origin
	if gid, ok := ps.ApplyProcessOf(&o, pid, os.Getuid()); !ok || gid != wantGID || !reflect.DeepEqual(o, want) {
		t.Errorf("ApplyProcessOf(its uid) = %d, %v, %+v", gid, ok, o)
	}
	o = spool.Origin{}
	if _, ok := ps.ApplyProcessOf(&o, pid, os.Getuid()+1); ok || !reflect.DeepEqual(o, spool.Origin{}) {
		t.Errorf("ApplyProcessOf(another uid) = %v, %+v; want not recorded", ok, o)
	}
}

// Every reading is of the process as it is then: after it changed its
// directory and executed another program, the files kept open show the
// new program, its command line and its directory.
func TestProcsReadsAfresh(t *testing.T) {
	cmd, w := startShell(t, "/", "read x; cd /tmp; exec sleep 60")
	pid := cmd.Process.Pid
	ps := NewProcs(4)
	defer ps.Close()
	var before spool.Origin
	applyProcess(ps, &before, pid)
	if before.ParentCwd != "/" || !strings.HasPrefix(before.ParentCmdline, "/bin/sh -c") {
		t.Fatalf("first reading: %+v", before)
	}
	io.WriteString(w, "go\n")
	waitfor.True(t, "the exec", 30*time.Second, func() bool {
		p := readProcess(pid)
		return len(p.Cmdline) > 0 && p.Cmdline[0] == "sleep"
	})
	var after spool.Origin
	applyProcess(ps, &after, pid)
	var want spool.Origin
	ApplyProcess(&want, pid)
	if !reflect.DeepEqual(after, want) || after.ParentCwd != "/tmp" || after.ParentCmdline != "sleep 60" || !strings.HasSuffix(after.ParentExe, "/sleep") {
		t.Errorf("after the exec: %+v; want %+v", after, want)
	}
	if kept(ps) != 1 {
		t.Errorf("%d processes' files kept, want 1 (the same process)", kept(ps))
	}
}

// The files of a process that has exited read nothing, whatever process
// its PID goes to: the process is not recorded from them, and they are
// closed.
func TestProcsExited(t *testing.T) {
	cmd, _ := startShell(t, "/", "read x")
	pid := cmd.Process.Pid
	ps := NewProcs(4)
	defer ps.Close()
	var o spool.Origin
	if applyProcess(ps, &o, pid) < 0 {
		t.Fatal("not read")
	}
	ps.mu.Lock()
	e := ps.m[pid]
	ps.mu.Unlock()
	cmd.Process.Kill()
	cmd.Wait()
	// The kept files themselves: gone with the process.
	if _, _, err := e.readUnits(nil); err == nil {
		t.Fatal("the files of a reaped process still read")
	}
	o = spool.Origin{}
	if gid := applyProcess(ps, &o, pid); gid != -1 || !reflect.DeepEqual(o, spool.Origin{}) {
		t.Errorf("a reaped process: gid %d, %+v; want -1, nothing", gid, o)
	}
	if kept(ps) != 0 || !e.closed {
		t.Errorf("its files are still kept (%d, closed %v)", kept(ps), e.closed)
	}
}

// At most max processes' files are kept, the least recently read closed
// first; Close closes them all.
func TestProcsBound(t *testing.T) {
	fds := func() int {
		l, _ := os.ReadDir("/proc/self/fd")
		return len(l)
	}
	before := fds()
	ps := NewProcs(2)
	var pids []int
	for range 3 {
		cmd, _ := startShell(t, "/", "read x")
		pids = append(pids, cmd.Process.Pid)
	}
	base := fds()
	var o spool.Origin
	applyProcess(ps, &o, pids[0])
	applyProcess(ps, &o, pids[1])
	applyProcess(ps, &o, pids[0])
	applyProcess(ps, &o, pids[2]) // closes pids[1]'s
	ps.mu.Lock()
	_, k0 := ps.m[pids[0]]
	_, k1 := ps.m[pids[1]]
	_, k2 := ps.m[pids[2]]
	ps.mu.Unlock()
	if !k0 || k1 || !k2 {
		t.Errorf("kept %v %v %v, want the first and the last", k0, k1, k2)
	}
	per := 4
	if pidfdInfoWorks() {
		per = 5
	}
	if n := fds() - base; n != 2*per {
		t.Errorf("%d descriptors open for 2 processes, want %d", n, 2*per)
	}
	ps.Close()
	if n := fds(); n != base || base < before {
		t.Errorf("%d descriptors open after Close, want %d", n, base)
	}
}

// Read through a pidfd and comm (a kernel with PIDFD_GET_INFO), a process
// has the name, parent, real UID and real GID that its status gives, a
// name with a backslash, a newline, a tab and a space included (as root,
// another user's process too).
func TestProcsPidfdAsStatus(t *testing.T) {
	if !pidfdInfoWorks() {
		t.Skip("the kernel has no PIDFD_GET_INFO: status is read")
	}
	// (A directory every user may search: the program runs as 65534 too.)
	dir, err := os.MkdirTemp("", "procs-pidfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "a\\b\n\tc d")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prog, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmds := []*exec.Cmd{exec.Command(prog, "60")}
	if os.Getuid() == 0 {
		// Another user's process (IDs 65534).
		c := exec.Command(prog, "60")
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmds = append(cmds, c)
	}
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		pid := cmd.Process.Pid
		waitfor.True(t, "the program", 30*time.Second, func() bool {
			p := readProcess(pid)
			return len(p.Cmdline) > 0 && p.Cmdline[0] == prog
		})
		want := readProcess(pid)
		if !strings.HasPrefix(want.Comm, `a\\b\n`) {
			t.Fatalf("status's name %q", want.Comm)
		}
		ps := NewProcs(4)
		defer ps.Close()
		e := ps.entry(pid)
		if e == nil || e.pidfd < 0 || e.status >= 0 {
			t.Fatalf("kept files %+v: want a pidfd and no status", e)
		}
		p, _, err := e.readUnits(nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Comm != want.Comm || p.PPID != want.PPID || p.UID != want.UID || p.GID != want.GID || p.UID < 0 || p.GID < 0 {
			t.Errorf("through the pidfd: %q ppid %d uid %d gid %d; status: %q ppid %d uid %d gid %d",
				p.Comm, p.PPID, p.UID, p.GID, want.Comm, want.PPID, want.UID, want.GID)
		}
	}
}

// A zombie (exited, not yet reaped) reads through its kept files as its
// status gives it: the pidfd's ioctl answers until the process is reaped,
// with the name, parent and IDs status has; once reaped, nothing reads.
func TestProcsZombie(t *testing.T) {
	cmd := exec.Command("sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	defer func() {
		if !reaped {
			cmd.Wait()
		}
	}()
	pid := cmd.Process.Pid
	waitfor.True(t, "the zombie", 30*time.Second, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err == nil && strings.Contains(string(b), ") Z ")
	})
	want := readProcess(pid)
	if want.Comm == "" || want.UID != os.Getuid() || want.PPID != os.Getpid() {
		t.Fatalf("status of the zombie: %+v", want)
	}
	ps := NewProcs(4)
	defer ps.Close()
	e := ps.entry(pid)
	if e == nil {
		t.Fatal("the zombie's files not opened")
	}
	p, _, err := e.readUnits(nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Comm != want.Comm || p.PPID != want.PPID || p.UID != want.UID || p.GID != want.GID || len(p.Cmdline) != 0 {
		t.Errorf("kept files (pidfd %v): %+v; status: %+v", e.pidfd >= 0, p, want)
	}
	cmd.Wait()
	reaped = true
	if _, _, err := e.readUnits(nil); err == nil {
		t.Error("the files of the reaped zombie still read")
	}
}

// BenchmarkProcs is BenchmarkApplyProcess through the files kept open.
func BenchmarkProcs(b *testing.B) {
	b.ReportAllocs()
	ps := NewProcs(4)
	defer ps.Close()
	pid := os.Getpid()
	for b.Loop() {
		var o spool.Origin
		if applyProcess(ps, &o, pid) < 0 {
			b.Fatal("not read")
		}
	}
}

// ApplyHolder says the process read is certainly the one at the PID
// since the caller's mark only when its pidfd was kept from before the
// mark and still answered: not for files opened after the mark, and not
// for a PID whose process was reaped and went to another process (read
// through its path then).
func TestProcsApplyHolder(t *testing.T) {
	cmd, _ := startShell(t, "/tmp", "read x")
	pid := cmd.Process.Pid
	ps := NewProcs(4)
	defer ps.Close()
	var o spool.Origin
	if _, same := ps.ApplyHolder(&o, pid, ps.Mark()); same {
		t.Error("same process for files opened after the mark")
	}
	if o.ParentCwd != "/tmp" {
		t.Fatalf("read %+v", o)
	}
	o = spool.Origin{}
	_, same := ps.ApplyHolder(&o, pid, ps.Mark())
	if same != pidfdInfoWorks() || o.ParentCwd != "/tmp" {
		t.Errorf("kept pidfd opened before the mark: same %v (PIDFD_GET_INFO %v), read %+v", same, pidfdInfoWorks(), o)
	}

	// The process is reaped and its PID goes to another process (in "/").
	cmd.Process.Kill()
	cmd.Wait()
	reusePID(t, pid, "/", "sleep", "60")
	waitfor.True(t, "the other process", 30*time.Second, func() bool {
		p := readProcess(pid)
		return len(p.Cmdline) > 0 && p.Cmdline[0] == "sleep"
	})
	o = spool.Origin{}
	if _, same := ps.ApplyHolder(&o, pid, ps.Mark()); same {
		t.Errorf("same process for a PID gone to another process (read %+v)", o)
	}
	if o.ParentCwd != "/" {
		t.Errorf("read %+v, want the new process at the PID", o)
	}
}

// reusePID starts name args in dir as process pid (free now), through
// /proc/sys/kernel/ns_last_pid (root), or skips the test.
func reusePID(t *testing.T, pid int, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	for try := 0; try < 50; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("SKIPPED: cannot set the next PID: %v", err)
		}
		c := exec.Command(name, args...)
		c.Dir = dir
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if c.Process.Pid == pid {
			t.Cleanup(func() { c.Process.Kill(); c.Wait() })
			return c
		}
		c.Process.Kill()
		c.Wait()
	}
	t.Skipf("SKIPPED: PID %d could not be given to another process (a busy machine)", pid)
	return nil
}

// unifiedCgroups makes two cgroups of the unified hierarchy (cgroup v2),
// named as systemd units, for a test (root; skipped otherwise), and
// returns their directories.
func unifiedCgroups(t testing.TB) (a, b string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: making cgroups needs root")
	}
	if !pidfdInfoWorks() {
		t.Skip("SKIPPED: no PIDFD_GET_INFO")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skip("SKIPPED: no /proc/self/mountinfo")
	}
	var mnt string
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		for i, x := range f {
			if x == "-" && i+1 < len(f) && f[i+1] == "cgroup2" && f[3] == "/" {
				mnt = f[4]
			}
		}
	}
	if mnt == "" {
		t.Skip("SKIPPED: no cgroup2 mount of its root")
	}
	var dirs []string
	for _, n := range []string{"a", "b"} {
		d := filepath.Join(mnt, "mailshim-test-"+strconv.Itoa(os.Getpid())+"-"+n+".service")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Skipf("SKIPPED: cannot make a cgroup: %v", err)
		}
		t.Cleanup(func() {
			waitfor.True(t, "the test cgroup to empty", 30*time.Second, func() bool {
				err := os.Remove(d)
				return err == nil || os.IsNotExist(err)
			})
		})
		dirs = append(dirs, d)
	}
	return dirs[0], dirs[1]
}

// moveTo puts process pid into the cgroup of directory dir.
func moveTo(t testing.TB, pid int, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Skipf("SKIPPED: cannot move a process into a cgroup: %v", err)
	}
}

// The unit of a unified-hierarchy cgroup is read from /proc/PID/cgroup
// once and kept by cgroup ID: a process that moves to another cgroup gets
// that cgroup's unit, and back the first's, each time what its cgroup
// file says.
func TestProcsUnitByCgroupID(t *testing.T) {
	a, b := unifiedCgroups(t)
	cmd, _ := startShell(t, "/tmp", "read x")
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ps := NewProcs(4)
	defer ps.Close()
	for i, dir := range []string{a, b, a, b} {
		moveTo(t, pid, dir)
		want := Cgroup("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if want != filepath.Base(dir) {
			t.Fatalf("the cgroup file names %q, want %q", want, filepath.Base(dir))
		}
		for range 2 {
			var o spool.Origin
			applyProcess(ps, &o, pid)
			if o.Cgroup != want {
				t.Errorf("move %d: unit %q, want %q", i, o.Cgroup, want)
			}
		}
	}
	if len(ps.units.m) != 2 {
		t.Errorf("units kept: %v, want the two cgroups'", ps.units.m)
	}
}

// BenchmarkProcsUnit is BenchmarkProcs for a process in a cgroup of the
// unified hierarchy named as a systemd unit (a PHP-FPM pool under
// php-fpm.service on a cgroup v2 system).
func BenchmarkProcsUnit(b *testing.B) {
	a, _ := unifiedCgroups(b)
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	moveTo(b, cmd.Process.Pid, a)
	ps := NewProcs(4)
	defer ps.Close()
	b.ReportAllocs()
	for b.Loop() {
		var o spool.Origin
		if applyProcess(ps, &o, cmd.Process.Pid) < 0 || o.Cgroup != filepath.Base(a) {
			b.Fatalf("read %+v", o)
		}
	}
}

// A process in a PID namespace of its own that reads the /proc of
// another (the host's: unshare --pid without a /proc of its own) does not
// use pidfds for /proc/PID, even when its PID in both namespaces is the
// same number (here arranged): pidfd_open(PID) would name the process
// of its own namespace, and /proc/PID the other namespace's.
func TestPidfdInfoProcOfAnotherPIDNamespace(t *testing.T) {
	if os.Getenv("ORIGIN_PIDNS_HELPER") == "1" {
		self, _ := os.Readlink("/proc/self")
		fmt.Printf("pid %d proc %s works %v\n", os.Getpid(), self, pidfdInfoWorks())
		return
	}
	if os.Getuid() != 0 {
		t.Skip("SKIPPED: choosing PIDs needs root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("SKIPPED: no unshare")
	}
	if !pidfdInfoWorks() {
		t.Skip("SKIPPED: no PIDFD_GET_INFO")
	}
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Skip("SKIPPED: no pid_max")
	}
	pidMax, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for try := 0; try < 20; try++ {
		b, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
		if err != nil {
			t.Skip("SKIPPED: no ns_last_pid")
		}
		last, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		x := last + 500 + 37*try
		if x >= pidMax {
			x = 1000 + 37*try
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(x)); err == nil {
			continue
		}
		// The namespace's first process (1) sets its next PID to x, waits
		// for the word, and starts the helper: PID x there, and x in the
		// host's namespace when nothing else took it meanwhile.
		cmd := exec.Command("unshare", "--pid", "--fork", "/bin/sh", "-c",
			`echo "$1" > /proc/sys/kernel/ns_last_pid && read go && { "$2" -test.run='^TestPidfdInfoProcOfAnotherPIDNamespace$' & wait; }`,
			"sh", strconv.Itoa(x-1), os.Args[0])
		cmd.Env = append(os.Environ(), "ORIGIN_PIDNS_HELPER=1")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd.Stdout = &out
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Skipf("SKIPPED: unshare: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the shell has set its next PID
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(x-1)), 0); err != nil {
			t.Skipf("SKIPPED: cannot set the next PID: %v", err)
		}
		io.WriteString(in, "go\n")
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Skipf("SKIPPED: unshare --pid: %v (%s)", err, out.String())
		}
		var pid, works string
		var proc string
		for _, l := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(l); len(f) == 6 && f[0] == "pid" {
				pid, proc, works = f[1], f[3], f[5]
			}
		}
		if pid != strconv.Itoa(x) || proc != pid {
			continue // another process took x in one of the namespaces
		}
		if works != "false" {
			t.Fatalf("PID %d in its namespace and in /proc's: pidfds used for the other namespace's /proc (%q)", x, out.String())
		}
		return
	}
	t.Skip("SKIPPED: the same PID in both namespaces could not be arranged (a busy machine)")
}
