package main

// Tests of the real relayd binary: a subprocess on a private spool
// (MAILSHIM_CONFIG-style config in a temp dir) relaying to pkg/smtptest's
// in-process STARTTLS+AUTH upstream.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

var relaydBin, sendmailBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relayd-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	relaydBin = filepath.Join(dir, "relayd")
	sendmailBin = filepath.Join(dir, "sendmail")
	for bin, pkg := range map[string]string{relaydBin: ".", sendmailBin: "../sendmail"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitFor is waitfor.True under the name these tests used before it
// was shared; new code calls waitfor.True.
var waitFor = waitfor.True

const testPassword = "s3cret-Pa55word-do-not-log"

// site is a private spool, config and upstream for one test.
type site struct {
	t       *testing.T
	dir     string
	spool   string
	cfgPath string
	up      *smtptest.Server
	logPath string
	opts    siteOpts
}

type siteOpts struct {
	concurrency int
	protocol    bool
	retry       string // TOML array
	extra       string // appended
	hostname    string
	args        []string // extra relayd arguments
	wrap        []string // command relayd is run under (e.g. setpriv ...)
	// spoolSockets leaves control_socket and submit_socket out of the
	// file: relayd puts them inside the spool.
	spoolSockets bool
	// env runs relayd with MAILSHIM_CONFIG in its environment instead of
	// --config.
	env bool
}

func newSite(t *testing.T, up *smtptest.Server, o siteOpts) *site {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	s := &site{t: t, dir: dir, spool: filepath.Join(dir, "spool"), cfgPath: filepath.Join(dir, "mailshim.conf"), up: up, logPath: filepath.Join(dir, "relayd.log"), opts: o}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.writeConfig("")
	return s
}

func (s *site) writeConfig(appendix string) {
	o := s.opts
	if o.concurrency == 0 {
		o.concurrency = 4
	}
	if o.retry == "" {
		o.retry = `["1s"]`
	}
	if o.hostname == "" {
		o.hostname = "web1.example.com"
	}
	u := s.up.Upstream()
	sockets := fmt.Sprintf("control_socket = %q\nsubmit_socket = %q\n", s.controlSock(), s.submitSock())
	if o.spoolSockets {
		sockets = ""
	}
	cfg := fmt.Sprintf(`hostname = %q
spool = %q
%saliases_file = ""

[[upstream]]
host = %q
port = %d
tls = "starttls"
ca_file = %q
username = %q
password_file = %q

[queue]
retry = %s
concurrency = %d
scan_interval = "1s"

[log]
protocol = %v

[aliases]
root = "ops@example.com"
%s
%s`, o.hostname, s.spool, sockets,
		u.Host, u.Port, u.CAFile, u.Username, filepath.Join(s.dir, "secret"), o.retry, o.concurrency, o.protocol, o.extra, appendix)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *site) controlSock() string {
	if s.opts.spoolSockets {
		return filepath.Join(s.spool, "control.sock")
	}
	return filepath.Join(s.dir, "control.sock")
}

func (s *site) submitSock() string {
	if s.opts.spoolSockets {
		return filepath.Join(s.spool, "submit.sock")
	}
	return filepath.Join(s.dir, "submit.sock")
}

func (s *site) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// daemon is a running relayd.
type daemon struct {
	cmd  *exec.Cmd
	done chan error
}

// start runs relayd and waits until its control socket answers.
func (s *site) start() *daemon {
	s.t.Helper()
	lf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer lf.Close()
	argv := append(append([]string(nil), s.opts.wrap...), relaydBin)
	if !s.opts.env {
		argv = append(argv, "--config", s.cfgPath)
	}
	argv = append(argv, s.opts.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if s.opts.env {
		cmd.Env = append(os.Environ(), "MAILSHIM_CONFIG="+s.cfgPath)
	}
	cmd.Stderr = lf
	cmd.Stdout = lf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	s.t.Cleanup(func() { d.cmd.Process.Kill(); <-d.done; d.done <- nil })
	waitfor.True(s.t, "relayd's control socket", 20*time.Second, func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			s.t.Fatalf("relayd exited at start: %v\n%s", err, s.log())
		default:
		}
		return control.Request(s.controlSock(), control.VerbMailq, nil, io.Discard) == nil
	})
	return d
}

