package attack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

var (
	bins      *driver.Binaries
	buildErr  error
	helperBin string // a copy of this test binary every user may run (helper modes)
)

// helperEnv selects a helper mode when this binary is run again as an
// attacker (see helper.go).
const helperEnv = "MAILSHIM_ATTACK_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "attack-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // the setgid sendmail runs as nobody and reads its config here
	root, err := driver.ModuleRoot()
	if err == nil {
		bins, err = driver.BuildWithConfig(root, filepath.Join(dir, "bin"), filepath.Join(dir, "sendmail.conf"))
	}
	buildErr = err
	if err == nil {
		for name, why := range bins.Missing {
			buildErr = fmt.Errorf("%s: %s", name, why)
		}
	}
	if buildErr == nil {
		helperBin = filepath.Join(dir, "bin", "attack-helper")
		buildErr = copyExecutable(helperBin)
	}
	code := m.Run()
	printTotals()
	os.RemoveAll(dir)
	os.Exit(code)
}

func copyExecutable(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// Totals of the cases run (see tried).
var (
	totMu             sync.Mutex
	totTried, totHeld int
	totFailed         []string
)

// tried records one case, at its start: what the attacker tries and what
// must hold. When the case ends (however it ends) one line says what was
// tried, what held and whether it did; a case that failed is counted as
// tried but not held.
func tried(t *testing.T, what, holds string) {
	t.Helper()
	t.Cleanup(func() {
		ok := !t.Failed()
		t.Logf("attack: %s: tried %s; held: %s; ok=%v", t.Name(), what, holds, ok)
		totMu.Lock()
		defer totMu.Unlock()
		totTried++
		if ok {
			totHeld++
		} else {
			totFailed = append(totFailed, t.Name())
		}
	})
}

func printTotals() {
	totMu.Lock()
	defer totMu.Unlock()
	if totTried == 0 {
		return
	}
	fmt.Printf("attack: %d cases tried, %d held", totTried, totHeld)
	if len(totFailed) > 0 {
		sort.Strings(totFailed)
		fmt.Printf("; NOT held: %s", strings.Join(totFailed, ", "))
	}
	fmt.Println()
}

// needRoot skips a case that cannot run its attacker as another user.
func needRoot(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("the binaries under test do not build: %v", buildErr)
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the attacker runs as other UIDs, which needs root (CI runs as root)")
	}
}

// Attacker UIDs. nobody has an account; the others are bare UIDs, as a
// hostile local user on a shared host may own several.
const nobody = 65534

func attacker(i int) int { return 61000 + i }

// openDir makes a test temp dir every user may traverse.
func openDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/" && strings.HasPrefix(p, os.TempDir()); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// env is one private installation: an upstream, a site (spool, config,
// setgid sendmail) and relayd.
type env struct {
	t    *testing.T
	dir  string
	up   *smtptest.Server
	site *driver.Site
	r    *driver.Relayd
}

const upstreamPassword = "Upstream-S3cret-attack-never-leak"

// quickQueue retries fast; cases that need a message to stay deferred set
// their own [queue].
const quickQueue = `
[queue]
retry = ["1s"]
lifetime = "1h"
scan_interval = "1s"
temp_grace = "1s"
connect_timeout = "2s"
command_timeout = "3s"
data_timeout = "5s"
`

// newEnv starts an upstream with opt (STARTTLS and AUTH with
// upstreamPassword unless opt says otherwise) and a site whose relayd
// relays to it; queue is the [queue] section ("" for quickQueue) and
// extra is appended to the config. relayd is started.
func newEnv(t *testing.T, opt smtptest.Options, queue, extra string) *env {
	t.Helper()
	needRoot(t)
	dir := openDir(t)
	if opt.Username == "" && !opt.NoTLS {
		opt.Username, opt.Password = "relay@example.com", upstreamPassword
	}
	up := smtptest.New(t, opt)
	e := &env{t: t, dir: dir, up: up}
	e.setup(e.upstreamTOML(up), queue, extra)
	return e
}

// newEnvRaw is newEnv with a scripted plain-text upstream (see fakeUpstream).
func newEnvRaw(t *testing.T, fu *fakeUpstream, queue, extra string) *env {
	t.Helper()
	needRoot(t)
	e := &env{t: t, dir: openDir(t)}
	fu.start(t)
	e.setup(fmt.Sprintf("\n[[upstream]]\nhost = \"127.0.0.1\"\nport = %d\ntls = \"none\"\n", fu.port), queue, extra)
	return e
}

