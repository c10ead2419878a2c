package main

// End-to-end tests of the real binary, built once in TestMain.
//
// Unprivileged cases run the binary as the current user with
// MAILSHIM_CONFIG pointing at a private spool. Privileged cases (root
// only; they say so when skipped) install a copy setgid into a temporary
// directory whose spool has PRODUCT.md's modes and run it as nobody with
// setpriv. That copy is linked with -X main.configPath=<tmp>/setgid.conf,
// since a setgid sendmail ignores MAILSHIM_CONFIG; each test rewrites that
// file to point at its own spool.

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
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submit/submittest"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

var (
	binDir     string // 0755, holds the binaries and setgid.conf
	binPath    string // plain build
	sgPath     string // setgid copy ("" when not root)
	sgConf     string // the setgid copy's configuration file
	logSock    string // where the test binaries send their syslog lines
	dropGroup  = -1   // the setgid group
	nobodyUID  = 65534
	buildError error
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "sendmail-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		binDir = dir
		binPath = filepath.Join(dir, "sendmail")
		sgConf = filepath.Join(dir, "setgid.conf")
		logSock = filepath.Join(dir, "log.sock")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.configPath="+sgConf+" -X main.syslogPath="+logSock, "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildError = fmt.Errorf("go build: %v\n%s", err, out)
		} else if os.Geteuid() == 0 {
			if g, ok := lookupGroup("mail"); ok {
				dropGroup = g
				sgPath = filepath.Join(dir, "sendmail-setgid")
				// A copy that is not really setgid would let the setgid
				// tests pass without testing it: fail them all instead.
				b, err := os.ReadFile(binPath)
				if err == nil {
					err = os.WriteFile(sgPath, b, 0o755)
				}
				if err == nil {
					err = os.Chown(sgPath, 0, g)
				}
				if err == nil {
					err = os.Chmod(sgPath, 0o2755|os.ModeSetgid)
				}
				if err != nil {
					buildError = fmt.Errorf("installing the setgid copy: %v", err)
				}
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func lookupGroup(name string) (int, bool) {
	b, err := os.ReadFile("/etc/group")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 4 && f[0] == name && f[3] == "" {
			n, err := strconv.Atoi(f[2])
			return n, err == nil
		}
	}
	return 0, false
}

func needBinary(t *testing.T) {
	t.Helper()
	if buildError != nil {
		t.Fatal(buildError)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	needBinary(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: needs root to install a setgid copy and run it as nobody (CI runs as root)")
	}
	if sgPath == "" {
		t.Skip("SKIPPED: no group \"mail\" without members to use as the setgid group")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIPPED: setpriv (util-linux) not installed")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(binDir, &st); err == nil && st.Flags&0x2 != 0 { // ST_NOSUID
		t.Skipf("SKIPPED: %s is on a nosuid file system: the setgid bit would be ignored", binDir)
	}
}

// testSpool is a spool root with PRODUCT.md's modes and a config file.
type testSpool struct {
	root string
	conf string
}

// newSpool makes a spool. setgid: owned as installed (root 0711, maildrop
// 1730 root:<drop group>) and made the setgid copy's configuration.
func newSpool(t *testing.T, setgid bool, extraConf string) *testSpool {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	s := &testSpool{root: filepath.Join(dir, "spool"), conf: filepath.Join(dir, "mailshim.conf")}
	if err := os.Mkdir(s.root, 0o711); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(s.root, spool.DirMaildrop)
	if err := os.Mkdir(md, 0o700); err != nil {
		t.Fatal(err)
	}
	if setgid {
		os.Chown(md, 0, dropGroup)
		os.Chmod(md, 0o730|os.ModeSticky)
	}
	conf := fmt.Sprintf("hostname = \"test.example\"\nspool = %q\nsubmit_socket = %q\ncontrol_socket = %q\n%s",
		s.root, filepath.Join(dir, "submit.sock"), filepath.Join(dir, "control.sock"), extraConf)
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if setgid {
		if err := os.WriteFile(sgConf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

type msg struct {
	path string
	meta *spool.Meta
	body string
	st   *syscall.Stat_t
	mode os.FileMode
}

// files returns the messages in maildrop/, decoded and checked.
func (s *testSpool) files(t *testing.T) []msg {
	t.Helper()
	md := filepath.Join(s.root, spool.DirMaildrop)
	ents, err := os.ReadDir(md)
	if err != nil {
		t.Fatal(err)
	}
	var out []msg
	for _, e := range ents {
		p := filepath.Join(md, e.Name())
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		m, err := spool.Decode(f, fi.Size())
		if err != nil {
			f.Close()
			t.Fatalf("%s: %v", e.Name(), err)
		}
		b, err := io.ReadAll(m.Body(f))
		f.Close()
		if err != nil {
			t.Fatalf("%s: body: %v", e.Name(), err)
		}
		if m.ID != e.Name() {
			t.Errorf("file %s has id %s", e.Name(), m.ID)
		}
		storedReadable(t, e.Name(), m, b)
		out = append(out, msg{path: p, meta: m, body: string(b), st: fi.Sys().(*syscall.Stat_t), mode: fi.Mode()})
	}
	return out
}

// storedReadable checks what every stored message must pass on relayd's
// side: pickup's header scanner (message.ReadHeader with
// the shared limits) reads it, and the envelope passes the submission
// socket's validation unchanged.
func storedReadable(t *testing.T, name string, m *spool.Meta, body []byte) {
	t.Helper()
	if _, err := message.ReadHeader(bufio.NewReader(bytes.NewReader(body)), 0); err != nil {
		t.Errorf("%s: pickup's scanner refuses the stored message: %v", name, err)
	}
	env := m.Env
	env.Recipients = append([]string(nil), m.Env.Recipients...)
	if err := message.ValidateEnvelope(&env); err != nil || !reflect.DeepEqual(env, m.Env) {
		t.Errorf("%s: stored envelope does not validate unchanged: %v\n%+v\n%+v", name, err, env, m.Env)
	}
}

func (s *testSpool) one(t *testing.T) msg {
	t.Helper()
	f := s.files(t)
	if len(f) != 1 {
		t.Fatalf("%d files in maildrop, want 1", len(f))
	}
	return f[0]
}

func (s *testSpool) none(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.root, spool.DirMaildrop))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("maildrop not empty: %v", ents)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// invocation describes one run of sendmail.
type invocation struct {
	args   []string
	stdin  io.Reader
	env    []string // added to a minimal environment
	conf   string   // MAILSHIM_CONFIG (unprivileged runs)
	nobody bool     // run the setgid copy as nobody
	wrap   []string // command prefix inside setpriv (e.g. prlimit ...)
	shell  string   // run through sh -c with this script; "$SENDMAIL" is the binary
}

func runSendmail(t *testing.T, inv invocation) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin := binPath
	if inv.nobody {
		bin = sgPath
	}
	var argv []string
	if inv.nobody {
		argv = append(argv, "setpriv", "--reuid="+strconv.Itoa(nobodyUID), "--regid="+strconv.Itoa(nobodyUID), "--clear-groups")
	}
	argv = append(argv, inv.wrap...)
	if inv.shell != "" {
		argv = append(argv, "/bin/sh", "-c", inv.shell, "sh")
	} else {
		argv = append(argv, bin)
	}
	argv = append(argv, inv.args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "SENDMAIL=" + bin}, inv.env...)
	if inv.conf != "" {
		cmd.Env = append(cmd.Env, "MAILSHIM_CONFIG="+inv.conf)
	}
	cmd.Stdin = inv.stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sendmail %q did not finish: %v", inv.args, ctx.Err())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %q: %v", argv, err)
	}
	return r
}