// startStraced runs relayd under strace (the options given, then
// s.opts.wrap) and returns it with relayd's own PID: strace does not pass
// SIGTERM on, so relayd is stopped by that PID (stopStraced), and it is
// killed at the end of the test whatever happens. The test is skipped
// where strace is not installed.
func (s *site) startStraced(strace ...string) (*daemon, int) {
	s.t.Helper()
	if _, err := exec.LookPath("strace"); err != nil {
		s.t.Skip("SKIPPED: strace is not installed")
	}
	s.opts.wrap = append(append([]string{"strace"}, strace...), s.opts.wrap...)
	d := s.start()
	pid := strconv.Itoa(d.cmd.Process.Pid)
	relayd := 0
	if b, err := os.ReadFile("/proc/" + pid + "/task/" + pid + "/children"); err == nil {
		relayd, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if relayd == 0 {
		s.t.Fatal("cannot find relayd's PID under strace")
	}
	s.t.Cleanup(func() { syscall.Kill(relayd, syscall.SIGKILL) })
	return d, relayd
}

// startFailing runs relayd under strace with the system call sys on
// path failing as inject says (e.g. "error=EIO:when=1"); strace's output
// goes to strace.out in the site's directory.
func (s *site) startFailing(path, sys, inject string) (*daemon, int) {
	s.t.Helper()
	return s.startStraced("-f", "-qq", "-o", filepath.Join(s.dir, "strace.out"), "-P", path,
		"-e", "trace="+sys, "-e", "inject="+sys+":"+inject)
}

// stopStraced sends SIGTERM to relayd (its PID under strace) and returns
// how strace exited.
func (d *daemon) stopStraced(t *testing.T, relayd int) error {
	t.Helper()
	syscall.Kill(relayd, syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("relayd did not stop within 60 s of SIGTERM")
	}
	return nil
}

func (d *daemon) kill() {
	d.cmd.Process.Signal(syscall.SIGKILL)
	err := <-d.done
	d.done <- err
}

// term sends SIGTERM and returns the exit code.
func (d *daemon) term(t *testing.T) int {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatal("relayd did not stop within 60s of SIGTERM")
	}
	return -1
}

// prepareSpool makes the spool's directories, owned by the test's user.
func (s *site) prepareSpool() {
	s.t.Helper()
	if err := spool.Prepare(s.spool, spool.CurrentOwner()); err != nil {
		s.t.Fatal(err)
	}
}

// drop writes n messages into the maildrop as sendmail would, each with
// Subject "<tag> <i>".
func (s *site) drop(tag string, n int) []string {
	s.t.Helper()
	return s.dropOrigin(spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t"}, tag, n)
}

// dropOrigin writes n maildrop files with origin o, each with Subject
// "<tag> <i>", and returns their IDs.
func (s *site) dropOrigin(o spool.Origin, tag string, n int) []string {
	s.t.Helper()
	return s.dropEnv(o, spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}}, n, func(i int) string {
		return fmt.Sprintf("From: app@example.org\nTo: rcpt@example.net\nSubject: %s %d\n\nbody %d\n", tag, i, i)
	})
}

// dropEnv writes n maildrop files with origin o and envelope env, the
// i-th holding message(i), and returns their IDs.
func (s *site) dropEnv(o spool.Origin, env spool.Envelope, n int, message func(i int) string) []string {
	s.t.Helper()
	s.prepareSpool()
	md, err := spool.OpenDir(s.spool, spool.DirMaildrop)
	if err != nil {
		s.t.Fatal(err)
	}
	defer md.Close()
	var ids []string
	for i := 0; i < n; i++ {
		m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(), Env: env, Origin: o}
		d, err := spool.NewDrop(md, m, 0)
		if err != nil {
			s.t.Fatal(err)
		}
		io.WriteString(d, message(i))
		if err := d.Commit(); err != nil {
			s.t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return ids
}

// dropHugeHeader writes one maildrop file relayd will not relay (a
// header field over message.MaxField), from app@example.org with NOTIFY
// notify, and returns its ID.
func (s *site) dropHugeHeader(notify string) string {
	s.t.Helper()
	return s.dropEnv(spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop"},
		spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}, Notify: notify}, 1, func(int) string {
			return fmt.Sprintf("Subject: huge header\nX-Data: %s\n\nbody\n", strings.Repeat("x", message.MaxField+1))
		})[0]
}

