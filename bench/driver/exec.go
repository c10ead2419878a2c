package driver

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
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
	err := cmd.Run()
	wall := time.Since(t0)
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
	return s, nil
}
