package driver

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs under test, built static into a temp dir.
type Binaries struct {
	Dir      string
	Sendmail string // "" when cmd/sendmail does not build (yet)
	Relayd   string // "" when cmd/relayd does not build
	Refwrite string
	RefSMTP  string // the drain's reference client (bench/refsmtp)
	// SendmailConf, when set, is the configuration path compiled into
	// sendmail (-X main.configPath): NewSite writes its config there
	// instead of bind-mounting /etc/mailshim (the robustness suite's way).
	SendmailConf string
	Missing      map[string]string // program -> why it is missing
}

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	p := strings.TrimSpace(string(out))
	if p == "" || p == os.DevNull {
		return "", fmt.Errorf("not inside the mailshim module")
	}
	return filepath.Dir(p), nil
}

// Build compiles the reference program, sendmail and relayd with
// CGO_ENABLED=0 into dir. The reference must build; the others are
// reported missing when they do not.
func Build(root, dir string) (*Binaries, error) {
	return build(root, dir, "")
}

// BuildWithSymbols is Build keeping the symbol tables, for perf(1).
func BuildWithSymbols(root, dir string) (*Binaries, error) {
	return build(root, dir, symbolsOnly)
}

const symbolsOnly = "\x00symbols"

// BuildWithConfig is Build with sendmail's configuration path compiled in
// (see Binaries.SendmailConf), so that a setgid copy reads a private file.
func BuildWithConfig(root, dir, conf string) (*Binaries, error) {
	return build(root, dir, conf)
}

func build(root, dir, conf string) (*Binaries, error) {
	ld0 := "-s -w"
	if conf == symbolsOnly {
		conf, ld0 = "", ""
	}
	b := &Binaries{Dir: dir, Missing: map[string]string{}, SendmailConf: conf}
	build := func(pkg, name string) (string, error) {
		out := filepath.Join(dir, name)
		ld := ld0
		if conf != "" && name == "sendmail" {
			ld += " -X main.configPath=" + conf
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags="+ld, "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v: %s", pkg, err, firstLine(string(msg)))
		}
		return out, nil
	}
	var err error
	if b.Refwrite, err = build("./bench/refwrite", "refwrite"); err != nil {
		return nil, err
	}
	if b.RefSMTP, err = build("./bench/refsmtp", "refsmtp"); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		pkg, name string
		dst       *string
	}{{"./cmd/sendmail", "sendmail", &b.Sendmail}, {"./cmd/relayd", "relayd", &b.Relayd}} {
		if *p.dst, err = build(p.pkg, p.name); err != nil {
			b.Missing[p.name] = err.Error()
		}
	}
	return b, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	for strings.HasPrefix(s, "#") {
		_, rest, ok := strings.Cut(s, "\n")
		if !ok {
			break
		}
		s = strings.TrimSpace(rest)
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