// checkFailure asserts the exit code and the shape of the error output:
// exactly one "sendmail: ..." line, plus an optional hint, nothing on
// stdout.
func checkFailure(t *testing.T, r result, code int, substr string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d; stderr %q", r.code, code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) < 1 || len(lines) > 2 || !strings.HasPrefix(lines[0], "sendmail: ") ||
		len(lines) == 2 && !strings.HasPrefix(lines[1], "sendmail: hint: ") {
		t.Errorf("stderr not one line (+hint): %q", r.stderr)
	}
	if !strings.Contains(lines[0], substr) {
		t.Errorf("stderr %q does not say %q", lines[0], substr)
	}
}

func checkOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

const simple = "To: a@example.org\nSubject: hi\n\nhello\n"

func TestDeliverUnprivileged(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	r := runSendmail(t, invocation{args: []string{"-t", "-i", "-FTest User"}, conf: s.conf, stdin: strings.NewReader("To: a@example.org\r\nBcc: b@example.org\r\nSubject: hi\r\n\r\nbody\n")})
	checkOK(t, r)
	m := s.one(t)
	want := "To: a@example.org\nSubject: hi\nFrom: Test User <" + origin.UserName(os.Getuid()) + "@test.example>\n\nbody\n"
	if m.body != want {
		t.Errorf("body %q\nwant %q", m.body, want)
	}
	if strings.Join(m.meta.Env.Recipients, " ") != "a@example.org b@example.org" || m.meta.Env.Sender != "" || m.meta.Env.FullName != "Test User" {
		t.Errorf("envelope %+v", m.meta.Env)
	}
	if m.meta.Origin.UID != os.Getuid() || m.meta.Origin.Via != "maildrop" || m.meta.Origin.Mode != "t" || m.mode.Perm() != 0o440 {
		t.Errorf("origin %+v mode %v", m.meta.Origin, m.mode)
	}
}

