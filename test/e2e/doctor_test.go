//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// relayd doctor against a real Postfix, misconfigured one way at a time
// (postconf + reload on one instance of its own), and the installed
// mailshim with the suite's relayd running. Each case asserts doctor's
// first ✘ line and its cause and fix.

// doctorPostfix is the doctor's own Postfix: its main.cf as the harness
// wrote it, restored before every case.
type doctorPostfix struct {
	*Upstream
	mainCF []byte
}

func (p *doctorPostfix) bin(name string) string {
	return filepath.Join(p.Dir, "root", "usr", "sbin", name)
}

func (p *doctorPostfix) env() []string {
	return append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(p.Dir, "root", "usr", "lib", "postfix"))
}

// configure restores the harness's main.cf, applies settings (postconf -e
// "k = v" ...) and reloads Postfix.
func (p *doctorPostfix) configure(t *testing.T, settings ...string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(p.Dir, "etc", "main.cf"), p.mainCF, 0o644), "restore main.cf")
	if len(settings) > 0 {
		c := exec.Command(p.bin("postconf"), append([]string{"-c", filepath.Join(p.Dir, "etc"), "-e"}, settings...)...)
		c.Env = p.env()
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("postconf -e %v: %v\n%s", settings, err, out)
		}
	}
	// A reload ends the old smtpd processes at their earliest convenience:
	// a banner unique to this configuration tells when new sessions get
	// it, so no case meets the last one's settings.
	gen := fmt.Sprintf("gen-%d", time.Now().UnixNano())
	c := exec.Command(p.bin("postconf"), "-c", filepath.Join(p.Dir, "etc"), "-e", "smtpd_banner = $myhostname ESMTP mailshim-e2e "+gen)
	c.Env = p.env()
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("postconf banner: %v\n%s", err, out)
	}
	c = exec.Command(p.bin("postfix"), "-c", filepath.Join(p.Dir, "etc"), "reload")
	c.Env = p.env()
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}
	if !waitfor.Poll(30*time.Second, func() bool { return bannerHas(p.Addr(), gen) }) {
		t.Fatalf("Postfix did not come back with the new settings within 30s\n%s", tail(p.Log(), 20))
	}
}

func bannerHas(addr, s string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 512)
	n, _ := c.Read(b)
	fmt.Fprintf(c, "QUIT\r\n")
	return strings.Contains(string(b[:n]), s)
}

// doctorConf is what a case may change in doctor's configuration.
type doctorConf struct {
	host     string
	port     int
	tls      string
	login    bool
	password string
}

// writeDoctorConf writes a configuration for the installed system (its
// spool and sockets, the running relayd) whose upstream is p, and the
// secret file, owned by relayd's user, next to it.
func writeDoctorConf(t *testing.T, dir string, p *doctorPostfix, c doctorConf) string {
	t.Helper()
	secret := filepath.Join(dir, "upstream.secret")
	must(t, os.WriteFile(secret, []byte(c.password+"\n"), 0o600), "secret")
	run(t, "chown", "mailshim:mailshim", secret)
	var b strings.Builder
	fmt.Fprintf(&b, "hostname = %q\n\n[[upstream]]\nhost = %q\nport = %d\ntls = %q\n", hostname, c.host, c.port, c.tls)
	if c.tls != "none" {
		fmt.Fprintf(&b, "ca_file = %q\n", p.CAFile)
	}
	if c.login {
		fmt.Fprintf(&b, "username = %q\npassword_file = %q\n", p.User, secret)
	}
	fmt.Fprintf(&b, "\n[senders]\n%q = \"alice@example.com\"\n", alice)
	// The running relayd's listener is the suite's business, not these
	// cases'.
	fmt.Fprintf(&b, "\n[listen]\nenabled = false\n")
	path := filepath.Join(dir, "mailshim.conf")
	must(t, os.WriteFile(path, []byte(b.String()), 0o644), "config")
	return path
}

// runDoctor runs the installed relayd doctor (under prefix, e.g. ip netns
// exec) and returns its output and exit status; it fails the test if the
// output holds the password.
func runDoctor(t *testing.T, password string, prefix []string, args ...string) (string, int) {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), "/usr/sbin/relayd", "doctor", "--timeout", "10s"), args...)
	c := exec.Command(argv[0], argv[1:]...)
	start := time.Now()
	out, err := c.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	if password != "" && strings.Contains(string(out), password) {
		t.Fatalf("doctor printed the password:\n%s", out)
	}
	if el := time.Since(start); el > 60*time.Second {
		t.Errorf("doctor took %v", el)
	}
	return string(out), code
}

