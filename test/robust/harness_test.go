package robust

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// env is one private installation: a spool, the config both programs
// read, an upstream, and relayd when started.
type env struct {
	t    *testing.T
	dir  string
	site *driver.Site
	up   *upstream.Server
	r    *driver.Relayd
	// upConf is the [[upstream]] part of the config; queueConf the [queue].
	upConf, queueConf string
	// relaxed is set when the spool modes had to be relaxed (see Probe).
	relaxed string
}

// quickQueue makes relayd retry fast and give up on stalled peers quickly,
// so that fault cases finish in seconds.
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

func needBinaries(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Skipf("SKIP: the binaries under test do not build: %v", buildErr)
	}
}

// openDir makes a test temp dir usable by the unprivileged caller.
func openDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/" && strings.HasPrefix(p, os.TempDir()); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

// newEnv starts an upstream with opt and prepares a site whose relayd
// delivers to it.
func newEnv(t *testing.T, opt upstream.Options) *env {
	t.Helper()
	needBinaries(t)
	dir := openDir(t)
	opt.Dir = dir
	up, err := upstream.Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	e := &env{t: t, dir: dir, up: up, queueConf: quickQueue}
	e.upConf = e.upstreamTOML(up.Port, "starttls", up.CAFile, up.Username, up.Password)
	e.site, err = driver.NewSite(filepath.Join(dir, "site"), bins, e.upConf+e.queueConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if e.r != nil && !e.r.Exited() {
			e.r.Stop(30 * time.Second)
		}
		if t.Failed() && e.r != nil {
			t.Logf("relayd log tail:\n%s", e.r.Tail(30))
		}
	})
	return e
}

func (e *env) upstreamTOML(port int, tls, ca, user, pass string) string {
	s := fmt.Sprintf("\n[[upstream]]\nhost = \"127.0.0.1\"\nport = %d\ntls = %q\n", port, tls)
	if ca != "" {
		s += fmt.Sprintf("ca_file = %q\n", ca)
	}
	if user != "" {
		pw := filepath.Join(e.dir, fmt.Sprintf("secret-%d", port))
		if err := os.WriteFile(pw, []byte(pass+"\n"), 0o600); err != nil {
			e.t.Fatal(err)
		}
		s += fmt.Sprintf("username = %q\npassword_file = %q\n", user, pw)
	}
	return s
}

// rewriteConfig writes the site's config again with the current upConf
// and queueConf (for both relayd and the compiled-in sendmail path).
func (e *env) rewriteConfig() {
	e.t.Helper()
	conf := fmt.Sprintf("hostname = \"bench.example\"\nspool = %q\nmax_message_size = \"200MB\"\ncontrol_socket = %q\nsubmit_socket = %q\n%s%s%s",
		e.site.Spool, filepath.Join(e.site.Dir, "control.sock"), filepath.Join(e.site.Dir, "submit.sock"), e.upConf, e.queueConf, driver.UnlimitedPolicy)
	for _, p := range []string{e.site.Config, bins.SendmailConf} {
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}

// probe checks that sendmail works in this site (relaxing the spool modes
// if the setgid sendmail cannot open them; see driver.Site.Probe).
func (e *env) probe() {
	e.t.Helper()
	note, err := e.site.Probe()
	if err != nil {
		e.t.Fatal(err)
	}
	if note != "" {
		e.relaxed = note
		e.t.Log(note)
	}
}

func (e *env) startRelayd() {
	e.t.Helper()
	r, err := driver.StartRelayd(bins.Relayd, e.site)
	if err != nil {
		e.t.Fatal(err)
	}
	e.r = r
}

func (e *env) kill() {
	e.t.Helper()
	e.r.Cmd.Process.Signal(syscall.SIGKILL)
	e.waitFor("relayd to die", 30*time.Second, e.r.Exited)
}

// waitFor is waitfor.True with relayd's log on failure.
func (e *env) waitFor(what string, limit time.Duration, cond func() bool) {
	e.t.Helper()
	waitfor.True(e.t, what, limit, cond, func() string {
		if e.r == nil {
			return ""
		}
		return "relayd log:\n" + e.r.Tail(20)
	})
}

// relaydAlive fails the test if relayd has exited.
func (e *env) relaydAlive() {
	e.t.Helper()
	if e.r.Exited() {
		e.t.Fatalf("relayd exited; log:\n%s", e.r.Tail(20))
	}
}

// log returns relayd's whole log so far (every run of this env).
func (e *env) log() string {
	ents, _ := filepath.Glob(filepath.Join(e.site.Dir, "relayd-*.log"))
	var b strings.Builder
	for _, p := range ents {
		d, _ := os.ReadFile(p)
		b.Write(d)
	}
	return b.String()
}

// spoolEmpty reports whether no message is left anywhere in the spool:
// no file in maildrop/ (temp files included) and nothing in relayd's queue
// in any state (spool.Snapshot, whatever the queue's layout).
func (e *env) spoolEmpty() bool {
	if ents, _ := os.ReadDir(e.site.Maildrop); len(ents) > 0 {
		return false
	}
	q, err := spool.Snapshot(e.site.Spool)
	return err == nil && len(q) == 0
}

// cpuTime returns the user+sys CPU time relayd has used so far.
func (e *env) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.r.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// msg is a test message with the sequence header and an end marker.
func msg(seq int, size int) []byte {
	hdr := fmt.Sprintf("From: Robust <sender@bench.example>\nTo: rcpt@bench.example\nSubject: robust %d\n%s: %d\n\n", seq, upstream.SeqHeader, seq)
	trailer := fmt.Sprintf("END-OF-MESSAGE %d\n", seq)
	var b strings.Builder
	b.WriteString(hdr)
	line := strings.Repeat("robust-body-", 7)[:75] + "\n"
	for b.Len()+len(trailer)+len(line) <= size {
		b.WriteString(line)
	}
	b.WriteString(trailer)
	return []byte(b.String())
}