// TestCallers replays every recorded real caller (test/callers): its argv,
// its input byte for byte, its trace environment.
func TestCallers(t *testing.T) {
	needBinary(t)
	type want struct {
		sender string
		rcpts  string
		code   int
	}
	rcpt12h := "rcpt1@example.org rcpt2@example.org hidden@example.org"
	all4 := "rcpt1@example.org rcpt2@example.org cc@example.org hidden@example.org"
	cases := map[string]want{
		"bsd-mailx-r":                    {"sender@example.org", "rcpt1@example.org", 0},
		"bsd-mailx":                      {"", all4, 0},
		"cron-d-root-mailto":             {"", "ops@example.org", 0},
		"cron-d-user":                    {"", "smtest", 0},
		"cron-user-crontab":              {"", "smtest", 0},
		"fail2ban-sendmail-ban":          {"fail2ban", "root", 0},
		"git-send-email-envelope-sender": {"dev@example.org", "maint@example.org dev@example.org", 0},
		"git-send-email":                 {"", "maint@example.org list@example.org dev@example.org bcc@example.org", 0},
		"php-cgi":                        {"", rcpt12h, 0},
		"php-fpm-clear":                  {"", rcpt12h, 0},
		"php-fpm-noclear":                {"", rcpt12h, 0},
		"php-fpm-xheader":                {"", rcpt12h, 0},
		"php-mail-arrayheaders":          {"", "rcpt1@example.org rcpt2@example.org", 0},
		"php-mail-f":                     {"bounce@example.org", rcpt12h, 0},
		"php-mail-noheaders":             {"", "rcpt1@example.org rcpt2@example.org", 0},
		"php-mail-plain":                 {"", rcpt12h, 0},
		"php-mail-xheader-rootowned":     {"", rcpt12h, 0},
		"php-mail-xheader":               {"", rcpt12h, 0},
		"phpmailer-nosender":             {"", "rcpt1@example.org cc@example.org hidden@example.org", 0},
		"phpmailer-sender":               {"webapp@example.org", "rcpt1@example.org cc@example.org hidden@example.org", 0},
		"python3-email-subprocess":       {"", "rcpt1@example.org hidden@example.org", 0},
		"s-nail-r":                       {"sender@example.org", "rcpt1@example.org", 0},
		"s-nail":                         {"", all4, 0},
		"setgid-closed-fds":              {"", "", 64}, // -t and an empty message: no recipients
		"setgid-php-mail":                {"", rcpt12h, 0},
		"symfony-bs-i-laravel-default":   {"webapp@example.org", all4, 0},
		"symfony-bs":                     {"webapp@example.org", all4, 0},
		"symfony-t-i":                    {"webapp@example.org", all4, 0},
		"symfony-t":                      {"webapp@example.org", all4, 0},
	}
	metas, _ := filepath.Glob("../../test/callers/*.meta.txt")
	if len(metas) < len(cases) {
		t.Fatalf("found %d caller records, want %d", len(metas), len(cases))
	}
	for _, mp := range metas {
		name := strings.TrimSuffix(filepath.Base(mp), ".meta.txt")
		w, ok := cases[name]
		if !ok {
			t.Errorf("caller %s has no expectation in this table", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			rec := readRecord(t, mp)
			eml, err := os.ReadFile(strings.TrimSuffix(mp, ".meta.txt") + ".eml")
			if err != nil {
				t.Fatal(err)
			}
			s := newSpool(t, false, "")
			stdin := eml
			smtp := contains(rec.argv, "-bs")
			if smtp {
				stdin = dialogue(t, strings.TrimSuffix(mp, ".meta.txt")+".dialog.txt", eml)
			}
			var env []string
			if v := rec.env["SCRIPT_FILENAME"]; v != "" {
				env = append(env, "SCRIPT_FILENAME="+v)
			}
			r := runSendmail(t, invocation{args: rec.argv, conf: s.conf, stdin: bytes.NewReader(stdin), env: env})
			if w.code != 0 {
				checkFailure(t, r, w.code, "no recipient")
				s.none(t)
				return
			}
			if r.code != 0 || r.stderr != "" || (!smtp && r.stdout != "") {
				t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			if smtp && !strings.Contains(r.stdout, "250 2.0.0 Ok: queued as ") {
				t.Errorf("SMTP dialogue %q", r.stdout)
			}
			m := s.one(t)
			if m.meta.Env.Sender != w.sender || strings.Join(m.meta.Env.Recipients, " ") != w.rcpts {
				t.Errorf("envelope sender %q rcpts %q, want %q %q", m.meta.Env.Sender, m.meta.Env.Recipients, w.sender, w.rcpts)
			}
			if want := expectedBody(eml, contains(rec.argv, "-t"), w.sender); m.body != want {
				t.Errorf("stored message\n%q\nwant\n%q", m.body, want)
			}
			o := m.meta.Origin
			wantMode := "bm"
			switch {
			case smtp:
				wantMode = "bs"
			case contains(rec.argv, "-t"):
				wantMode = "t"
			}
			if o.UID != os.Getuid() || o.Mode != wantMode || o.Via != "maildrop" {
				t.Errorf("origin %+v", o)
			}
			if v := rec.env["SCRIPT_FILENAME"]; v != "" && (o.Script != v || o.ScriptSource != "SCRIPT_FILENAME") {
				t.Errorf("script %q from %q, want %q from SCRIPT_FILENAME", o.Script, o.ScriptSource, v)
			}
			if h := phpHeader(eml); h != "" {
				uid, script, _ := strings.Cut(h, ":")
				mismatch := uid != strconv.Itoa(os.Getuid())
				if o.PHPHeader != h || o.PHPUIDMismatch != mismatch {
					t.Errorf("php header %q mismatch %v", o.PHPHeader, o.PHPUIDMismatch)
				}
				if !mismatch && rec.env["SCRIPT_FILENAME"] == "" && (o.Script != script || o.ScriptSource != "X-PHP-Originating-Script") {
					t.Errorf("script %q from %q", o.Script, o.ScriptSource)
				}
			}
			if strings.HasPrefix(name, "cron") && m.meta.Env.FullName != "CronDaemon" {
				t.Errorf("full name %q", m.meta.Env.FullName)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type record struct {
	argv []string
	env  map[string]string
}

func readRecord(t *testing.T, path string) record {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := record{env: map[string]string{}}
	inEnv := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "argv:"):
			f := strings.Fields(strings.TrimPrefix(l, "argv:"))
			rec.argv = f[1:]
		case strings.HasPrefix(l, "env ("):
			inEnv = true
		case inEnv && strings.HasPrefix(l, "  "):
			k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
			rec.env[k] = v
		default:
			inEnv = false
		}
	}
	return rec
}

// dialogue rebuilds a recorded -bs session: the client's lines, with the
// message (dot-stuffed) where the recording has "<N data lines>".
func dialogue(t *testing.T, path string, eml []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, l := range strings.Split(string(b), "\n") {
		c, ok := strings.CutPrefix(l, "C: ")
		if !ok {
			continue
		}
		if strings.HasPrefix(c, "<") {
			for _, line := range strings.SplitAfter(string(eml), "\n") {
				if strings.HasPrefix(line, ".") {
					out.WriteByte('.')
				}
				out.WriteString(line)
			}
			if !bytes.HasSuffix(eml, []byte("\n")) {
				out.WriteString("\r\n")
			}
			continue
		}
		u, err := strconv.Unquote(c)
		if err != nil {
			t.Fatalf("%s: %q: %v", path, c, err)
		}
		out.WriteString(u)
	}
	return out.Bytes()
}

// expectedBody is the message as sendmail must store it, computed
// independently of pkg/message: CRLF → LF, Bcc: removed with -t, a From:
// appended to the header when there is none.
func expectedBody(eml []byte, extract bool, sender string) string {
	s := strings.ReplaceAll(string(eml), "\r\n", "\n")
	hdr, body, sep := strings.Cut(s, "\n\n")
	var lines []string
	hasFrom := false
	for _, l := range strings.Split(hdr, "\n") {
		lk := strings.ToLower(l)
		if extract && strings.HasPrefix(lk, "bcc:") {
			continue
		}
		if strings.HasPrefix(lk, "from:") {
			hasFrom = true
		}
		lines = append(lines, l)
	}
	if !hasFrom {
		addr := origin.UserName(os.Getuid()) + "@test.example"
		if sender != "" {
			addr = sender
		}
		lines = append(lines, "From: "+addr)
	}
	out := strings.Join(lines, "\n")
	if sep {
		out += "\n\n" + body
	}
	return out
}

func phpHeader(eml []byte) string {
	for _, l := range strings.Split(strings.ReplaceAll(string(eml), "\r\n", "\n"), "\n") {
		if l == "" {
			break
		}
		if v, ok := strings.CutPrefix(l, "X-PHP-Originating-Script: "); ok {
			return v
		}
	}
	return ""
}

// TestInputShapes: what real callers send, as sendmail must store it.
func TestInputShapes(t *testing.T) {
	needBinary(t)
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name, in, want string
		args           []string
	}{
		{"lf", "Subject: a\n\nb\n", "Subject: a\nFrom: F\n\nb\n", nil},
		{"crlf", "Subject: a\r\n\r\nb\r\n", "Subject: a\nFrom: F\n\nb\n", nil},
		{"php mixed", "To: x@example.org\r\nSubject: a\r\n\r\nline1\nline2\n", "To: x@example.org\nSubject: a\nFrom: F\n\nline1\nline2\n", nil},
		{"8bit", "Subject: \xe4\n\n\xff\xfe\n", "Subject: \xe4\nFrom: F\n\n\xff\xfe\n", nil},
		{"no final newline", "Subject: a\n\nb", "Subject: a\nFrom: F\n\nb", nil},
		{"empty", "", "From: F\n", nil},
		{"nul and bare cr", "Subject: a\n\nx\x00y\rz\r\n", "Subject: a\nFrom: F\n\nx\x00y\rz\n", nil},
		{"998+ line", "Subject: a\n\n" + long + "\n", "Subject: a\nFrom: F\n\n" + long + "\n", nil},
		{"dot ends without -i", "Subject: a\n\nb\n.\nnot stored\n", "Subject: a\nFrom: F\n\nb\n", []string{"-odi"}},
		{"dot kept with -i", "Subject: a\n\nb\n.\nc\n", "Subject: a\nFrom: F\n\nb\n.\nc\n", []string{"-i"}},
		{"dot kept with -oi", "Subject: a\n\n.\n", "Subject: a\nFrom: F\n\n.\n", []string{"-oi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpool(t, false, "")
			args := append(append([]string{}, tt.args...), "-f", "F", "--", "rcpt@example.org")
			checkOK(t, runSendmail(t, invocation{args: args, conf: s.conf, stdin: strings.NewReader(tt.in)}))
			want := strings.ReplaceAll(tt.want, "From: F", "From: F@test.example")
			if m := s.one(t); m.body != want {
				t.Errorf("stored %q\nwant %q", short(m.body), short(want))
			}
		})
	}
}

// TestRefusals: every refusal is one line, the right code, and nothing
// stored.
func TestRefusals(t *testing.T) {
	needBinary(t)
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "x.php")
	tests := []struct {
		name   string
		args   []string
		in     string
		code   int
		substr string
	}{
		{"-X", []string{"-X" + victim, "-t"}, simple, 64, "refused"},
		{"-X separate", []string{"-X", victim, "-t"}, simple, 64, "refused"},
		{"-C", []string{"-C" + victim, "-t"}, simple, 64, "refused"},
		{"-O QueueDirectory", []string{"-O", "QueueDirectory=" + tmp, "-t"}, simple, 64, "refused"},
		{"-oQ", []string{"-oQ" + tmp, "-t"}, simple, 64, "refused"},
		{"-be", []string{"-be", "-t"}, simple, 64, "refused"},
		{"-bt", []string{"-bt"}, simple, 64, "refused"},
		{"-bd", []string{"-bd"}, simple, 64, "refused"},
		{"-d", []string{"-d0.1", "-t"}, simple, 64, "refused"},
		{"php 5th arg injection", []string{"-t", "-i", "-fa@example.org", "-X" + victim}, simple, 64, "refused"},
		{"option after recipient", []string{"a@example.org", "-X", victim}, simple, 67, "invalid recipient"},
		{"-f with LF", []string{"-f", "a@example.org\nBcc: evil@example.org", "-t"}, simple, 64, "sender"},
		{"-f with CR", []string{"-fa@example.org\rX: y", "-t"}, simple, 64, "sender"},
		{"-f with NUL-ish", []string{"-f", "a@exa\x01mple.org", "-t"}, simple, 64, "sender"},
		{"-f unparsable", []string{"-f", "a b c <", "-t"}, simple, 64, "sender"},
		{"-F with CRLF", []string{"-F", "Name\r\nBcc: evil@example.org", "-t"}, simple, 64, "full name"},
		// An invisible control is shown escaped: the line says which.
		{"-F with bidi control", []string{"-F", "Invoice \u202egpj.exe", "-t"}, simple, 64, `invalid full name "Invoice \u202egpj.exe" given with -F: it contains a control character`},
		{"-f with line separator", []string{"-f", "a\u2028b@example.org", "-t"}, simple, 64, `invalid sender address "a\u2028b@example.org" given with -f: it contains a control character`},
		{"shell metacharacters", []string{"--", "$(touch " + victim + ")@example.org"}, simple, 67, "invalid recipient"},
		{"semicolon", []string{"a@example.org;touch " + victim}, simple, 67, "invalid recipient"},
		{"pipe", []string{"|touch " + victim}, simple, 67, "invalid recipient"},
		{"file", []string{victim}, simple, 67, "invalid recipient"},
		{"header rcpt invalid", []string{"-t"}, "To: <a@b@c>\n\nx\n", 67, "invalid address \"<a@b@c>\" in the To: header: "},
		{"no recipients", []string{"-i"}, simple, 64, "no recipients"},
		{"no recipients -t", []string{"-t"}, "Subject: x\n\n", 64, "no recipient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpool(t, false, "")
			r := runSendmail(t, invocation{args: tt.args, conf: s.conf, stdin: strings.NewReader(tt.in)})
			checkFailure(t, r, tt.code, tt.substr)
			s.none(t)
			if _, err := os.Stat(victim); err == nil {
				t.Fatalf("%s was created", victim)
			}
		})
	}
}

