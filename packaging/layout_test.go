// Package packaging_test checks that the packaging agrees with itself and
// with the code: packaging/layout.txt (the one place owners and modes are
// written) against pkg/spool's modes and pkg/config's default paths, the
// systemd unit and sysusers.d file against the layout, and `layout.sh
// install` + `layout.sh check` round-tripping a staged tree.
package packaging_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/spool"
)

// entry is one line of layout.txt.
type entry struct {
	typ, path, owner, group, mode, src string
}

func readLayout(t *testing.T) []entry {
	t.Helper()
	f, err := os.Open("layout.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		w := strings.Fields(line)
		if len(w) != 6 {
			t.Fatalf("layout.txt:%d: %d columns, want 6: %q", n, len(w), line)
		}
		p := strings.NewReplacer("@PREFIX@", "/usr", "@UNITDIR@", "/lib/systemd/system",
			"@SYSUSERSDIR@", "/usr/lib/sysusers.d", "@TMPFILESDIR@", "/usr/lib/tmpfiles.d").Replace(w[1])
		out = append(out, entry{w[0], p, w[2], w[3], w[4], w[5]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func find(t *testing.T, es []entry, path string) entry {
	t.Helper()
	for _, e := range es {
		if e.path == path {
			return e
		}
	}
	t.Fatalf("layout.txt has no entry for %s", path)
	return entry{}
}

// TestLayoutMatchesCode: the spool modes of layout.txt are pkg/spool's, its
// paths are pkg/config's defaults, and the groups are the ones the code uses.
func TestLayoutMatchesCode(t *testing.T) {
	es := readLayout(t)
	def := config.Default()

	root := find(t, es, def.Spool)
	if root.typ != "d" || root.mode != spool.ModeString(spool.ModeRoot) || root.owner != "mailshim" || root.group != "mailshim" {
		t.Errorf("spool root %+v, want d mailshim mailshim %s (spool.ModeRoot)", root, spool.ModeString(spool.ModeRoot))
	}
	md := find(t, es, filepath.Join(def.Spool, spool.DirMaildrop))
	if md.typ != "d" || md.mode != spool.ModeString(spool.ModeMaildrop) || md.owner != "mailshim" || md.group != spool.DropGroup {
		t.Errorf("maildrop %+v, want d mailshim %s %s (spool.ModeMaildrop)", md, spool.DropGroup, spool.ModeString(spool.ModeMaildrop))
	}
	run := find(t, es, filepath.Dir(def.ControlSocket))
	if run.typ != "r" || filepath.Dir(def.SubmitSocket) != run.path {
		t.Errorf("runtime directory %+v, want type r holding %s and %s", run, def.ControlSocket, def.SubmitSocket)
	}
	sm := find(t, es, "/usr/sbin/sendmail")
	if sm.owner != "root" || sm.group != spool.DropGroup || sm.mode != "2755" {
		t.Errorf("sendmail %+v, want root %s 2755", sm, spool.DropGroup)
	}
	conf := find(t, es, config.DefaultPath)
	if conf.typ != "c" || conf.owner != "root" {
		t.Errorf("configuration %+v, want a root-owned conffile", conf)
	}
	for _, l := range []string{"/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"} {
		e := find(t, es, l)
		if e.typ != "l" || filepath.Clean(filepath.Join(filepath.Dir(l), e.src)) != "/usr/sbin/sendmail" {
			t.Errorf("%s: %+v, want a relative link to /usr/sbin/sendmail", l, e)
		}
	}
}

// unitKeys returns the [Service] key=value pairs of the unit (a key given
// twice keeps both values, space-joined).
func unitKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", path, line)
		}
		if keys[k] != "" {
			v = keys[k] + " " + v
		}
		keys[k] = v
	}
	return keys
}

// TestUnitMatchesLayout: the unit runs relayd as the spool's owner, with
// the maildrop's group, writes only the spool, and makes /run/mailshim with
// the layout's mode.
func TestUnitMatchesLayout(t *testing.T) {
	es := readLayout(t)
	def := config.Default()
	root := find(t, es, def.Spool)
	md := find(t, es, filepath.Join(def.Spool, spool.DirMaildrop))
	run := find(t, es, filepath.Dir(def.ControlSocket))
	relayd := find(t, es, "/usr/sbin/relayd")
	k := unitKeys(t, "systemd/relayd.service")

	want := map[string]string{
		"ExecStart":               relayd.path,
		"User":                    root.owner,
		"Group":                   root.group,
		"SupplementaryGroups":     md.group,
		"ReadWritePaths":          root.path,
		"RuntimeDirectory":        filepath.Base(run.path),
		"RuntimeDirectoryMode":    run.mode,
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"CapabilityBoundingSet":   "CAP_DAC_READ_SEARCH CAP_SYS_PTRACE",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"UMask":                   "0077",
	}
	for key, v := range want {
		got, ok := k[key]
		if !ok || got != v {
			t.Errorf("relayd.service %s=%q, want %q", key, got, v)
		}
	}
	if !strings.HasPrefix(k["SystemCallFilter"], "@system-service") {
		t.Errorf("relayd.service SystemCallFilter=%q, want @system-service first", k["SystemCallFilter"])
	}
}

// TestSysusersMatchesLayout: every account the layout names is made by
// sysusers.conf, and the daemon user is in the maildrop's group.
func TestSysusersMatchesLayout(t *testing.T) {
	b, err := os.ReadFile("systemd/sysusers.conf")
	if err != nil {
		t.Fatal(err)
	}
	users, groups, members := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		w := strings.Fields(line)
		if len(w) < 2 || strings.HasPrefix(w[0], "#") {
			continue
		}
		switch w[0] {
		case "u":
			users[w[1]], groups[w[1]] = true, true
		case "g":
			groups[w[1]] = true
		case "m":
			members[w[1]+":"+w[2]] = true
		}
	}
	for _, e := range readLayout(t) {
		if e.owner != "-" && e.owner != "root" && !users[e.owner] {
			t.Errorf("%s: owner %s is not made by sysusers.conf", e.path, e.owner)
		}
		if e.group != "-" && e.group != "root" && !groups[e.group] {
			t.Errorf("%s: group %s is not made by sysusers.conf", e.path, e.group)
		}
	}
	if !members["mailshim:"+spool.DropGroup] {
		t.Errorf("sysusers.conf does not put mailshim in %s", spool.DropGroup)
	}
}