// firstFail returns doctor's first ✘ line (trimmed) and the cause and fix
// printed under it.
func firstFail(out string) (line, cause, fix string) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "✘") {
			continue
		}
		line = strings.TrimSpace(l)
		for _, m := range lines[i+1:] {
			m = strings.TrimSpace(m)
			if k, v, ok := strings.Cut(m, ":"); ok && (k == "cause" || k == "fix" || k == "reply") {
				switch k {
				case "cause":
					cause = strings.TrimSpace(v)
				case "fix":
					fix = strings.TrimSpace(v)
				}
				continue
			}
			break
		}
		return
	}
	return
}

// makeCert writes a certificate and key for names, valid from nb to na,
// signed by the harness's CA (or self-signed when self is true), readable
// by Postfix's daemons; it returns the two paths.
func makeCert(t *testing.T, p *doctorPostfix, dir, name string, names []string, nb, na time.Time, self bool) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err, "key")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    nb, NotAfter: na,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	parent, signer := tmpl, any(key)
	if !self {
		caPEM, err := os.ReadFile(p.CAFile)
		must(t, err, "CA")
		blk, _ := pem.Decode(caPEM)
		parent, err = x509.ParseCertificate(blk.Bytes)
		must(t, err, "parse CA")
		kPEM, err := os.ReadFile(filepath.Join(p.Dir, "tls", "ca.key"))
		must(t, err, "CA key")
		kb, _ := pem.Decode(kPEM)
		signer, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
		must(t, err, "parse CA key")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	must(t, err, "certificate")
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err, "key")
	cert, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	must(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644), "write cert")
	must(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o640), "write key")
	run(t, "chown", "root:pfe2e", keyPath)
	return cert, keyPath
}