func TestAcceptedOddities(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	// Backticks are valid atext: stored as data, never executed.
	checkOK(t, runSendmail(t, invocation{args: []string{"-N", "success,failure", "-R", "hdrs", "-V", "env1", "-B", "8BITMIME", "-Zq", "-oL9", "--", "`id`@example.org", "root"}, conf: s.conf, stdin: strings.NewReader(simple)}))
	m := s.one(t)
	e := m.meta.Env
	if strings.Join(e.Recipients, " ") != "`id`@example.org root" || e.Notify != "SUCCESS,FAILURE" || e.Ret != "HDRS" || e.EnvID != "env1" || e.BodyType != "8BITMIME" {
		t.Errorf("envelope %+v", e)
	}
	if strings.Join(m.meta.Origin.Ignored, " ") != "-Zq -oL9" {
		t.Errorf("ignored %q", m.meta.Origin.Ignored)
	}
}

// RFC 5322 comments are allowed around addresses: "root (System
// Administrator)", a leading "(Sales) sales@example.org", a nested
// comment after an address. They name the same recipients as without.
// (A comment inside an address, "$(id)@example.org", is refused: see
// TestRefusals.)
func TestCommentsInRecipientHeaders(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	in := "To: root (System Administrator), (Sales) sales@example.org\n" +
		"Cc: ops@example.org (the (nested) team), \"Billing\" <billing@example.org> (accounts), (x) <x@example.org>\n" +
		"Subject: comments\n\nbody\n"
	checkOK(t, runSendmail(t, invocation{args: []string{"-t", "-i"}, conf: s.conf, stdin: strings.NewReader(in)}))
	got := strings.Join(s.one(t).meta.Env.Recipients, " ")
	if want := "root sales@example.org ops@example.org billing@example.org x@example.org"; got != want {
		t.Errorf("recipients %q, want %q", got, want)
	}
}