// subjects counts the delivered messages by Subject.
func (s *site) subjects() map[string]int {
	out := map[string]int{}
	for _, m := range s.up.Messages() {
		for _, l := range strings.Split(string(m.Data), "\r\n") {
			if v, ok := strings.CutPrefix(l, "Subject: "); ok {
				out[v]++
				break
			}
			if l == "" {
				break
			}
		}
	}
	return out
}

// waitDrained waits until every subject of want has been delivered at
// least once and nothing is left in the spool (leftovers), and returns
// the deliveries by subject and how many of them repeated one.
func (s *site) waitDrained(what string, timeout time.Duration, want map[string]bool) (got map[string]int, dups int) {
	s.t.Helper()
	waitfor.True(s.t, what, timeout, func() bool {
		got := s.subjects()
		for subj := range want {
			if got[subj] == 0 {
				return false
			}
		}
		return len(s.leftovers()) == 0
	})
	got = s.subjects()
	for _, c := range got {
		dups += c - 1
	}
	return got, dups
}

// leftovers lists what is left in the spool: every file in maildrop/,
// queue/quarantine/ and queue/tmp/, and every queued message as
// "<state> <id>" (from spool.Snapshot, whatever the queue's layout).
func (s *site) leftovers() []string {
	var out []string
	for _, d := range []string{spool.DirMaildrop, spool.DirQuarantine, spool.DirTmp} {
		ents, _ := os.ReadDir(filepath.Join(s.spool, d))
		for _, e := range ents {
			out = append(out, d+"/"+e.Name())
		}
	}
	q, err := spool.Snapshot(s.spool)
	if err != nil {
		return append(out, "unreadable queue: "+err.Error())
	}
	var ids []string
	for id, e := range q {
		ids = append(ids, e.State+" "+id)
	}
	sort.Strings(ids)
	return append(out, ids...)
}

func newUpstream(t *testing.T, o smtptest.Options) *smtptest.Server {
	o.Username = "relay@example.com"
	o.Password = testPassword
	return smtptest.New(t, o)
}

// newDeferringUpstream is an upstream that answers every MAIL with 451
// until accept is called.
func newDeferringUpstream(t *testing.T) (up *smtptest.Server, accept func()) {
	var ok atomic.Bool
	up = newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail && !ok.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	return up, func() { ok.Store(true) }
}

// connectable reports whether a unix socket accepts connections.
func connectable(p string) bool {
	c, err := net.DialTimeout("unix", p, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func runCmd(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// relayd(8): "Every non-zero status comes with one line on standard error
// saying why." A wrong number of arguments got only the usage block: the
// first line of stderr must say what was wrong, the usage may follow.
func TestUsageErrorsSayWhy(t *testing.T) {
	for _, args := range [][]string{
		{"run", "extra"},
		{"queue"},
		{"queue", "flush", "extra"},
		{"queue", "list", "extra"},
		{"queue", "freeze"},
		{"queue", "show"},
		{"queue", "show", "A", "B"},
		{"queue", "hold"},
		{"queue", "release"},
		{"queue", "delete"},
		{"stats", "--bogus"},
		{"verify-origin", "extra"},
		{"bogus"},
		{"queue", "bogus"},
	} {
		_, stderr, code := runCmd(t, nil, relaydBin, append([]string{"--config", "/nonexistent/mailshim.conf"}, args...)...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 64 || !strings.HasPrefix(first, "relayd: ") || !strings.Contains(stderr, "usage: ") {
			t.Errorf("relayd %s: exit %d, first line %q\n%s", strings.Join(args, " "), code, first, stderr)
		}
	}
}
