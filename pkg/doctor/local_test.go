package doctor

import (
	"context"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/packaging"
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

func TestCheckHostname(t *testing.T) {
	for h, ok := range map[string]bool{
		"web1.example.com": true, "web1": false, "": false, "localhost.localdomain": false, "192.0.2.1": false, "host.local": false,
	} {
		if c := checkHostname(h); (c.Status == OK) != ok {
			t.Errorf("%q: %s %s", h, c.Status, c.Saw)
		}
	}
}

func TestCheckSecrets(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "secret")
	os.WriteFile(f, []byte("pw\n"), 0o600)
	cfg := &config.Config{Upstreams: []config.Upstream{{Host: "h", PasswordFile: f}}}
	me := spool.CurrentOwner()
	if c := checkSecrets(LocalOptions{Config: cfg, Owner: me}); c.Status != OK {
		t.Fatalf("0600, ours: %+v", c)
	}
	os.Chmod(f, 0o640)
	if c := checkSecrets(LocalOptions{Config: cfg, Owner: me}); c.Status != Fail || !strings.Contains(c.Fix, "chmod 600") {
		t.Fatalf("0640: %+v", c)
	}
	os.Chmod(f, 0o600)
	other := me
	other.UID = me.UID + 1
	if c := checkSecrets(LocalOptions{Config: cfg, Owner: other}); c.Status != Fail || !strings.Contains(c.Saw, "relayd cannot read it") {
		t.Fatalf("another owner: %+v", c)
	}
}

// A 421 greeting stops the checks at the greeting, with the reply.
func TestGreeting421(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("421 4.3.2 mx.example.net Service not available, closing transmission channel\r\n"))
			c.Close()
		}
	}()
	up := config.Upstream{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}
	cs := Upstream(context.Background(), 1, up, UpstreamOptions{Hostname: "web1.example.com", Timeout: 5 * time.Second})
	f := firstFail(cs)
	if f == nil || f.Name != CGreeting || !strings.HasPrefix(f.Reply, "421 4.3.2 mx.example.net Service not available") {
		t.Fatalf("%+v", f)
	}
	if last := cs[len(cs)-1]; last.Status != Skipped || !strings.Contains(last.Saw, "after the failure at greeting") {
		t.Fatalf("after the greeting: %+v", last)
	}
}

func TestCheckListen(t *testing.T) {
	srv := smtptest.New(t, smtptest.Options{})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	cfg := &config.Config{}
	cfg.Listen.Enabled = true
	cfg.Listen.Addresses = []string{"127.0.0.1"}
	// smtptest offers STARTTLS with a certificate from its own CA, which
	// the system does not trust: a warning.
	cfg.Listen.Ports = []int{srv.Port}
	if c := checkListen(LocalOptions{Config: cfg, Timeout: 5 * time.Second}); c.Status != Warn || !strings.Contains(c.Fix, "relayd tls-init") {
		t.Fatalf("untrusted certificate: %+v", c)
	}
	cfg.Listen.Ports = []int{srv.Port, closedPort}
	if c := checkListen(LocalOptions{Config: cfg, Timeout: 5 * time.Second}); c.Status != Fail || !strings.Contains(c.Saw, strconv.Itoa(closedPort)) {
		t.Fatalf("nothing listening: %+v", c)
	}
	// Trusted (its CA given as the roots), but for the loopback names
	// only: an application configured with the host name as its SMTP
	// host refuses it.
	cfg.Listen.Ports = []int{srv.Port}
	cfg.Hostname = "web1.example.com"
	if c := checkListen(LocalOptions{Config: cfg, Timeout: 5 * time.Second, Roots: srv.CAPool}); c.Status != Warn ||
		!strings.Contains(c.Saw, "web1.example.com") || !strings.Contains(c.Fix, "relayd tls-init") {
		t.Fatalf("a certificate without the host name: %+v", c)
	}
	cfg.Hostname = "localhost"
	if c := checkListen(LocalOptions{Config: cfg, Timeout: 5 * time.Second, Roots: srv.CAPool}); c.Status != OK {
		t.Fatalf("a certificate for every name: %+v", c)
	}
	cfg.Listen.Enabled = false
	if c := checkListen(LocalOptions{Config: cfg}); c.Status != Skipped {
		t.Fatalf("disabled: %+v", c)
	}
}

func TestCheckLayout(t *testing.T) {
	root := t.TempDir()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/sbin/relayd"), nil, 0o755)
	os.Chmod(filepath.Join(root, "usr/sbin/relayd"), 0o755)
	os.Symlink("../sbin/relayd", filepath.Join(root, "usr/lib-link"))
	entries := []packaging.Entry{
		{Type: "f", Path: "/usr/sbin/relayd", Owner: u.Username, Group: g.Name, Mode: "0755"},
		{Type: "l", Path: "/usr/lib-link", Owner: "-", Group: "-", Mode: "-", Source: "../sbin/relayd"},
		{Type: "m", Path: "/usr/share/man/man8/relayd.8.gz", Owner: "root", Group: "root", Mode: "0644"},
		{Type: "f", Path: "/usr/share/mailshim/dashboard.json", Owner: "root", Group: "root", Mode: "0644"},
	}
	o := LocalOptions{Config: &config.Config{}, Layout: entries, Root: root}
	if c := checkLayout(o); c.Status != OK || !strings.Contains(c.Saw, "2 installed paths") {
		t.Fatalf("as installed: %+v", c)
	}
	os.Chmod(filepath.Join(root, "usr/sbin/relayd"), 0o775)
	if c := checkLayout(o); c.Status != Fail || !strings.Contains(c.Fix, "chmod 0755 /usr/sbin/relayd") {
		t.Fatalf("group-writable binary: %+v", c)
	}
	o.Layout = nil
	if c := checkLayout(o); c.Status != Skipped {
		t.Fatalf("no layout: %+v", c)
	}
}
