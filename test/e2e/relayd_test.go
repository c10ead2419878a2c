//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// Relayd is the installed /usr/sbin/relayd, run by the suite as user
// mailshim (with its supplementary group mailshim-drop, as the systemd unit
// does) in the background, its stderr appended to LogPath. systemd is not
// PID 1 in CI, so the unit itself is not used here.
type Relayd struct {
	up      *Upstream
	LogPath string
	Config  string
	Secret  string
	CAFile  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// RelaydConfig is what a test may vary in /etc/mailshim/mailshim.conf.
type RelaydConfig struct {
	Auth     bool     // give username and password_file
	Password string   // written to the secret file
	Retry    []string // queue.retry
	Extra    string   // appended TOML (top-level keys must come first: use tables)
	// Before is TOML written before Postfix's [[upstream]] (other
	// upstreams tried first).
	Before string
}

const (
	confPath    = "/etc/mailshim/mailshim.conf"
	secretPath  = "/etc/mailshim/upstream.secret"
	caPath      = "/etc/mailshim/e2e-ca.pem"
	submitSock  = "/run/mailshim/submit.sock"
	controlSock = "/run/mailshim/control.sock"
	hostname    = "web1.e2e.test"
)

func newRelayd(t testing.TB, up *Upstream) *Relayd {
	t.Helper()
	dir, err := os.MkdirTemp("", "mailshim-e2e-relayd-")
	must(t, err, "log directory")
	return &Relayd{up: up, LogPath: filepath.Join(dir, "relayd.log"), Config: confPath, Secret: secretPath, CAFile: caPath}
}

// DefaultConfig authenticates with the right password and retries fast.
func (r *Relayd) DefaultConfig() RelaydConfig {
	return RelaydConfig{Auth: true, Password: r.up.Password, Retry: []string{"2s"}}
}

func (r *Relayd) writeConfig(t testing.TB, c RelaydConfig) {
	t.Helper()
	ca, err := os.ReadFile(r.up.CAFile)
	must(t, err, "CA")
	must(t, os.MkdirAll("/etc/mailshim", 0o755), "/etc/mailshim")
	must(t, os.WriteFile(r.CAFile, ca, 0o644), "write %s", r.CAFile)
	// Readable by relayd's user only, never by group mailshim-drop.
	must(t, os.WriteFile(r.Secret, []byte(c.Password+"\n"), 0o600), "write %s", r.Secret)
	run(t, "chown", "mailshim:mailshim", r.Secret)
	must(t, os.Chmod(r.Secret, 0o600), "chmod")

	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mailshim's e2e suite (test/e2e).\n")
	fmt.Fprintf(&b, "hostname = %q\n\n", hostname)
	b.WriteString(c.Before)
	fmt.Fprintf(&b, "[[upstream]]\nhost = \"127.0.0.1\"\nport = %d\ntls = \"starttls\"\nca_file = %q\n", r.up.Port, r.CAFile)
	if c.Auth {
		fmt.Fprintf(&b, "username = %q\npassword_file = %q\n", r.up.User, r.Secret)
	}
	retry := c.Retry
	if len(retry) == 0 {
		retry = []string{"2s"}
	}
	q := make([]string, len(retry))
	for i, s := range retry {
		q[i] = strconv.Quote(s)
	}
	fmt.Fprintf(&b, "\n[queue]\nretry = [%s]\nlifetime = \"1h\"\n", strings.Join(q, ", "))
	// Local names: cron's mail to the crontab's owner, root's mail.
	fmt.Fprintf(&b, "\n[aliases]\n%q = \"alice@example.com\"\nroot = \"ops@example.com\"\n", alice)
	fmt.Fprintf(&b, "\n[senders]\n%q = \"alice@example.com\"\n", alice)
	b.WriteString(c.Extra)
	must(t, os.WriteFile(r.Config, []byte(b.String()), 0o644), "write %s", r.Config)
}

// Start writes the configuration and starts relayd, waiting until its
// submission socket answers.
func (r *Relayd) Start(t testing.TB, c RelaydConfig) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		t.Fatal("relayd already running")
	}
	r.writeConfig(t, c)
	if out, err := runErr("/usr/sbin/relayd", "check-config", "--config", r.Config); err != nil {
		t.Fatalf("relayd check-config: %v\n%s", err, out)
	}
	killStaleRelayd()
	// systemd's RuntimeDirectory=mailshim, RuntimeDirectoryMode=0755; a
	// socket left by an earlier relayd must not pass for this one's.
	run(t, "install", "-d", "-o", "mailshim", "-g", "mailshim", "-m", "0755", "/run/mailshim")
	os.Remove(submitSock)
	os.Remove(controlSock)
	logf, err := os.OpenFile(r.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err, "relayd log")
	defer logf.Close()
	fmt.Fprintf(logf, "# e2e: starting relayd at %s\n", time.Now().UTC().Format(time.RFC3339Nano))
	// relayd.socket's part: the loopback listener's TCP sockets, bound
	// here as root and passed as systemd does (LISTEN_FDS, LISTEN_PID of
	// the process that gets them: the shell's, which execs setpriv, which
	// execs relayd).
	fds, err := activationSockets()
	must(t, err, "bind the listener's ports")
	// The capabilities relayd.service's AmbientCapabilities= gives it
	// (the listener reads other users' /proc/PID/fd to name the client's
	// process).
	args := []string{"setpriv", "--reuid=mailshim", "--regid=mailshim", "--init-groups"}
	if caps := unitCaps(); caps != "" {
		args = append(args, "--inh-caps="+caps, "--ambient-caps="+caps)
	}
	args = append(args, "--", "/usr/sbin/relayd", "--config", r.Config)
	cmd := exec.Command("sh", append([]string{"-c", `export LISTEN_PID=$$; exec "$@"`, "sh"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		fmt.Sprintf("LISTEN_FDS=%d", len(fds)), "LISTEN_FDNAMES=" + activationNames(len(fds))}
	cmd.ExtraFiles = fds
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	syscall.Umask(0o077)
	err = cmd.Start()
	syscall.Umask(0o022)
	must(t, err, "start relayd")
	os.WriteFile(relaydPidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	r.cmd = cmd
	r.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(r.done)

	ready := waitfor.Poll(30*time.Second, func() bool {
		select {
		case <-r.done:
			return true
		default:
		}
		// Not a connection: relayd would log it as a failed submission.
		// The old sockets were removed above, so this one is relayd's.
		fi, err := os.Stat(submitSock)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})
	select {
	case <-r.done:
		r.cmd = nil
		t.Fatalf("relayd exited at start: %v\n%s", cmd.ProcessState, tail(r.Log(), 30))
	default:
	}
	if !ready {
		t.Fatalf("relayd: %s did not answer within 30s\n%s", submitSock, tail(r.Log(), 30))
	}
}

// Stop sends SIGTERM and waits for relayd to exit.
func (r *Relayd) Stop(t testing.TB) {
	t.Helper()
	if err := r.stop(); err != nil {
		t.Error(err)
	}
}

func (r *Relayd) stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	var err error
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
		err = fmt.Errorf("relayd did not exit within 60s of SIGTERM")
	}
	r.cmd = nil
	os.Remove(relaydPidFile)
	return err
}