func TestDoctor(t *testing.T) {
	s := setup(t)
	up, err := newUpstream()
	if err != nil {
		t.Fatalf("doctor's Postfix: %v", err)
	}
	t.Cleanup(func() {
		up.Stop()
		if os.Getenv("MAILSHIM_E2E_KEEP") == "" {
			os.RemoveAll(up.Dir)
		}
	})
	mainCF, err := os.ReadFile(filepath.Join(up.Dir, "etc", "main.cf"))
	must(t, err, "main.cf")
	p := &doctorPostfix{Upstream: up, mainCF: mainCF}
	dir, err := os.MkdirTemp("", "mailshim-e2e-doctor-")
	must(t, err, "temp dir")
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755), "chmod")
	good := doctorConf{host: "127.0.0.1", port: p.Port, tls: "starttls", login: true, password: p.Password}

	// The suite's own setup — /etc/mailshim/mailshim.conf, the shared
	// Postfix, the installed package's paths — passes every check.
	t.Run("healthy-system", func(t *testing.T) {
		// relayd runs as user mailshim without relayd.socket here: the
		// listener gets ports it may bind.
		cfg := s.Relayd.DefaultConfig()
		cfg.Extra = fmt.Sprintf("\n[listen]\nports = [%d, %d]\n", freePort(t), freePort(t))
		s.Relayd.Restart(t, cfg)
		defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())
		// As README's first configuration: tls-init once hostname is
		// set (a certificate left by an earlier run may name another
		// host, which doctor's listen check warns about), then the
		// restart that makes relayd present it.
		t.Logf("%s", run(t, "/usr/sbin/relayd", "tls-init"))
		s.Relayd.Restart(t, cfg)
		out, code := runDoctor(t, s.Upstream.Password, nil)
		t.Logf("\n%s", out)
		if code != 0 || strings.Contains(out, "✘") || !strings.Contains(out, "all checks passed") || !strings.Contains(out, "✔ layout") || !strings.Contains(out, "✔ listen") {
			t.Fatalf("exit %d\n%s", code, out)
		}
		// --send-to: one message through the queue, delivered by Postfix,
		// with Postfix's queue id printed.
		tok := token(t)
		out, code = runDoctor(t, s.Upstream.Password, nil, "--send-to", tok+"@example.org", "--log-file", s.Relayd.LogPath)
		t.Logf("\n%s", out)
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		d := s.Upstream.WaitMessages(t, 1, 60*time.Second, "doctor's test message", func(d *Delivered) bool {
			return strings.Contains(strings.ToLower(d.Header.Get("Delivered-To")), strings.ToLower(tok))
		})[0]
		m := regexp.MustCompile(`delivered, upstream queue id ([0-9A-Za-z]+)`).FindStringSubmatch(out)
		if m == nil || !strings.Contains(string(d.Raw), "id "+m[1]) {
			t.Fatalf("no upstream queue id in the output, or not the delivered message's:\n%s", d.Raw)
		}
	})

	// The system's own configuration without a login: Postfix says
	// "Relay access denied" at RCPT, and doctor says why (the README shows
	// this output).
	t.Run("system-relay-denied", func(t *testing.T) {
		cfg := s.Relayd.DefaultConfig()
		cfg.Auth = false
		cfg.Extra = fmt.Sprintf("\n[listen]\nports = [%d, %d]\n", freePort(t), freePort(t))
		s.Relayd.Restart(t, cfg)
		defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())
		out, code := runDoctor(t, s.Upstream.Password, nil)
		t.Logf("\n$ relayd doctor\n%s$ echo $?\n%d", out, code)
		line, cause, fix := firstFail(out)
		if code != 1 || !strings.HasPrefix(line, "✘ rcpt") || !strings.Contains(out, "Relay access denied") ||
			!strings.Contains(cause, "relayd did not authenticate") || !strings.Contains(fix, "set username and password_file") {
			t.Fatalf("exit %d, first failure %q, cause %q, fix %q", code, line, cause, fix)
		}
	})

	for _, tc := range []struct {
		name    string
		postfix []string                    // postconf -e settings
		conf    func(c *doctorConf)         // doctor's configuration
		certs   func(t *testing.T) []string // settings for a certificate
		prefix  func(t *testing.T, c *doctorConf) []string
		args    []string
		check   string // the first ✘ line starts with it
		saw     string // and contains this
		cause   string
		fix     string
		exit    int // a configuration error: this exit status, saw in the output
	}{
		{name: "healthy-postfix", check: ""},
		{name: "no-sasl-login-configured", conf: func(c *doctorConf) { c.login = false },
			check: "✘ rcpt", saw: "RCPT TO:<doctor-relay-test@example.org>",
			cause: "relayd did not authenticate (no username is set", fix: "set username and password_file"},
		{name: "postfix-sasl-disabled", postfix: []string{"smtpd_sasl_auth_enable = no"},
			check: "✘ auth", saw: "AUTH not offered after TLS", cause: "does not offer AUTH", fix: "SASL settings"},
		{name: "wrong-password", conf: func(c *doctorConf) { c.password = "not-the-password" },
			check: "✘ auth", saw: "refused", cause: "refused our credentials", fix: "password_file"},
		{name: "sender-login-maps", postfix: []string{"smtpd_sender_login_maps = inline:{alice@example.com=somebody-else@e2e.test}", "smtpd_sender_restrictions = reject_sender_login_mismatch"},
			check: "✘ mail", saw: "MAIL FROM:<alice@example.com>", cause: "not owned by the authenticated user", fix: "[senders]"},
		{name: "tls-auth-only-with-tls-none", postfix: []string{"smtpd_tls_security_level = may", "smtpd_tls_auth_only = yes"},
			conf:  func(c *doctorConf) { c.tls, c.login = "none", false },
			check: "✘ rcpt", saw: "RCPT TO", cause: `tls = "none" and no username`, fix: `tls = "starttls"`},
		// The configuration refuses credentials without TLS: exit 78.
		{name: "tls-none-with-credentials", postfix: []string{"smtpd_tls_security_level = may", "smtpd_tls_auth_only = yes"},
			conf: func(c *doctorConf) { c.tls = "none" },
			exit: 78, saw: "credentials are never sent without TLS"},
		{name: "relay-only-from-mynetworks", postfix: []string{"mynetworks = 192.0.2.0/24", "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"},
			check: "✘ rcpt", saw: "after a successful AUTH as relay@e2e.test", cause: "refuses to relay for us", fix: "permit_mynetworks alone does not cover this host"},
		{name: "reject-unauth-destination-first", postfix: []string{"smtpd_relay_restrictions = reject_unauth_destination, permit_sasl_authenticated"},
			check: "✘ rcpt", saw: "after a successful AUTH as relay@e2e.test", cause: "refuses to relay for us", fix: "permit_sasl_authenticated before reject_unauth_destination"},
		{name: "starttls-not-offered", postfix: []string{"smtpd_tls_security_level = none", "smtpd_tls_auth_only = no"},
			check: "✘ starttls", saw: "STARTTLS not offered", cause: "STARTTLS stripped or not offered", fix: `tls = "tls"`},
		{name: "certificate-expired", certs: func(t *testing.T) []string {
			// Expired a moment ago, valid while the test CA was: its chain
			// verifies, only the dates are wrong.
			c, k := makeCert(t, p, dir, "expired", []string{"127.0.0.1", "localhost"}, caNotBefore(t, p), time.Now().Add(-2*time.Second), false)
			return []string{"smtpd_tls_cert_file = " + c, "smtpd_tls_key_file = " + k}
		}, check: "✘ tls-expiry", saw: "valid from", cause: "has expired", fix: "renew"},
		{name: "certificate-self-signed", certs: func(t *testing.T) []string {
			c, k := makeCert(t, p, dir, "self", []string{"127.0.0.1", "localhost"}, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0), true)
			return []string{"smtpd_tls_cert_file = " + c, "smtpd_tls_key_file = " + k}
		}, check: "✘ tls-chain", saw: "not verified", cause: "self-signed", fix: "ca_file"},
		{name: "certificate-wrong-name", certs: func(t *testing.T) []string {
			c, k := makeCert(t, p, dir, "other", []string{"mail.other.example"}, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0), false)
			return []string{"smtpd_tls_cert_file = " + c, "smtpd_tls_key_file = " + k}
		}, check: "✘ tls-name", saw: "the certificate is for mail.other.example", cause: "not valid for the name", fix: "server_name"},
		{name: "nothing-listening", conf: func(c *doctorConf) { c.port = freePort(t) },
			check: "✘ tcp", saw: "refused: nothing listens", cause: "refused the connection", fix: "check host and port"},
		// Its own, shorter timeout (the last --timeout counts).
		{name: "packets-dropped", prefix: dropNamespace, args: []string{"--timeout", "3s"},
			check: "✘ tcp", saw: "timed out after 3s", cause: "TCP connection timed out", fix: "firewall"},
		{name: "unknown-host", conf: func(c *doctorConf) { c.host = "no-such-smarthost.invalid" },
			check: "✘ dns", saw: "no-such-smarthost.invalid: no address", cause: "could not be resolved", fix: "check host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settings := tc.postfix
			if tc.certs != nil {
				settings = append(settings, tc.certs(t)...)
			}
			p.configure(t, settings...)
			c := good
			if tc.conf != nil {
				tc.conf(&c)
			}
			cfg := writeDoctorConf(t, dir, p, c)
			var prefix []string
			if tc.prefix != nil {
				prefix = tc.prefix(t, &c)
				cfg = writeDoctorConf(t, dir, p, c)
			}
			out, code := runDoctor(t, p.Password, prefix, append([]string{"--config", cfg}, tc.args...)...)
			t.Logf("\n%s", out)
			line, cause, fix := firstFail(out)
			if tc.exit != 0 {
				if code != tc.exit || !strings.Contains(out, tc.saw) {
					t.Fatalf("exit %d, want %d and %q", code, tc.exit, tc.saw)
				}
				return
			}
			if tc.check == "" {
				if code != 0 || line != "" || !strings.Contains(out, "all checks passed") {
					t.Fatalf("healthy Postfix: exit %d, first failure %q", code, line)
				}
				if !strings.Contains(out, "✔ rcpt") || !strings.Contains(out, "✔ auth") || !strings.Contains(out, "✔ tls-chain") {
					t.Fatalf("healthy Postfix: not every stage passed")
				}
				return
			}
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.HasPrefix(line, tc.check) || !strings.Contains(line, tc.saw) {
				t.Errorf("first ✘ line %q, want %q ... %q", line, tc.check, tc.saw)
			}
			if !strings.Contains(cause, tc.cause) || !strings.Contains(fix, tc.fix) {
				t.Errorf("cause %q fix %q, want %q and %q", cause, fix, tc.cause, tc.fix)
			}
		})
	}
	p.configure(t)
}

