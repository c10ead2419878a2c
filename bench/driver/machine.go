package driver

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine describes where the numbers were measured.
type Machine struct {
	NProc   int
	CPU     string
	Kernel  string
	MemMB   int64
	SpoolFS string // file system type and device of the spool directory
	Go      string
	Root    bool
}

var fsNames = map[int64]string{
	0xEF53: "ext4", 0x01021994: "tmpfs", 0x58465342: "xfs", 0x9123683E: "btrfs",
	0x794c7630: "overlayfs", 0x2FC12FC1: "zfs", 0x6969: "nfs", 0xF2F52010: "f2fs",
}

// Describe inspects the machine; dir is the directory the spools live in.
func Describe(dir string) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), Root: os.Geteuid() == 0}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemMB = int64(si.Totalram) * int64(si.Unit) >> 20
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		name, ok := fsNames[int64(st.Type)]
		if !ok {
			name = fmt.Sprintf("fs-type-%#x", st.Type)
		}
		m.SpoolFS = name + " (" + mountSource(dir) + ")"
	}
	return m
}

// mountSource returns the device of the longest mount point containing dir.
func mountSource(dir string) string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "?"
	}
	defer f.Close()
	best, src := "", "?"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		mp := fs[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, src = mp, fs[0]+" on "+mp
		}
	}
	return src
}

func (m Machine) String() string {
	return fmt.Sprintf("%d CPUs (%s), %d MB RAM, %s, spool on %s, %s, running as %s",
		m.NProc, m.CPU, m.MemMB, m.Kernel, m.SpoolFS, m.Go, map[bool]string{true: "root", false: "non-root"}[m.Root])
}