// setup makes the site and starts relayd.
func (e *env) setup(upstream, queue, extra string) {
	t := e.t
	t.Helper()
	if queue == "" {
		queue = quickQueue
	}
	site, err := driver.NewSite(filepath.Join(e.dir, "site"), bins, upstream+queue+extra)
	if err != nil {
		t.Fatal(err)
	}
	e.site = site
	t.Cleanup(func() {
		if e.r != nil && !e.r.Exited() {
			e.r.Stop(30 * time.Second)
		}
		if t.Failed() && e.r != nil {
			t.Logf("relayd log tail:\n%s", e.r.Tail(40))
		}
	})
	e.start()
}

func (e *env) upstreamTOML(up *smtptest.Server) string {
	u := up.Upstream()
	s := fmt.Sprintf("\n[[upstream]]\nhost = %q\nport = %d\ntls = %q\n", u.Host, u.Port, u.TLS)
	if u.CAFile != "" {
		s += fmt.Sprintf("ca_file = %q\n", u.CAFile)
	}
	if u.Username != "" {
		pw := filepath.Join(e.dir, "upstream.secret")
		if err := os.WriteFile(pw, []byte(u.Password+"\n"), 0o600); err != nil {
			e.t.Fatal(err)
		}
		s += fmt.Sprintf("username = %q\npassword_file = %q\n", u.Username, pw)
	}
	return s
}

// start runs relayd and waits until its control socket answers.
func (e *env) start() {
	e.t.Helper()
	r, err := driver.StartRelayd(bins.Relayd, e.site)
	if err != nil {
		e.t.Fatal(err)
	}
	e.r = r
	if err := r.WaitFor("the control socket", 30*time.Second, func() bool {
		c, err := net.Dial("unix", e.controlSock())
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) controlSock() string { return filepath.Join(e.site.Dir, "control.sock") }
func (e *env) submitSock() string  { return filepath.Join(e.site.Dir, "submit.sock") }

// log returns relayd's log so far.
func (e *env) log() string {
	b, _ := os.ReadFile(e.r.LogPath)
	return string(b)
}

// waitFor polls cond until it holds or limit passes (a safety net, never
// an assertion on speed).
func (e *env) waitFor(what string, limit time.Duration, cond func() bool) {
	e.t.Helper()
	if err := e.r.WaitFor(what, limit, cond); err != nil {
		e.t.Fatal(err)
	}
}

// result is how a program run by the attacker ended.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, short(r.stdout), short(r.stderr))
}

func short(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

// run is one program run by the attacker.
type run struct {
	uid   int    // 0: root
	gid   int    // -1: the same as uid
	stdin string // fed on stdin
	env   []string
	// plain runs sendmail without its setgid bit (it then uses the
	// submission socket); otherwise the site's setgid copy.
	plain bool
	wrap  []string // a command prefix (prlimit ...), run as the user
}

// sendmail runs the site's sendmail with args as r describes.
func (e *env) sendmail(r run, args ...string) result {
	e.t.Helper()
	bin := e.site.Sendmail
	env := append([]string{}, e.site.Env...)
	if r.plain {
		bin = bins.Sendmail
		env = append(env, "MAILSHIM_CONFIG="+e.site.Config)
	}
	return e.exec(r, env, bin, args...)
}

// relayd runs "relayd args..." (a client command) as r describes.
func (e *env) relayd(r run, args ...string) result {
	e.t.Helper()
	env := append([]string{}, e.site.Env...)
	env = append(env, "MAILSHIM_CONFIG="+e.site.Config)
	return e.exec(r, env, bins.Relayd, append(args, "--config", e.site.Config)...)
}

func (e *env) exec(r run, env []string, bin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	argv := append(append([]string{}, r.wrap...), bin)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(env, r.env...)
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(r.stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(r.uid, r.gid)}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		e.t.Fatalf("%s %q did not finish: %v", filepath.Base(bin), args, ctx.Err())
	}
	res := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		e.t.Fatalf("running %q: %v", argv, err)
	}
	return res
}