// relaydPidFile records the relayd this suite started (setpriv execs it,
// so the pid is relayd's), for killStaleRelayd.
const relaydPidFile = "/run/mailshim-e2e-relayd.pid"

// killStaleRelayd ends the relayd an earlier, killed run of the suite
// started, if it still runs: by its recorded pid, after checking that the
// process is /usr/sbin/relayd.
func killStaleRelayd() {
	b, err := os.ReadFile(relaydPidFile)
	if err != nil {
		return
	}
	os.Remove(relaydPidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.HasPrefix(cmdline, []byte("/usr/sbin/relayd\x00")) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	waitfor.Poll(30*time.Second, func() bool { return syscall.Kill(pid, 0) != nil })
}

// Restart stops relayd and starts it with c.
func (r *Relayd) Restart(t testing.TB, c RelaydConfig) {
	t.Helper()
	r.Stop(t)
	r.Start(t, c)
}

// Log returns relayd's whole log (every run of this suite).
func (r *Relayd) Log() string {
	b, _ := os.ReadFile(r.LogPath)
	return string(b)
}

// Event is one parsed log line.
type Event struct {
	Line string
	KV   map[string]string
}

func (e Event) Get(k string) string { return e.KV[k] }

// Events parses every key=value line of the log.
func (r *Relayd) Events() []Event {
	var out []Event
	sc := bufio.NewScanner(bytes.NewReader([]byte(r.Log())))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if kv := parseKV(line); len(kv) > 0 {
			out = append(out, Event{Line: line, KV: kv})
		}
	}
	return out
}

// WaitEvent waits until a log line satisfies match and returns it.
func (r *Relayd) WaitEvent(t testing.TB, limit time.Duration, what string, match func(Event) bool) Event {
	t.Helper()
	var got Event
	ok := waitfor.Poll(limit, func() bool {
		for _, e := range r.Events() {
			if match(e) {
				got = e
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("relayd log: no %s within %v\n--- relayd log (tail) ---\n%s", what, limit, tail(r.Log(), 40))
	}
	return got
}

// parseKV reads `key=value key="quoted value" ...` (pkg/maillog's format,
// and slog's text handler's).
func parseKV(line string) map[string]string {
	kv := map[string]string{}
	s := line
	for s != "" {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val = s[:sp]
			s = s[sp:]
		}
		kv[key] = val
	}
	return kv
}