// TestGeneratedFiles: tmpfiles.d, the postinst part and the RPM %files
// list carry every directory of the layout with its mode.
func TestGeneratedFiles(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("SKIPPED: bash not installed")
	}
	gen := func(what string) string {
		out, err := exec.Command("./layout.sh", what).CombinedOutput()
		if err != nil {
			t.Fatalf("layout.sh %s: %v\n%s", what, err, out)
		}
		return string(out)
	}
	tmpfiles, postinst, rpm := gen("tmpfiles"), gen("postinst"), gen("rpm-files")
	for _, e := range readLayout(t) {
		switch e.typ {
		case "d", "r":
			if line := fmt.Sprintf("d %s %s %s %s -", e.path, e.mode, e.owner, e.group); !strings.Contains(tmpfiles, line) {
				t.Errorf("tmpfiles.d lacks %q", line)
			}
			if line := fmt.Sprintf("mailshim_dir '%s' '%s' '%s' '%s'", e.path, e.owner, e.group, e.mode); !strings.Contains(postinst, line) {
				t.Errorf("postinst lacks %q", line)
			}
			if line := fmt.Sprintf("%%attr(%s,%s,%s) %s", e.mode, e.owner, e.group, e.path); !strings.Contains(rpm, line) {
				t.Errorf("RPM %%files lacks %q", line)
			}
		case "f":
			if e.owner != "root" || e.group != "root" || e.mode[0] != '0' {
				line := fmt.Sprintf("dpkg-statoverride --update --add '%s' '%s' '%s' '%s'", e.owner, e.group, e.mode, e.path)
				if !strings.Contains(postinst, line) {
					t.Errorf("postinst lacks %q", line)
				}
			}
		}
	}
}

// TestInstallRoundTrip stages `layout.sh install` into a temporary DESTDIR
// (as `make install DESTDIR=...` does) and checks it with `layout.sh
// check`: every path with its owner, group and mode. Needs root and the
// accounts (made by the package or `make install-accounts`).
func TestInstallRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to give the staged files their owners")
	}
	for _, name := range []string{"mailshim"} {
		if _, err := user.Lookup(name); err != nil {
			t.Skipf("SKIPPED: user %s does not exist (make install-accounts, or install the .deb)", name)
		}
	}
	if _, err := user.LookupGroup(spool.DropGroup); err != nil {
		t.Skipf("SKIPPED: group %s does not exist", spool.DropGroup)
	}
	// A source tree with stand-ins for everything the layout installs.
	src := t.TempDir()
	for _, e := range readLayout(t) {
		if e.typ == "l" || e.typ == "d" || e.typ == "r" {
			continue
		}
		p := filepath.Join(src, strings.TrimPrefix(e.src, "?"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("stand-in for "+e.path+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	layout, _ := filepath.Abs("layout.txt")
	script, _ := filepath.Abs("layout.sh")
	dest := t.TempDir()
	env := append(os.Environ(), "SRCDIR="+src, "LAYOUT="+layout, "DESTDIR="+dest,
		"PREFIX=/usr", "UNITDIR=/lib/systemd/system")
	cmd := exec.Command(script, "install")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("layout.sh install: %v\n%s", err, out)
	}
	cmd = exec.Command(script, "check", dest)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("layout.sh check: %v\n%s", err, out)
	}
	// A second install over the first changes nothing and keeps the
	// (possibly edited) configuration.
	conf := filepath.Join(dest, config.DefaultPath)
	if err := os.WriteFile(conf, []byte("# edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(script, "install")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second layout.sh install: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(conf); string(b) != "# edited\n" {
		t.Errorf("second install replaced the edited configuration: %q", b)
	}
	cmd = exec.Command(script, "check", dest)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("layout.sh check after a second install: %v\n%s", err, out)
	}
}
