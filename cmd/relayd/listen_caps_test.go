package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// relayd as the unit runs it (an unprivileged user with CAP_DAC_READ_SEARCH
// and CAP_SYS_PTRACE as ambient capabilities, for the listener's /proc
// scan) reads its own files with that user's rights only: a password file
// only root can read stops it at start with exit 78 naming the file, as it
// does without the capabilities (and as a reload would), instead of being
// read through CAP_DAC_READ_SEARCH.
func TestListenCapsNotInForceAtStart(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIPPED: setpriv (util-linux) not installed")
	}
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{spoolSockets: true, extra: listenConf + "socket = \"\"\n"})
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	secret := filepath.Join(dir, "root-only.secret")
	if err := os.WriteFile(secret, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(s.cfgPath)
	c := strings.Replace(string(cfg), fmt.Sprintf("password_file = %q", filepath.Join(s.dir, "secret")), fmt.Sprintf("password_file = %q", secret), 1)
	if c == string(cfg) {
		t.Fatalf("no password_file in\n%s", cfg)
	}
	if err := os.WriteFile(s.cfgPath, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(up.Upstream().CAFile); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	if err := os.Chown(s.dir, daemonUID, daemonUID); err != nil {
		t.Fatal(err)
	}
	id := strconv.Itoa(daemonUID)
	for _, caps := range []string{"", "+dac_read_search,+sys_ptrace"} {
		args := []string{"--reuid=" + id, "--regid=" + id, "--clear-groups"}
		if caps != "" {
			args = append(args, "--inh-caps="+caps, "--ambient-caps="+caps)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, "setpriv", append(args, "--", relaydBin, "--config", s.cfgPath)...)
		out, _ := cmd.CombinedOutput()
		cancel()
		code := cmd.ProcessState.ExitCode()
		if code != 78 || !strings.Contains(string(out), "password_file: open "+secret+": permission denied") {
			t.Errorf("caps %q: exit %d (want 78, the password file not readable by the daemon user):\n%.2000s", caps, code, out)
		}
	}
}
