package driver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/spool"
)

// upstreamTOML renders an [[upstream]] table for up, writing its password
// into a 0600 file under dir.
func upstreamTOML(dir string, up config.Upstream) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n[[upstream]]\nhost = %q\nport = %d\ntls = %q\n", up.Host, up.Port, up.TLS)
	if up.CAFile != "" {
		fmt.Fprintf(&b, "ca_file = %q\n", up.CAFile)
	}
	if up.Username != "" {
		pw := filepath.Join(dir, "upstream.secret")
		if err := os.WriteFile(pw, []byte(up.Password+"\n"), 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "username = %q\npassword_file = %q\n", up.Username, pw)
	}
	return b.String(), nil
}

// FillMaildrop writes n message files of about size bytes straight into
// dir in the spool format (as sendmail would, but without an fsync per
// file: one syncfs at the end), numbered from seq0 in SeqHeader.
func FillMaildrop(dir string, n int, size int64, seq0 int) error {
	now := time.Now()
	for i := 0; i < n; i++ {
		body := message(size, seq0+i)
		crc := spool.NewCRC()
		crc.Write(body)
		m := &spool.Meta{
			ID:   spool.NewID(now.Add(time.Duration(i) * time.Microsecond)),
			Time: now,
			Env:  spool.Envelope{Sender: "sender@bench.example", Recipients: []string{"rcpt@bench.example"}},
			Origin: spool.Origin{UID: os.Getuid(), GID: os.Getgid(), User: "bench", Via: "maildrop", Mode: "t",
				Script: "/bench/fill", ScriptSource: "parent-cmdline"},
			Size: int64(len(body)),
			CRC:  crc.Sum32(),
		}
		hdr, _ := spool.EncodeHeader(m)
		p := filepath.Join(dir, m.ID)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, spool.ModeDropFile.Perm())
		if err != nil {
			return err
		}
		_, err = f.Write(append(hdr, body...))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// Relayd is a running relayd subprocess.
type Relayd struct {
	Cmd     *exec.Cmd
	LogPath string
	Started time.Time
	done    chan struct{}
	err     error
	ru      *syscall.Rusage
}

// StartRelayd starts relayd on site's config. As root it runs with real
// gid DropGID so that the site's maildrop group is relayd's own group (no
// system group needs to exist).
func StartRelayd(bin string, site *Site) (*Relayd, error) {
	logPath := filepath.Join(site.Dir, fmt.Sprintf("relayd-%d.log", time.Now().UnixNano()))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", site.Config)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "MAILSHIM_CONFIG=" + site.Config}
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = "/"
	// Pdeathsig: a driver or test that dies (a test timeout's panic) takes
	// its relayd with it instead of leaving it draining a temp spool.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: DropGID, Groups: []uint32{DropGID}}
	}
	r := &Relayd{Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	r.Started = time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	go func() {
		r.err = cmd.Wait()
		lf.Close()
		r.ru, _ = cmd.ProcessState.SysUsage().(*syscall.Rusage)
		close(r.done)
	}()
	return r, nil
}

// Exited reports whether relayd has exited.
func (r *Relayd) Exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits (up to limit) for relayd to exit, then
// returns its resource usage.
func (r *Relayd) Stop(limit time.Duration) (*syscall.Rusage, error) {
	r.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(limit):
		r.Cmd.Process.Kill()
		<-r.done
		return r.ru, fmt.Errorf("relayd did not exit within %v of SIGTERM", limit)
	}
	return r.ru, nil
}

// Tail returns the last lines of relayd's log.
func (r *Relayd) Tail(n int) string {
	b, _ := os.ReadFile(r.LogPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor polls cond every few milliseconds until it holds, relayd exits,
// or limit passes.
func (r *Relayd) WaitFor(what string, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if r.Exited() {
			return fmt.Errorf("relayd exited (%v) while waiting for %s; log:\n%s", r.err, what, r.Tail(15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s; relayd log:\n%s", limit, what, r.Tail(15))
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// RSS returns relayd's current and peak resident set size in KB.
func (r *Relayd) RSS() (cur, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.Cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			cur = n
		case "VmHWM":
			peak = n
		}
	}
	if cur == 0 {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return cur, peak, nil
}

// queued counts the messages anywhere in the spool: files in maildrop/
// and messages in relayd's queue (spool.Snapshot, whatever its layout). A
// queue that cannot be read counts as one message: never as empty.
func queued(site *Site) int {
	q, err := spool.Snapshot(site.Spool)
	n := len(q)
	if err != nil {
		n = 1
	}
	return countFiles(site.Maildrop) + n
}

func cpu(ru *syscall.Rusage) time.Duration {
	if ru == nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
