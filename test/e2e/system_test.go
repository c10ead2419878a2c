//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The machine as the suite sets it up: Debian packages for the callers,
// mailshim itself (the .deb from dist/, or, while packaging cannot build
// one, the binaries from `go build` installed with PRODUCT.md's modes),
// and two unprivileged users who run the callers.

// callerPackages are the real programs that call sendmail. None of them
// depends on an MTA; the mailx family does, and is installed only after
// mailshim's .deb, which provides mail-transport-agent.
var callerPackages = []string{
	"php-cli", "php-cgi", "php-fpm", "libphp-phpmailer", "php-symfony-mailer",
	"cron", "git", "git-email", "libmailtools-perl", "util-linux", "procps",
}

// Users who run the callers.
const (
	alice = "e2e-alice"
	bob   = "e2e-bob"
)

// repoRoot is the repository's top directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// run runs a command, failing the test with its output on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := c.CombinedOutput()
	return string(out), err
}

func installed(pkg string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	return err == nil && strings.Contains(string(out), "install ok installed")
}

// aptInstall installs the missing packages among pkgs; another job may hold
// the dpkg lock, so it retries for a while.
func aptInstall(t testing.TB, pkgs ...string) {
	t.Helper()
	var missing []string
	for _, p := range pkgs {
		if !installed(p) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return
	}
	t.Logf("apt-get install %s", strings.Join(missing, " "))
	noServices(t)
	var out string
	var err error
	for i := 0; i < 30; i++ {
		args := append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...)
		if out, err = runErr("apt-get", args...); err == nil {
			return
		}
		if i == 0 {
			runErr("apt-get", "update", "-qq")
		}
		if !strings.Contains(out, "lock") && i > 1 {
			break
		}
		time.Sleep(5 * time.Second) // the dpkg lock is held by someone else
	}
	t.Fatalf("apt-get install %s: %v\n%s", strings.Join(missing, " "), err, out)
}

// noServices keeps maintainer scripts from starting daemons (php-fpm,
// cron, relayd): the suite starts what it needs itself.
func noServices(t testing.TB) {
	if _, err := os.Stat(policyRC); err == nil {
		return
	}
	if err := os.WriteFile(policyRC, []byte(policyRCBody), 0o755); err != nil {
		t.Fatal(err)
	}
}

const (
	policyRC     = "/usr/sbin/policy-rc.d"
	policyRCBody = "#!/bin/sh\n# written by mailshim's e2e suite\nexit 101\n"
)

// restoreServices removes the policy-rc.d that noServices wrote (and only
// that one).
func restoreServices() {
	if b, err := os.ReadFile(policyRC); err == nil && string(b) == policyRCBody {
		os.Remove(policyRC)
	}
}