// A double quote in a comment is a character of the comment (RFC 5322
// ctext), not the start of a quoted string: the comma after the comment
// still separates two recipients, and neither is dropped.
func TestQuoteInCommentKeepsRecipients(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	in := "To: root, a@example.org (the 19\" rack), Ops <ops@example.org>\n" +
		"Subject: quote in a comment\n\nbody\n"
	checkOK(t, runSendmail(t, invocation{args: []string{"-t", "-i"}, conf: s.conf, stdin: strings.NewReader(in)}))
	got := strings.Join(s.one(t).meta.Env.Recipients, " ")
	if want := "root a@example.org ops@example.org"; got != want {
		t.Errorf("recipients %q, want %q", got, want)
	}
}

func TestTenThousandRecipients(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	var args, hdr []string
	for i := 0; i < 10000; i++ {
		args = append(args, fmt.Sprintf("u%d@example.org", i))
		hdr = append(hdr, fmt.Sprintf("h%d@example.org", i))
	}
	checkOK(t, runSendmail(t, invocation{args: append([]string{"-t", "-i"}, args...), conf: s.conf,
		stdin: strings.NewReader("To: " + strings.Join(hdr, ",\n ") + "\nSubject: many\n\nx\n")}))
	if n := len(s.one(t).meta.Env.Recipients); n != 20000 {
		t.Fatalf("%d recipients stored", n)
	}
}

func TestTooLarge(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "max_message_size = 4096\n")
	r := runSendmail(t, invocation{args: []string{"-i", "a@example.org"}, conf: s.conf, stdin: strings.NewReader("Subject: x\n\n" + strings.Repeat("y", 5000))})
	checkFailure(t, r, 65, "too large")
	s.none(t)
	// A header alone over the limit too.
	r = runSendmail(t, invocation{args: []string{"-i", "a@example.org"}, conf: s.conf, stdin: strings.NewReader("Subject: " + strings.Repeat("y", 5000) + "\n\nx\n")})
	checkFailure(t, r, 65, "too large")
	s.none(t)
}

func TestSMTPMode(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	in := "EHLO client\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: 1\r\n\r\n..dot\r\n.\r\n" +
		"MAIL FROM:<>\r\nRCPT TO:<root>\r\nDATA\r\nSubject: 2\r\n\r\nx\r\n.\r\nQUIT\r\n"
	r := runSendmail(t, invocation{args: []string{"-bs"}, conf: s.conf, stdin: strings.NewReader(in)})
	if r.code != 0 || r.stderr != "" || strings.Count(r.stdout, "250 2.0.0 Ok: queued as") != 2 || !strings.HasSuffix(r.stdout, "221 2.0.0 Bye\r\n") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	f := s.files(t)
	if len(f) != 2 {
		t.Fatalf("%d files", len(f))
	}
	for _, m := range f {
		switch m.meta.Env.Sender {
		case "a@example.org":
			if m.body != "Subject: 1\nFrom: a@example.org\n\n.dot\n" || m.meta.Env.BodyType != "8BITMIME" {
				t.Errorf("message 1 %q %+v", m.body, m.meta.Env)
			}
		case "<>":
			if m.body != "Subject: 2\nFrom: "+origin.UserName(os.Getuid())+"@test.example\n\nx\n" || m.meta.Env.Recipients[0] != "root" {
				t.Errorf("message 2 %q %+v", m.body, m.meta.Env)
			}
		default:
			t.Errorf("unexpected %+v", m.meta.Env)
		}
	}
}

