package driver

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Sample is one timed run of a program.
type Sample struct {
	Wall     time.Duration
	User     time.Duration
	Sys      time.Duration
	MaxRSSKB int64
}

// Proc is how to start one measured program.
type Proc struct {
	Path  string
	Args  []string
	Env   []string
	Cred  *syscall.Credential // nil: run as ourselves
	Stdin string              // file fed on stdin
	// StdinData, when Stdin is "", is fed on stdin through a pipe.
	StdinData []byte
	// Stdout, when set, receives the program's standard output.
	Stdout io.Writer
	// SampleRSS polls /proc/PID/status while the program runs and reports
	// the last VmHWM seen after its exec. (wait4's ru_maxrss cannot be
	// used: Linux carries the forking process's own high-water mark into
	// the child's, so every child of the driver would report at least the
	// driver's RSS.)
	SampleRSS bool
	// Stderr, when set, receives the program's standard error (also
	// kept for the error text).
	Stderr io.Writer
}

// Run starts p, waits for it, and returns its wall time (fork to reaped)
// and resource usage. A non-zero exit is an error carrying stderr.
func (p Proc) Run() (Sample, error) {
	cmd := exec.Command(p.Path, p.Args...)
	if p.Stdin != "" {
		in, err := os.Open(p.Stdin)
		if err != nil {
			return Sample{}, err
		}
		defer in.Close()
		cmd.Stdin = in
	} else {
		cmd.Stdin = bytes.NewReader(p.StdinData)
	}
	cmd.Env = p.Env
	if cmd.Env == nil {
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cmd.Stdout = p.Stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if p.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, p.Stderr)
	}
	cmd.Dir = "/"
	if p.Cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.Cred}
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return Sample{}, fmt.Errorf("%s: %w", p.Path, err)
	}
	var hwm atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	if p.SampleRSS {
		go func() {
			defer close(sampled)
			sampleHWM(cmd.Process.Pid, filepath.Base(p.Path), &hwm, stop)
		}()
	} else {
		close(sampled)
	}
	err := cmd.Wait()
	wall := time.Since(t0)
	close(stop)
	<-sampled
	if err != nil {
		return Sample{}, fmt.Errorf("%s: %w: %s", p.Path, err, firstLine(stderr.String()))
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	s := Sample{Wall: wall}
	if ru != nil {
		s.User = time.Duration(ru.Utime.Nano())
		s.Sys = time.Duration(ru.Stime.Nano())
		s.MaxRSSKB = ru.Maxrss
	}
	if p.SampleRSS {
		s.MaxRSSKB = hwm.Load()
	}
	return s, nil
}

// sampleHWM reads VmHWM of pid until stop is closed, once the process
// runs the program named comm (before its exec, /proc shows the driver's
// memory, shared through vfork).
func sampleHWM(pid int, comm string, hwm *atomic.Int64, stop <-chan struct{}) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	if len(comm) > 15 {
		comm = comm[:15]
	}
	buf := make([]byte, 4096)
	for {
		select {
		case <-stop:
			return
		default:
		}
		f, err := os.Open(path)
		if err != nil {
			return
		}
		n, _ := f.Read(buf)
		f.Close()
		st := string(buf[:n])
		if strings.HasPrefix(st, "Name:\t"+comm+"\n") {
			if i := strings.Index(st, "VmHWM:"); i >= 0 {
				f := strings.Fields(st[i+len("VmHWM:"):])
				if len(f) > 0 {
					if v, err := strconv.ParseInt(f[0], 10, 64); err == nil && v > hwm.Load() {
						hwm.Store(v)
					}
				}
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
}
