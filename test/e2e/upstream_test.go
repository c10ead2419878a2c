//go:build e2e

package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// Upstream is a running real Postfix started by postfix/upstream.sh: a
// submission server on 127.0.0.1 requiring STARTTLS and SASL AUTH, which
// delivers everything it accepts into one Maildir.
type Upstream struct {
	Dir      string
	Port     int
	CAFile   string
	User     string
	Password string
	Maildir  string
	LogFile  string
}

// Addr is host:port for an SMTP client.
func (u *Upstream) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(u.Port)) }

// TLSConfig trusts the test CA only.
func (u *Upstream) TLSConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(u.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", u.CAFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, nil
}

// Start runs `upstream.sh start`; Stop runs `upstream.sh stop`. Both wait
// (with the script's own deadline) until the port answers or is closed.
func (u *Upstream) Start() error { return upstreamScript("start", u.Dir) }
func (u *Upstream) Stop() error  { return upstreamScript("stop", u.Dir) }

// Log returns Postfix's log so far (for failure messages).
func (u *Upstream) Log() string {
	b, _ := os.ReadFile(u.LogFile)
	return string(b)
}

func scriptPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "postfix", "upstream.sh")
}

func upstreamScript(cmd, dir string) error {
	c := exec.Command("bash", scriptPath(), cmd, dir)
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("upstream.sh %s %s: %v\n%s", cmd, dir, err, out)
	}
	return nil
}

// newUpstream sets up and starts a Postfix in a fresh directory under the
// system temp dir (its daemons run as an unprivileged user, which must be
// able to reach the directory: t.TempDir's parents are private).
func newUpstream() (*Upstream, error) {
	dir, err := os.MkdirTemp("", "mailshim-e2e-upstream-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	u := &Upstream{Dir: dir}
	if err := u.Start(); err != nil {
		return nil, err
	}
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b)), err
	}
	p, err := read("port")
	if err != nil {
		return nil, err
	}
	if u.Port, err = strconv.Atoi(p); err != nil {
		return nil, fmt.Errorf("%s/port: %v", dir, err)
	}
	if u.User, err = read("user"); err != nil {
		return nil, err
	}
	if u.Password, err = read("password"); err != nil {
		return nil, err
	}
	u.CAFile = filepath.Join(dir, "ca.pem")
	u.Maildir = filepath.Join(dir, "Maildir")
	u.LogFile = filepath.Join(dir, "log", "postfix.log")
	return u, nil
}

var (
	sharedMu  sync.Mutex
	shared    *Upstream
	sharedErr error
)

// sharedUpstream returns the Postfix shared by every test of the run,
// starting it on first use. TestMain stops it.
func sharedUpstream(t testing.TB) *Upstream {
	t.Helper()
	requireRoot(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = newUpstream()
	}
	if sharedErr != nil {
		t.Fatalf("starting the Postfix upstream: %v", sharedErr)
	}
	// A test that stopped it for a while must have restarted it; make sure.
	if err := shared.Start(); err != nil {
		t.Fatalf("Postfix upstream: %v", err)
	}
	return shared
}

func stopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		return
	}
	if err := shared.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if os.Getenv("MAILSHIM_E2E_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "e2e: upstream directory kept: %s\n", shared.Dir)
		return
	}
	os.RemoveAll(shared.Dir)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root (runs a real Postfix, installs packages, creates users); CI runs as root")
	}
}

// Delivered is one message from the upstream's Maildir.
type Delivered struct {
	Path   string
	Raw    []byte
	Header mail.Header
	Body   []byte
}

// Messages returns every message in the Maildir (new/ and cur/), oldest
// first.
func (u *Upstream) Messages() ([]*Delivered, error) {
	var paths []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(u.Maildir, sub))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				paths = append(paths, filepath.Join(u.Maildir, sub, e.Name()))
			}
		}
	}
	// Maildir names start with the delivery time in seconds.
	sort.Strings(paths)
	var out []*Delivered
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p, err)
		}
		body := raw[bytes.Index(raw, []byte("\n\n"))+2:]
		out = append(out, &Delivered{Path: p, Raw: raw, Header: m.Header, Body: body})
	}
	return out, nil
}

// WaitMessages polls the Maildir until at least n messages satisfy match,
// and returns them; it fails the test at the deadline.
func (u *Upstream) WaitMessages(t testing.TB, n int, limit time.Duration, what string, match func(*Delivered) bool) []*Delivered {
	t.Helper()
	var got []*Delivered
	ok := waitfor.Poll(limit, func() bool {
		all, err := u.Messages()
		if err != nil {
			t.Fatalf("reading %s: %v", u.Maildir, err)
		}
		got = got[:0]
		for _, m := range all {
			if match(m) {
				got = append(got, m)
			}
		}
		return len(got) >= n
	})
	if !ok {
		t.Fatalf("%s: %d of %d message(s) in %s after %v\n--- postfix log (tail) ---\n%s",
			what, len(got), n, u.Maildir, limit, tail(u.Log(), 40))
	}
	return got
}

// WaitMessage waits for one message containing token (anywhere in its
// bytes) and returns it.
func (u *Upstream) WaitMessage(t testing.TB, token string, limit time.Duration) *Delivered {
	t.Helper()
	return u.WaitMessages(t, 1, limit, "message "+token, func(m *Delivered) bool {
		return bytes.Contains(m.Raw, []byte(token))
	})[0]
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// token returns a string unique to this test run, to find its message.
func token(t testing.TB) string {
	return fmt.Sprintf("e2e-%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), time.Now().UnixNano())
}