// The client goes away in the middle of DATA: nothing is stored, the exit
// status says so.
func TestSMTPModeTruncated(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	r := runSendmail(t, invocation{args: []string{"-bs"}, conf: s.conf, stdin: strings.NewReader("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhalf")})
	if r.code != 74 || !strings.Contains(r.stderr, "ended in the middle of the message") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
	s.none(t)
}

// The client goes away inside the header section of DATA: the same
// line as in the body, which says that nothing was sent, not a bare
// "unexpected EOF".
func TestSMTPModeTruncatedHeader(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "")
	for _, in := range []string{
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: x\r\n",
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubj",
		"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
	} {
		r := runSendmail(t, invocation{args: []string{"-bs"}, conf: s.conf, stdin: strings.NewReader(in)})
		if r.code != 74 || r.stderr != "sendmail: the input ended in the middle of the message; message not sent\n" {
			t.Errorf("%q: exit %d stderr %q", in, r.code, r.stderr)
		}
	}
	s.none(t)
}

// A smuggled end of DATA after the point where the message was already
// refused (too large here; a full spool likewise): the client is answered
// 521 for the smuggling, and the exit status and the error line say the
// same, not the refusal the client never saw.
func TestSMTPModeSmuggledAfterRefusal(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "max_message_size = 200\n")
	in := "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: x\r\n\r\n" + strings.Repeat("y", 300) +
		"\r\n\n.\nMAIL FROM:<>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"
	r := runSendmail(t, invocation{args: []string{"-bs"}, conf: s.conf, stdin: strings.NewReader(in)})
	if !strings.Contains(r.stdout, "521 5.5.2 ") || strings.Contains(r.stdout, "queued as") {
		t.Fatalf("stdout %q", r.stdout)
	}
	if r.code != 65 || r.stderr != "sendmail: "+message.ErrBareDataEnd.Error()+"\n" {
		t.Errorf("exit %d stderr %q, want 65 and the smuggling", r.code, r.stderr)
	}
	s.none(t)
}

// A header over the limit in -bs: refused in the reply to DATA, and, as
// every failure, one "sendmail: ..." line on stderr with the exit status.
func TestSMTPModeHeaderTooLarge(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "max_message_size = 4096\n")
	in := "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: " + strings.Repeat("y", 5000) + "\r\n\r\nx\r\n.\r\nQUIT\r\n"
	r := runSendmail(t, invocation{args: []string{"-bs"}, conf: s.conf, stdin: strings.NewReader(in)})
	if r.code != 65 || !strings.Contains(r.stdout, "552 5.3.4 ") || strings.Contains(r.stdout, "queued as") {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); !strings.HasPrefix(lines[0], "sendmail: ") || !strings.Contains(lines[0], "too large") {
		t.Errorf("stderr %q", r.stderr)
	}
	s.none(t)
}

func TestQueryModes(t *testing.T) {
	needBinary(t)
	s := newSpool(t, false, "[aliases]\nroot = \"ops@example.org\"\n")
	for _, args := range [][]string{{"-bp"}, {"-q"}} {
		r := runSendmail(t, invocation{args: args, conf: s.conf})
		checkFailure(t, r, 69, "relayd is not running")
	}
	checkOK(t, runSendmail(t, invocation{args: []string{"-bi"}, conf: s.conf}))
	r := runSendmail(t, invocation{args: []string{"-bv", "root", "a@example.org"}, conf: s.conf})
	if r.code != 0 || !strings.Contains(r.stdout, "root... deliverable") {
		t.Errorf("-bv: %+v", r)
	}
	r = runSendmail(t, invocation{args: []string{"-bv", "|x"}, conf: s.conf})
	if r.code != 67 {
		t.Errorf("-bv invalid: %+v", r)
	}
}

// TestSubmitSocket: not setgid and the maildrop not writable (as with
// NoNewPrivileges=), sendmail hands the message to relayd's submission
// socket; here a real submitsock.Serve stores it. Without the socket, it fails
// saying which two paths it tried.
func TestSubmitSocket(t *testing.T) {
	s, sock := socketSpool(t)
	store := filepath.Join(filepath.Dir(s.conf), "store")
	os.Mkdir(store, 0o700)

	runIt := func() result {
		return runSendmail(t, unprivileged(invocation{args: []string{"-t", "-i"}, stdin: strings.NewReader(simple)}, s.conf))
	}
	r := runIt()
	checkFailure(t, r, 74, "submission socket")
	if !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, sock) || strings.Contains(r.stderr, "<nil>") {
		t.Errorf("does not say why each path failed: %q", r.stderr)
	}

	ln := listenSubmit(t, sock)
	errs := make(chan error, 1)
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			errs <- err
			return
		}
		errs <- (&submitsock.Server{Intake: submit.Intake{Store: submittest.DropStore(store, 1<<20)}}).Serve(c)
	}()
	checkOK(t, runIt())
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	st := &testSpool{root: filepath.Dir(store)}
	ents, _ := os.ReadDir(store)
	if len(ents) != 1 {
		t.Fatalf("stored %d", len(ents))
	}
	_ = st
	f, _ := os.Open(filepath.Join(store, ents[0].Name()))
	defer f.Close()
	fi, _ := f.Stat()
	m, err := spool.Decode(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	wantUID := os.Getuid()
	if os.Geteuid() == 0 {
		wantUID = nobodyUID
	}
	if m.Origin.UID != wantUID || m.Origin.Via != "socket" || m.Env.Recipients[0] != "a@example.org" {
		t.Errorf("meta %+v", m)
	}
}