// ensureUser creates a normal user with a home directory.
func ensureUser(t testing.TB, name string) *user.User {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		run(t, "useradd", "--create-home", "--shell", "/bin/bash", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// System is what the suite installed and started, shared by every test.
type System struct {
	FromDeb  bool   // mailshim came from the .deb (else from go build)
	Deb      string // the .deb installed
	Alice    *user.User
	Bob      *user.User
	Upstream *Upstream
	Relayd   *Relayd
}

var (
	sysOnce sync.Once
	sys     *System
	sysErr  string
)

// setup brings the machine to the suite's starting state once: packages,
// mailshim, users, the Postfix upstream, relayd running against it.
func setup(t *testing.T) *System {
	t.Helper()
	requireRoot(t)
	sysOnce.Do(func() {
		// On the first test that needs it (not a subtest: go test -run
		// may select a subtest alone). A t.Fatal in here ends the Do.
		sysErr = "the suite's setup failed in an earlier test (see its log)"
		s := &System{}
		aptInstall(t, callerPackages...)
		s.installMailshim(t)
		s.Alice = ensureUser(t, alice)
		s.Bob = ensureUser(t, bob)
		s.Upstream = sharedUpstream(t)
		s.Relayd = newRelayd(t, s.Upstream)
		s.Relayd.Start(t, s.Relayd.DefaultConfig())
		sys = s
	})
	if sys == nil {
		t.Fatal(sysErr)
	}
	return sys
}

// installMailshim installs the .deb (MAILSHIM_E2E_DEB, else the newest
// dist/mailshim_*.deb). Without one (or with MAILSHIM_E2E_DEB=none), and
// unless MAILSHIM_E2E_REQUIRE_DEB is set, it installs binaries built from
// the tree with the modes of packaging/layout.txt — a stop-gap for
// development that says so loudly.
func (s *System) installMailshim(t *testing.T) {
	deb := os.Getenv("MAILSHIM_E2E_DEB")
	if deb == "none" {
		deb = ""
	} else if deb == "" {
		debs, _ := filepath.Glob(filepath.Join(repoRoot(), "dist", "mailshim_*.deb"))
		var newest time.Time
		for _, d := range debs {
			if fi, err := os.Stat(d); err == nil && fi.ModTime().After(newest) {
				deb, newest = d, fi.ModTime()
			}
		}
	}
	if deb != "" {
		noServices(t)
		abs, _ := filepath.Abs(deb)
		t.Logf("installing %s", abs)
		// --reinstall: a machine that ran the suite before has this
		// version; confold: the suite edited the conffile (as an admin
		// does) and keeps its version without a prompt.
		out, err := runErr("apt-get", "install", "-y", "-q", "--no-install-recommends", "--allow-downgrades", "--reinstall",
			"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", abs)
		if err != nil {
			t.Fatalf("apt-get install %s: %v\n%s", abs, err, out)
		}
		s.FromDeb, s.Deb = true, abs
		// The mailx family depends on an MTA: now mailshim is one.
		aptInstall(t, "s-nail")
		return
	}
	if os.Getenv("MAILSHIM_E2E_REQUIRE_DEB") != "" {
		t.Fatal("no mailshim .deb in dist/ (run `make deb`) and MAILSHIM_E2E_REQUIRE_DEB is set")
	}
	t.Log("WARNING: no .deb in dist/: installing binaries from `go build` by hand (stop-gap until `make deb` works)")
	bin := t.TempDir()
	src := repoRoot()
	if os.Getenv("MAILSHIM_E2E_FROM_HEAD") != "" {
		// Build what is committed, not a shared work tree's half-done edits.
		src = t.TempDir()
		run(t, "sh", "-c", "git -C \"$0\" archive HEAD | tar -x -C \"$1\"", repoRoot(), src)
		// Local fixes to try before their owners land them (never in CI).
		if pd := os.Getenv("MAILSHIM_E2E_PATCHES"); pd != "" {
			patches, _ := filepath.Glob(filepath.Join(pd, "*.patch"))
			for _, p := range patches {
				t.Logf("WARNING: applying local patch %s", p)
				run(t, "sh", "-c", "cd \"$0\" && git apply \"$1\"", src, p)
			}
		}
	}
	for _, c := range []string{"sendmail", "relayd"} {
		out, err := func() ([]byte, error) {
			cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(bin, c), "./cmd/"+c)
			cmd.Dir = src
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			return cmd.CombinedOutput()
		}()
		if err != nil {
			t.Fatalf("go build ./cmd/%s: %v\n%s", c, err, out)
		}
	}
	if _, err := user.LookupGroup("mailshim-drop"); err != nil {
		run(t, "groupadd", "--system", "mailshim-drop")
	}
	if _, err := user.Lookup("mailshim"); err != nil {
		run(t, "useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/var/spool/mailshim",
			"--shell", "/usr/sbin/nologin", "--groups", "mailshim-drop", "mailshim")
	}
	run(t, "install", "-o", "root", "-g", "mailshim-drop", "-m", "2755", filepath.Join(bin, "sendmail"), "/usr/sbin/sendmail")
	run(t, "install", "-o", "root", "-g", "root", "-m", "0755", filepath.Join(bin, "relayd"), "/usr/sbin/relayd")
	for _, l := range []struct{ link, target string }{
		{"/usr/lib/sendmail", "../sbin/sendmail"},
		{"/usr/bin/mailq", "../sbin/sendmail"},
		{"/usr/bin/newaliases", "../sbin/sendmail"},
	} {
		os.Remove(l.link)
		if err := os.Symlink(l.target, l.link); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "install", "-d", "-o", "mailshim", "-g", "mailshim", "-m", "0711", "/var/spool/mailshim")
	run(t, "install", "-d", "-o", "mailshim", "-g", "mailshim-drop", "-m", "1730", "/var/spool/mailshim/maildrop")
	run(t, "install", "-d", "-o", "root", "-g", "root", "-m", "0755", "/etc/mailshim")
	// As the .deb does (mk/packaging.mk, postinst): the link through which
	// ca-certificates trusts the CA relayd tls-init writes, listed in
	// /etc/ca-certificates.conf.
	run(t, "install", "-d", "-m", "0755", "/usr/share/ca-certificates/mailshim")
	os.Remove("/usr/share/ca-certificates/mailshim/mailshim-local-ca.crt")
	if err := os.Symlink("/etc/mailshim/local-ca.crt", "/usr/share/ca-certificates/mailshim/mailshim-local-ca.crt"); err != nil {
		t.Fatal(err)
	}
	run(t, "sh", "-c", `grep -qsxF mailshim/mailshim-local-ca.crt /etc/ca-certificates.conf || echo mailshim/mailshim-local-ca.crt >>/etc/ca-certificates.conf`)
	if src := filepath.Join(repoRoot(), "packaging", "php", "mailshim-prepend.php"); fileExists(src) {
		run(t, "install", "-D", "-m", "0644", src, "/usr/share/mailshim/php/mailshim-prepend.php")
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// asUser builds a command that runs as u (real and effective IDs, its
// groups), with a clean login-like environment plus env.
func asUser(u *user.User, env []string, name string, args ...string) *exec.Cmd {
	full := append([]string{"--reuid=" + u.Uid, "--regid=" + u.Gid, "--init-groups", "--", name}, args...)
	c := exec.Command("setpriv", full...)
	c.Dir = u.HomeDir
	c.Env = append([]string{
		"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username,
		"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
	}, env...)
	return c
}

// runAs runs a command as u with stdin, returns its combined output, and
// fails the test unless it exits 0.
func runAs(t testing.TB, u *user.User, env []string, stdin []byte, name string, args ...string) string {
	t.Helper()
	c := asUser(u, env, name, args...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	done := make(chan error, 1)
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s %s (as %s): %v\n%s", name, strings.Join(args, " "), u.Username, err, out.String())
		}
	case <-time.After(2 * time.Minute):
		c.Process.Kill()
		t.Fatalf("%s (as %s): still running after 2 minutes\n%s", name, u.Username, out.String())
	}
	return out.String()
}

// writeFileAs writes a file owned by u (a script in the user's tree).
func writeFileAs(t testing.TB, u *user.User, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Dir(path), uid, gid); err != nil {
		t.Fatal(err)
	}
}

func uidOf(u *user.User) int {
	n, _ := strconv.Atoi(u.Uid)
	return n
}

func must(t testing.TB, err error, what string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}
