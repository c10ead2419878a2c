package oauth

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The rotated refresh token is durable once writeState returns: its
// file fsync'd before the rename over the state file, and the directory
// fsync'd after it (else a power loss can undo the rename, and relayd
// would use a refresh token the provider has already replaced). The
// system calls are watched with strace(1) on a child process that runs
// only writeState.
func TestWriteStateDurable(t *testing.T) {
	if dir := os.Getenv("MAILSHIM_TEST_WRITESTATE"); dir != "" {
		if err := writeState(filepath.Join(dir, "oauth", "state"), hash("configured"), "rotated"); err != nil {
			t.Fatal(err)
		}
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed (scripts/install-deps.sh installs it)")
	}
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=openat,fsync,fdatasync,rename,renameat,renameat2", "-o", out,
		os.Args[0], "-test.run=^TestWriteStateDurable$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MAILSHIM_TEST_WRITESTATE="+dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strace: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	stateDir, state := filepath.Join(dir, "oauth"), filepath.Join(dir, "oauth", "state")
	if got, _ := readState(state, hash("configured")); got != "rotated" {
		t.Fatalf("state file holds %q", got)
	}
	// "<pid> <call>(<args>) = <result>"
	line := regexp.MustCompile(`^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)`)
	opened := map[string]string{} // fd → path
	var events []string
	for _, l := range strings.Split(string(b), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		call, args, res := m[1], m[2], m[3]
		switch call {
		case "openat":
			if p := regexp.MustCompile(`"([^"]*)"`).FindStringSubmatch(args); p != nil && !strings.HasPrefix(res, "-") {
				opened[res] = p[1]
			}
		case "fsync", "fdatasync":
			if p, ok := opened[args]; ok && res == "0" {
				switch {
				case p == stateDir:
					events = append(events, "fsync dir")
				case strings.HasPrefix(p, stateDir+"/"):
					events = append(events, "fsync file")
				}
			}
		case "rename", "renameat", "renameat2":
			if strings.Contains(args, `"`+state+`"`) && res == "0" {
				events = append(events, "rename")
			}
		}
	}
	want := []string{"fsync file", "rename", "fsync dir"}
	if strings.Join(events, ", ") != strings.Join(want, ", ") {
		t.Errorf("writeState made %q, want %q\n%s", events, want, b)
	}
}