// A relayd that goes away after the whole message reached it, without
// an answer or with one that is not valid (garbage, or a line without
// end), may have stored the message: sendmail says so (74, one line and
// a hint to look in the queue), not that the socket was unavailable and
// that sendmail should be installed setgid or relayd started, and it
// reads no more than a line's worth of a endless answer.
func TestSubmitSocketNoAnswer(t *testing.T) {
	for name, answer := range map[string]string{
		"none":    "",
		"garbage": "250 ok\n",
		"endless": strings.Repeat("x", 1<<20),
	} {
		t.Run(name, func(t *testing.T) {
			s, sock := socketSpool(t)
			ln := listenSubmit(t, sock)
			got := make(chan string, 1)
			go func() {
				c, err := ln.AcceptUnix()
				if err != nil {
					got <- err.Error()
					return
				}
				// The client shuts its write side down after the end chunk.
				b, _ := io.ReadAll(c)
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte(answer))
				c.Close()
				got <- string(b)
			}()
			r := runSendmail(t, unprivileged(invocation{args: []string{"-t", "-i"}, stdin: strings.NewReader(simple)}, s.conf))
			if b := <-got; !strings.HasSuffix(b, "\n0\n") {
				t.Fatalf("the server did not read the end of the message: %q", b)
			}
			checkFailure(t, r, 74, "may have been stored")
			if strings.Contains(r.stderr, "unavailable") || strings.Contains(r.stderr, "setgid") || !strings.Contains(r.stderr, "mailq") || len(r.stderr) > 2048 {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
}

// socketSpool is a spool whose maildrop/ the caller of unprivileged may
// not write (as with NoNewPrivileges=), so that sendmail stores through
// relayd's submission socket, at sock, which the test serves.
func socketSpool(t *testing.T) (s *testSpool, sock string) {
	t.Helper()
	needBinary(t)
	if os.Geteuid() == 0 {
		// root can write any maildrop: the plain binary runs as nobody.
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("SKIPPED: setpriv not installed")
		}
	}
	s = newSpool(t, false, "")
	if err := os.Chmod(filepath.Join(s.root, spool.DirMaildrop), 0o500); err != nil {
		t.Fatal(err)
	}
	return s, filepath.Join(filepath.Dir(s.conf), "submit.sock")
}

// listenSubmit listens on the submission socket sock, open to every
// user, until the test ends.
func listenSubmit(t *testing.T, sock string) *net.UnixListener {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	return ln
}

// unprivileged is inv run by a caller that may write neither the maildrop
// (its test sets maildrop/ 0500) nor anything else of the spool: as
// nobody when the tests run as root (root writes any directory), else as
// this user, with conf as its configuration.
func unprivileged(inv invocation, conf string) invocation {
	if os.Geteuid() == 0 {
		inv.wrap = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "MAILSHIM_CONFIG=" + conf}
		inv.shell = `exec "$SENDMAIL" "$@"`
	} else {
		inv.conf = conf
	}
	return inv
}

// -bs answers each refusal of the pipeline with the reply of the table
// every SMTP door shares (relayd's listener is held to it in pkg/smtpd),
// here refusals of relayd's submission socket, which a sendmail that is
// not setgid stores through; its exit status is the refusal's code.
func TestSMTPModeRefusals(t *testing.T) {
	s, sock := socketSpool(t)
	ln := listenSubmit(t, sock)
	refusals := make(chan *submit.Error, 1)
	srv := &submitsock.Server{Intake: submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return "", err
		}
		return "", <-refusals
	}}}
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			srv.Serve(c)
		}
	}()
	in := "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
	for _, rf := range submittest.Refusals {
		refusals <- rf.Err
		r := runSendmail(t, unprivileged(invocation{args: []string{"-bs"}, stdin: strings.NewReader(in)}, s.conf))
		lines := strings.Split(r.stdout, "\r\n")
		if len(lines) < 3 || lines[len(lines)-2] != "221 2.0.0 Bye" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", rf.Name, r.code, r.stdout, r.stderr)
		}
		if got := lines[len(lines)-3]; !strings.HasPrefix(got, rf.Want+" ") || !strings.Contains(got, rf.Err.Msg) {
			t.Errorf("%s: DATA answered %q, want %s ... %s", rf.Name, got, rf.Want, rf.Err.Msg)
		}
		if r.code != rf.Err.Code {
			t.Errorf("%s: exit %d, want %d", rf.Name, r.code, rf.Err.Code)
		}
	}
}

// waitFor is waitfor.True under the name these tests used before it
// was shared; new code calls waitfor.True.
var waitFor = waitfor.True

var _ = bufio.NewReader

func short(s string) string {
	if len(s) > 200 {
		return s[:100] + "..." + s[len(s)-100:]
	}
	return s
}

// patternReader yields n bytes of printable lines without holding them.
type patternReader struct{ n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	for i := range b {
		if (p.n-int64(i))%77 == 0 {
			b[i] = '\n'
		} else {
			b[i] = 'a' + byte((p.n-int64(i))%26)
		}
	}
	p.n -= int64(len(b))
	return len(b), nil
}

// A 100 MB message is streamed to the spool: sendmail's peak RSS stays
// under 20 MB (the bound docs/BENCHMARKS.md measures too). The peak is
// VmHWM of sendmail's own memory map, read from /proc once the whole
// message has been written to its stdin: the rusage of a child forked
// from this test process also counts this process's memory (the child
// shares it until exec), which under -race alone is over 60 MB.
func TestLargeMessageMemory(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("SKIPPED in -short: writes 100 MB")
	}
	s := newSpool(t, false, "max_message_size = \"200MB\"\n")
	const size = 100 << 20
	cmd := exec.Command(binPath, "-i", "a@example.org")
	cmd.Env = []string{"MAILSHIM_CONFIG=" + s.conf}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(stdin, io.MultiReader(strings.NewReader("Subject: big\n\n"), &patternReader{n: size})); err != nil {
		t.Fatalf("write: %v: %s", err, stderr.String())
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	var rss int64 // KB
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			rss, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	if rss == 0 {
		t.Fatalf("no VmHWM in /proc/PID/status:\n%s", status)
	}
	if rss > 20<<10 {
		t.Errorf("peak RSS %d KB, want < 20 MB", rss)
	}
	md := filepath.Join(s.root, spool.DirMaildrop)
	ents, _ := os.ReadDir(md)
	if len(ents) != 1 {
		t.Fatalf("%d files", len(ents))
	}
	f, _ := os.Open(filepath.Join(md, ents[0].Name()))
	defer f.Close()
	fi, _ := f.Stat()
	m, err := spool.Decode(f, fi.Size())
	if err != nil || m.Size < size {
		t.Fatalf("size %d, %v", m.Size, err)
	}
	t.Logf("peak RSS %d KB for a %d MB message", rss, size>>20)
}