func cred(uid, gid int) *syscall.Credential {
	if gid < 0 || gid == 0 && uid != 0 {
		gid = uid
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// holder is a helper process run as another UID holding connections open.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// hold starts a helper as uid that opens n connections to sock, writes
// prefix on each and then holds them (sending nothing more) until
// released. It returns once every connection is made.
func (e *env) hold(uid int, sock string, n int, prefix string) *holder {
	e.t.Helper()
	cmd := exec.Command(helperBin, sock, strconv.Itoa(n), prefix)
	cmd.Env = []string{helperEnv + "=hold"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(uid, -1), Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	h := &holder{cmd: cmd, stdin: in}
	e.t.Cleanup(h.release)
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		h.release()
		e.t.Fatalf("helper as uid %d: %q", uid, line)
	}
	return h
}

// release closes the helper's connections and waits for it.
func (h *holder) release() {
	if h.stdin == nil {
		return
	}
	h.stdin.Close()
	h.stdin = nil
	h.cmd.Wait()
}

// maildrop returns the messages in the site's maildrop (decoded).
func (e *env) maildrop() []*spool.Meta {
	e.t.Helper()
	ents, _ := os.ReadDir(e.site.Maildrop)
	var out []*spool.Meta
	for _, d := range ents {
		f, err := os.Open(filepath.Join(e.site.Maildrop, d.Name()))
		if err != nil {
			continue
		}
		fi, _ := f.Stat()
		if m, err := spool.Decode(f, fi.Size()); err == nil {
			out = append(out, m)
		}
		f.Close()
	}
	return out
}

// idsOf returns the ids of the messages picked up from uid (from the mail
// log's pickup lines).
func (e *env) idsOf(uid int) []string {
	var ids []string
	for _, l := range strings.Split(e.log(), "\n") {
		if strings.Contains(l, " event=pickup ") && strings.Contains(l, " uid="+strconv.Itoa(uid)+" ") {
			if id := field(l, "id"); id != "" {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// field returns the bare value of key in a mail log line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// countSockets returns the number of sockets process pid holds open.
func countSockets(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	n := 0
	for _, d := range ents {
		if l, err := os.Readlink(filepath.Join(dir, d.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// drained sends a marker message as nobody and waits until it has been
// delivered and nothing is left in the spool, so that every message
// stored before it has been delivered (or refused) by now.
func (e *env) drained(t *testing.T) {
	t.Helper()
	marker := fmt.Sprintf("marker %d", time.Now().UnixNano())
	if r := e.sendmail(run{uid: nobody, stdin: "Subject: " + marker + "\n\nm\n"}, "-i", "marker@example.net"); r.code != 0 {
		t.Fatalf("marker message: %v", r)
	}
	e.waitFor("the marker delivered and the queue empty", 60*time.Second, func() bool {
		found := false
		for _, m := range e.up.Messages() {
			if strings.Contains(string(m.Data), "Subject: "+marker+"\r\n") {
				found = true
			}
		}
		if !found || len(e.maildrop()) > 0 {
			return false
		}
		r := e.relayd(run{uid: 0}, "queue", "list")
		return strings.Contains(r.stdout, "\n0 message(s)")
	})
}

// raw runs the helper as uid: it sends data to the unix socket sock, shuts
// down its write side and returns what came back.
func (e *env) raw(uid int, sock string, data []byte) string {
	e.t.Helper()
	f := filepath.Join(e.dir, fmt.Sprintf("raw-%d", time.Now().UnixNano()))
	if err := os.WriteFile(f, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	defer os.Remove(f)
	cmd := exec.Command(helperBin, sock, f)
	cmd.Env = []string{helperEnv + "=raw"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(uid, -1), Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("raw helper as uid %d: %v: %s", uid, err, out)
	}
	return string(out)
}

// use makes t the test e reports to (a subtest) until t ends.
func (e *env) use(t *testing.T) {
	parent := e.t
	e.t = t
	t.Cleanup(func() { e.t = parent })
}

// settle waits until the number of sockets relayd holds has not changed
// for a second (it has accepted, served or refused every connection made
// so far).
func (e *env) settle() {
	e.t.Helper()
	last, same := -2, 0
	e.waitFor("relayd's sockets to settle", 60*time.Second, func() bool {
		n := countSockets(e.r.Cmd.Process.Pid)
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		time.Sleep(100 * time.Millisecond)
		return same >= 10
	})
}