// caNotBefore is the start of the test CA's validity.
func caNotBefore(t *testing.T, p *doctorPostfix) time.Time {
	t.Helper()
	b, err := os.ReadFile(p.CAFile)
	must(t, err, "CA")
	blk, _ := pem.Decode(b)
	ca, err := x509.ParseCertificate(blk.Bytes)
	must(t, err, "parse CA")
	return ca.NotBefore
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "listen")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// dropNamespace makes a network namespace whose firewall (nftables) drops
// every packet to the upstream's port, and returns the command prefix that
// runs doctor in it. Without nft it says so and points the upstream at an
// address routed into a dummy interface, where packets vanish the same way.
func dropNamespace(t *testing.T, c *doctorConf) []string {
	t.Helper()
	ns := fmt.Sprintf("mailshim-doctor-%d", os.Getpid())
	exec.Command("ip", "netns", "del", ns).Run()
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	if nft, err := exec.LookPath("nft"); err == nil {
		rules := fmt.Sprintf("table inet doctor { chain out { type filter hook output priority 0; tcp dport %d drop; }; }", c.port)
		run(t, "ip", "netns", "exec", ns, nft, rules)
		t.Logf("namespace %s: nft drops tcp dport %d", ns, c.port)
		return []string{"ip", "netns", "exec", ns}
	}
	t.Logf("nft not installed: namespace %s routes 198.51.100.0/24 into a dummy interface (packets vanish)", ns)
	run(t, "ip", "-n", ns, "link", "add", "d0", "type", "dummy")
	run(t, "ip", "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "d0")
	run(t, "ip", "-n", ns, "link", "set", "d0", "up")
	c.host = "198.51.100.2"
	return []string{"ip", "netns", "exec", ns}
}
