package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// relayd tls-init, the real binary, into a private directory (no system
// trust store: --no-update-ca and a trust file in the temp dir).
func TestTLSInit(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	trust := filepath.Join(dir, "trust", "mailshim-local-ca.crt")
	cfg := filepath.Join(dir, "mailshim.conf")
	writeConf := func(host string) {
		if err := os.WriteFile(cfg, []byte("hostname = \""+host+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("web1.example.com")
	tlsInit := func(args ...string) string {
		t.Helper()
		full := append([]string{"tls-init", "--config", cfg, "--dir", tlsDir, "--trust-file", trust, "--no-update-ca", "--group", ""}, args...)
		out, err := exec.Command(relaydBin, full...).CombinedOutput()
		if err != nil {
			t.Fatalf("relayd %s: %v\n%s", strings.Join(full, " "), err, out)
		}
		return string(out)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(tlsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	out := tlsInit()
	if !strings.Contains(out, "new certificate") || !strings.Contains(out, "web1.example.com") ||
		!strings.Contains(out, "systemctl restart relayd") {
		t.Errorf("first run: %s", out)
	}
	for name, mode := range map[string]os.FileMode{"local.key": 0o640, "local.crt": 0o644, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(tlsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if fi, _ := os.Stat(tlsDir); fi.Mode().Perm() != 0o750 {
		t.Errorf("%s: mode %v, want 0750", tlsDir, fi.Mode().Perm())
	}
	trusted, err := os.ReadFile(trust)
	if err != nil || !bytes.Equal(trusted, read("ca.crt")) {
		t.Fatalf("trust file %s: %v (equal to ca.crt: %v)", trust, err, bytes.Equal(trusted, read("ca.crt")))
	}
	if matches, _ := filepath.Glob(filepath.Join(tlsDir, ".*tmp*")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	// What a client sees: the chain served by a TLS server verifies for
	// every local name with only the trusted CA as root.
	cert, err := tls.X509KeyPair(read("local.crt"), read("local.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
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
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(trusted)
	host, _ := os.Hostname()
	for _, name := range []string{"127.0.0.1", "localhost", "web1.example.com", host, "::1"} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Errorf("TLS to the listener's certificate as %s: %v", name, err)
			continue
		}
		c.Close()
	}
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "www.example.com"}); err == nil {
		c.Close()
		t.Error("the certificate verified for www.example.com")
	}

	// Again: nothing to do, nothing rewritten.
	key := read("local.key")
	out = tlsInit()
	if !strings.Contains(out, "nothing to do") || !bytes.Equal(key, read("local.key")) {
		t.Errorf("second run renewed: %s", out)
	}
	// A new host name is not covered: a new CA and leaf.
	writeConf("web2.example.com")
	out = tlsInit()
	if !strings.Contains(out, "new certificate") || !strings.Contains(out, "not valid for web2.example.com") {
		t.Errorf("after the host name changed: %s", out)
	}
	if bytes.Equal(key, read("local.key")) {
		t.Error("key not replaced after the host name changed")
	}
	// Within --renew-before of expiry: renewed.
	key = read("local.key")
	out = tlsInit("--renew-before", "19801h", "--validity", "20000h")
	if !strings.Contains(out, "expires") || bytes.Equal(key, read("local.key")) {
		t.Errorf("near expiry: %s", out)
	}
	// The trust file replaced by someone else's CA: renewed.
	os.WriteFile(trust, []byte("not ours\n"), 0o644)
	out = tlsInit()
	if !strings.Contains(out, "is not the CA in") {
		t.Errorf("foreign trust file: %s", out)
	}
	// --force always, --name adds a name.
	out = tlsInit("--force", "--name", "mail.example.net")
	if !strings.Contains(out, "--force") || !strings.Contains(out, "mail.example.net") {
		t.Errorf("--force --name: %s", out)
	}
	leaf, err := tls.X509KeyPair(read("local.crt"), read("local.key"))
	if err != nil {
		t.Fatal(err)
	}
	if x, _ := x509.ParseCertificate(leaf.Certificate[0]); x == nil || !containsString(x.DNSNames, "mail.example.net") {
		t.Errorf("leaf names: %v", x.DNSNames)
	}
}

func TestTLSInitUsage(t *testing.T) {
	for _, args := range [][]string{{"tls-init", "extra"}, {"tls-init", "--bogus"}, {"tls-init", "--validity", "1h"}} {
		c := exec.Command(relaydBin, args...)
		out, err := c.CombinedOutput()
		if code := exitStatus(err); code != 64 {
			t.Errorf("relayd %v: exit %d, want 64\n%s", args, code, out)
		}
		if !strings.HasPrefix(string(out), "relayd: tls-init: ") {
			t.Errorf("relayd %v: %q", args, out)
		}
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