// Through the submission socket, the commit is relayd's: once sendmail
// has sent the end of the message, relayd may store it, and a signal
// must not end sendmail then (its caller would take the message for lost
// and send it again). The server here sends SIGTERM to sendmail after
// reading the whole message and before storing and answering it:
// sendmail must wait for the answer and exit 0. In -bs the signal cuts
// the session short (74), and its line says that the message being
// stored was stored, though not answered; when relayd stores it and goes
// away without an answer (a shutdown that stops both), that it may have
// been stored.
func TestSubmitSocketSignalAtCommit(t *testing.T) {
	// No QUIT: the session goes on after the message.
	const bsIn = "HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
	for _, tc := range []struct {
		name string
		args []string
		in   string
	}{
		{"deliver", []string{"-t", "-i"}, simple},
		{"bs", []string{"-bs"}, bsIn},
		{"bs-noanswer", []string{"-bs"}, bsIn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, sock := socketSpool(t)
			store := filepath.Join(filepath.Dir(s.conf), "store")
			os.Mkdir(store, 0o700)
			ln := listenSubmit(t, sock)
			drop := submittest.DropStore(store, 1<<20)
			errs := make(chan error, 1)
			go func() {
				c, err := ln.AcceptUnix()
				if err != nil {
					errs <- err
					return
				}
				cred, err := sockserve.PeerCred(c)
				if err != nil {
					errs <- err
					return
				}
				pid := int(cred.Pid)
				errs <- (&submitsock.Server{Intake: submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
					var buf bytes.Buffer
					if _, err := io.Copy(&buf, body); err != nil {
						return "", err
					}
					syscall.Kill(pid, syscall.SIGTERM)
					// Give the signal time to end sendmail if it can:
					// its process becomes a zombie.
					deadline := time.Now().Add(2 * time.Second)
					for time.Now().Before(deadline) {
						b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
						if err != nil || strings.Contains(string(b), ") Z ") {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
					id, err := drop(m, &buf)
					if tc.name == "bs-noanswer" {
						c.Close() // stored, and gone without an answer
					}
					return id, err
				}}}).Serve(c)
			}()
			// -bs: the input stays open for 3 s after the message,
			// longer than sendmail takes once it has the answer.
			var in io.Reader = strings.NewReader(tc.in)
			if tc.name != "deliver" {
				in = io.MultiReader(in, slowEOF(3*time.Second))
			}
			r := runSendmail(t, unprivileged(invocation{args: tc.args, stdin: in}, s.conf))
			<-errs
			if tc.name == "deliver" {
				checkOK(t, r)
			} else if tc.name == "bs-noanswer" {
				// The session's own report of the missing answer may
				// come before the handler's line.
				if r.code != 74 || !strings.Contains(r.stderr, "sendmail: interrupted by terminated, SMTP session cut short: the message being stored when the signal came may have been stored") {
					t.Errorf("exit %d, stderr %q; want 74 and the signal's line saying the message may have been stored", r.code, r.stderr)
				}
			} else if r.code != 74 || !strings.HasPrefix(r.stderr, "sendmail: interrupted by terminated") ||
				!strings.Contains(r.stderr, "the message being stored when the signal came was stored") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 74 and one line saying the message was stored", r.code, r.stderr)
			}
			if ents, _ := os.ReadDir(store); len(ents) != 1 {
				t.Fatalf("stored %d", len(ents))
			}
		})
	}
}

// slowEOF is a reader that gives io.EOF after d.
type slowEOF time.Duration

func (d slowEOF) Read([]byte) (int, error) {
	time.Sleep(time.Duration(d))
	return 0, io.EOF
}

// The -bs client goes away after the end of DATA, before reading the
// reply (a PHP request killed by its time limit): the message is stored
// and will be sent, so the error line must say so, not only that the
// write failed; a client gone before DATA's end stored nothing, and the
// line says that too.
func TestSMTPModeClientGone(t *testing.T) {
	needBinary(t)
	for _, c := range []struct {
		name, before, after string
		stored              int
		says                string
	}{
		{"after-data", "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n", "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n", 1,
			"the 1 message(s) stored in this session (answered or not) stay queued"},
		{"before-data", "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\n", "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n", 0,
			"no message of this session was stored"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSpool(t, false, "")
			cmd := exec.Command(binPath, "-bs")
			cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.conf}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			outR, outW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			var errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = outW, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			outW.Close()
			io.WriteString(stdin, c.before)
			// Read the replies to what was sent, then go away.
			want := strings.Count(c.before, "\r\n") + 1
			br := bufio.NewReader(outR)
			for i := 0; i < want; i++ {
				if _, err := br.ReadString('\n'); err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
			}
			outR.Close()
			io.WriteString(stdin, c.after)
			stdin.Close()
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 74 {
				t.Fatalf("exit %v, want 74; stderr %q", err, errb.String())
			}
			if got := len(s.files(t)); got != c.stored {
				t.Fatalf("%d messages stored, want %d", got, c.stored)
			}
			lines := strings.Split(strings.TrimSuffix(errb.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "sendmail: SMTP session: ") || !strings.Contains(lines[0], c.says) {
				t.Errorf("stderr %q does not say %q", errb.String(), c.says)
			}
		})
	}
}
