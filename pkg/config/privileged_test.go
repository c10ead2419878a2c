package config

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrivilegedOwner runs this test binary setgid as nobody (the way the
// installed sendmail runs) and checks that Load refuses a configuration
// file not owned by root, and that Path ignores MAILSHIM_CONFIG.
func TestPrivilegedOwner(t *testing.T) {
	if os.Getenv("CONFIG_TEST_HELPER") == "1" {
		return // the helper run is TestPrivilegedHelper
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: installs a setgid copy of the test binary and runs it as nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir makes both levels 0700
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "config.test")
	copyFile(t, os.Args[0], bin)
	if err := os.Chown(bin, 0, 4242); err != nil { // any group other than nobody's
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o755|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	rootConf := filepath.Join(dir, "root.conf")
	os.WriteFile(rootConf, []byte("spool = \"/srv/spool\"\n"), 0o644)
	userConf := filepath.Join(dir, "user.conf")
	os.WriteFile(userConf, []byte("spool = \"/tmp/evil\"\n"), 0o644)
	os.Chown(userConf, 65534, 65534)

	run := func(conf string) string {
		cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin,
			"-test.run=^TestPrivilegedHelper$", "-test.count=1")
		cmd.Env = []string{"CONFIG_TEST_HELPER=1", "CONFIG_TEST_FILE=" + conf, "MAILSHIM_CONFIG=" + userConf}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := run(rootConf); !strings.Contains(out, "privileged=true path="+DefaultPath+" spool=/srv/spool") {
		t.Errorf("root-owned file:\n%s", out)
	}
	if out := run(userConf); !strings.Contains(out, "file: owned by uid 65534, not root") {
		t.Errorf("user-owned file accepted:\n%s", out)
	}
}

func TestPrivilegedHelper(t *testing.T) {
	if os.Getenv("CONFIG_TEST_HELPER") != "1" {
		t.Skip("helper for TestPrivilegedOwner")
	}
	c, err := Load(os.Getenv("CONFIG_TEST_FILE"))
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		return
	}
	priv := "false"
	if Privileged() {
		priv = "true"
	}
	os.Stdout.WriteString(fmt.Sprint(os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid()) + " privileged=" + priv + " path=" + Path() + " spool=" + c.Spool + "\n")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
