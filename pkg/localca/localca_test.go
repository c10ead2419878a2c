package localca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

func newBundle(t *testing.T, hosts ...string) *Bundle {
	t.Helper()
	b, err := New(DefaultNames(hosts...), time.Now(), Validity)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNameConstraintsCritical(t *testing.T) {
	b := newBundle(t, "web1.example.com")
	var found bool
	for _, e := range b.CA.Extensions {
		if e.Id.Equal(oidNameConstraints) {
			found = true
			if !e.Critical {
				t.Error("nameConstraints is not critical")
			}
		}
	}
	if !found {
		t.Fatal("the CA has no nameConstraints extension")
	}
	// What the extension says, as Go parsed it back.
	if got := strings.Join(b.CA.PermittedDNSDomains, ","); got != "localhost,web1.example.com" {
		t.Errorf("permitted DNS %q", got)
	}
	var ips []string
	for _, r := range b.CA.PermittedIPRanges {
		ips = append(ips, r.String())
	}
	if got := strings.Join(ips, ","); got != "127.0.0.0/8,::1/128" {
		t.Errorf("permitted IP ranges %q", got)
	}
	if len(b.CA.ExcludedDNSDomains)+len(b.CA.ExcludedIPRanges) != 0 {
		t.Error("unexpected excluded subtrees")
	}
	if !b.CA.IsCA || !b.CA.MaxPathLenZero || b.CA.MaxPathLen != 0 {
		t.Errorf("CA basic constraints: IsCA=%v MaxPathLen=%d zero=%v", b.CA.IsCA, b.CA.MaxPathLen, b.CA.MaxPathLenZero)
	}
	if b.Leaf.IsCA {
		t.Error("the leaf is a CA")
	}
	if !b.CA.NotAfter.After(b.Leaf.NotAfter) {
		t.Errorf("CA expires %v, not after the leaf (%v)", b.CA.NotAfter, b.Leaf.NotAfter)
	}
}

func TestLeafVerifiesForLocalNames(t *testing.T) {
	b := newBundle(t, "web1.example.com", "web1")
	for _, name := range []string{"localhost", "web1.example.com", "web1", "127.0.0.1", "::1", "LOCALHOST"} {
		if err := verify(b.CertPEM, b.CAPEM, name, time.Now()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The leaf is for the listed names only, not the whole permitted range.
	for _, name := range []string{"127.0.0.2", "mail.localhost", "www.example.com", "10.0.0.1"} {
		if err := verify(b.CertPEM, b.CAPEM, name, time.Now()); err == nil {
			t.Errorf("%s: verified, want refused", name)
		}
	}
}

// mintWithCA makes a CA as New does, keeping its key, and signs a leaf for
// other names with it: what someone holding the CA's key could do.
func mintWithCA(t *testing.T, caNames, leafNames Names) (caPEM, leafPEM []byte) {
	t.Helper()
	now := time.Now()
	ca, caKey, err := newCA(caNames, now, now.Add(-time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := sign(ca, caKey, leafNames, k.Public(), now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCARefusesOtherNames(t *testing.T) {
	caNames := DefaultNames("web1.example.com")
	for _, tc := range []struct {
		name   string
		leaf   Names
		verify string
	}{
		{"other host", Names{DNS: []string{"www.example.com"}}, "www.example.com"},
		{"parent domain", Names{DNS: []string{"example.com"}}, "example.com"},
		{"lookalike", Names{DNS: []string{"notlocalhost"}}, "notlocalhost"},
		{"public IPv4", Names{IPs: []net.IP{net.ParseIP("192.0.2.1").To4()}}, "192.0.2.1"},
		{"other IPv6", Names{IPs: []net.IP{net.ParseIP("2001:db8::1")}}, "2001:db8::1"},
		// One good name does not carry a bad one: the whole leaf is refused.
		{"mixed", Names{DNS: []string{"localhost", "www.example.com"}}, "localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caPEM, leafPEM := mintWithCA(t, caNames, tc.leaf)
			err := verify(leafPEM, caPEM, tc.verify, time.Now())
			var inv x509.CertificateInvalidError
			if !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
				t.Fatalf("Go's verifier: %v, want CANotAuthorizedForThisName", err)
			}
		})
	}
	// The control: a leaf for a permitted name from the same kind of CA
	// verifies, so the refusals above come from the constraints.
	caPEM, leafPEM := mintWithCA(t, caNames, Names{DNS: []string{"localhost"}})
	if err := verify(leafPEM, caPEM, "localhost", time.Now()); err != nil {
		t.Fatalf("control leaf for localhost: %v", err)
	}
}

// OpenSSL (PHP's, Ruby's and Python's verifier) refuses a leaf for another
// name signed by the CA: "permitted subtree violation".
func TestOpenSSLRefusesOtherNames(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	caPEM, bad := mintWithCA(t, DefaultNames("web1.example.com"), Names{DNS: []string{"www.example.com"}})
	b := newBundle(t, "web1.example.com")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, err := exec.Command(openssl, "verify", "-CAfile", write("evil-ca.pem", caPEM), write("bad.pem", bad)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "permitted subtree violation") {
		t.Errorf("openssl verify of a www.example.com leaf: %v\n%s", err, out)
	}
	leaf := write("leaf.pem", b.CertPEM)
	ca := write("ca.pem", b.CAPEM)
	for _, name := range []string{"-verify_hostname=localhost", "-verify_hostname=web1.example.com", "-verify_ip=127.0.0.1", "-verify_ip=::1"} {
		opt, val, _ := strings.Cut(name, "=")
		out, err := exec.Command(openssl, "verify", "-CAfile", ca, opt, val, leaf).CombinedOutput()
		if err != nil {
			t.Errorf("openssl verify %s %s: %v\n%s", opt, val, err, out)
		}
	}
	out, err = exec.Command(openssl, "verify", "-CAfile", ca, "-verify_hostname", "www.example.com", leaf).CombinedOutput()
	if err == nil {
		t.Errorf("openssl verify -verify_hostname www.example.com of our leaf succeeded:\n%s", out)
	}
}

func TestCheck(t *testing.T) {
	names := DefaultNames("web1.example.com")
	b := newBundle(t, "web1.example.com")
	now := time.Now()
	if err := Check(b.CertPEM, b.KeyPEM, b.CAPEM, names, now, RenewBefore); err != nil {
		t.Fatalf("fresh bundle: %v", err)
	}
	other := newBundle(t, "web1.example.com")
	for _, tc := range []struct {
		name           string
		cert, key, ca  []byte
		names          Names
		at             time.Time
		wantErrContain string
	}{
		{"expiring", b.CertPEM, b.KeyPEM, b.CAPEM, names, now.Add(Validity - RenewBefore + time.Hour), "expires"},
		{"host renamed", b.CertPEM, b.KeyPEM, b.CAPEM, DefaultNames("web2.example.com"), now, "web2.example.com"},
		{"key of another leaf", b.CertPEM, other.KeyPEM, b.CAPEM, names, now, "does not belong"},
		{"CA of another run", b.CertPEM, b.KeyPEM, other.CAPEM, names, now, "not valid"},
		{"no certificate", nil, b.KeyPEM, b.CAPEM, names, now, "no PEM certificate"},
		{"no key", b.CertPEM, nil, b.CAPEM, names, now, "no PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.cert, tc.key, tc.ca, tc.names, tc.at, RenewBefore)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrContain) {
				t.Fatalf("Check: %v, want an error containing %q", err, tc.wantErrContain)
			}
		})
	}
	// A CA without constraints (made by hand) is replaced, not kept.
	now = time.Now()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: serial(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(Validity * 2),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := sign(ca, k, names, lk.Public(), now.Add(-time.Hour), now.Add(Validity))
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(lk)
	err = Check(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), names, now, RenewBefore)
	if err == nil || !strings.Contains(err.Error(), "name constraints") {
		t.Fatalf("unconstrained CA: %v", err)
	}
}

func TestNewRefusesNonLoopbackIP(t *testing.T) {
	_, err := New(Names{DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("192.0.2.1")}}, time.Now(), Validity)
	if err == nil {
		t.Fatal("New made a certificate for 192.0.2.1")
	}
}

func TestDefaultNames(t *testing.T) {
	n := DefaultNames("Web1.Example.COM.", "", "localhost", "web1.example.com", "127.0.0.1", "web1")
	if got := strings.Join(n.DNS, ","); got != "localhost,web1.example.com,web1" {
		t.Errorf("DNS %q", got)
	}
	if len(n.IPs) != 2 || !n.IPs[0].Equal(net.IPv4(127, 0, 0, 1)) || !n.IPs[1].Equal(net.IPv6loopback) {
		t.Errorf("IPs %v", n.IPs)
	}
}

// tlsServer serves a TLS handshake with b's chain on a loopback port and
// then writes "ok\n"; it returns the address.
func tlsServer(t *testing.T, network, addr string, certPEM, keyPEM []byte) string {
	t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen(network, addr, &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write([]byte("ok\n"))
			}()
		}
	}()
	return ln.Addr().String()
}

// PHP and Ruby, with OpenSSL's default verification (peer and name
// checked), accept the leaf for every local name when the CA is their
// trust anchor, and refuse a self-signed certificate, which is what
// PHPMailer meets when the listener's certificate is not trusted.
func TestPHPAndRubyAcceptTheLeaf(t *testing.T) {
	b := newBundle(t, "web1.example.com")
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, b.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	v4 := tlsServer(t, "tcp4", "127.0.0.1:0", b.CertPEM, b.KeyPEM)
	v6 := tlsServer(t, "tcp6", "[::1]:0", b.CertPEM, b.KeyPEM)
	_, p4, _ := net.SplitHostPort(v4)
	_, p6, _ := net.SplitHostPort(v6)

	self := selfSigned(t)
	vs := tlsServer(t, "tcp4", "127.0.0.1:0", self.CertPEM, self.KeyPEM)
	_, ps, _ := net.SplitHostPort(vs)

	// connect host, port, peer name to check, want success
	cases := []struct {
		host, port, peer string
		ok               bool
	}{
		{"127.0.0.1", p4, "127.0.0.1", true},
		{"127.0.0.1", p4, "localhost", true},
		{"127.0.0.1", p4, "web1.example.com", true},
		{"::1", p6, "::1", true},
		{"127.0.0.1", p4, "www.example.com", false},
		{"127.0.0.1", ps, "127.0.0.1", false},
	}
	t.Run("php", func(t *testing.T) {
		php, err := exec.LookPath("php")
		if err != nil {
			t.Skip("php not installed")
		}
		for _, c := range cases {
			host := c.host
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
			// PHP's defaults: verify_peer and verify_peer_name on.
			src := `$ctx = stream_context_create(["ssl" => ["cafile" => $argv[1], "peer_name" => $argv[3]]]);
$s = @stream_socket_client("ssl://" . $argv[2], $errno, $errstr, 10, STREAM_CLIENT_CONNECT, $ctx);
if (!$s) { $e = error_get_last(); fwrite(STDERR, "refused: " . ($e ? $e["message"] : $errstr) . "\n"); exit(1); }
echo fgets($s);`
			out, err := exec.Command(php, "-r", src, ca, host+":"+c.port, c.peer).CombinedOutput()
			if c.ok && (err != nil || strings.TrimSpace(string(out)) != "ok") {
				t.Errorf("php to %s as %s: %v\n%s", c.host, c.peer, err, out)
			}
			if !c.ok && err == nil {
				t.Errorf("php to %s as %s (port %s): accepted, want refused\n%s", c.host, c.peer, c.port, out)
			}
		}
	})
	t.Run("ruby", func(t *testing.T) {
		ruby, err := exec.LookPath("ruby")
		if err != nil {
			t.Skip("ruby not installed")
		}
		for _, c := range cases {
			src := `require "socket"; require "openssl"
ctx = OpenSSL::SSL::SSLContext.new
ctx.set_params(ca_file: ARGV[0])   # VERIFY_PEER, like Net::SMTP's default context
s = OpenSSL::SSL::SSLSocket.new(TCPSocket.new(ARGV[1], ARGV[2].to_i), ctx)
s.hostname = ARGV[3]
s.connect
s.post_connection_check(ARGV[3])
print s.gets`
			out, err := exec.Command(ruby, "-e", src, ca, c.host, c.port, c.peer).CombinedOutput()
			if c.ok && (err != nil || strings.TrimSpace(string(out)) != "ok") {
				t.Errorf("ruby to %s as %s: %v\n%s", c.host, c.peer, err, out)
			}
			if !c.ok && err == nil {
				t.Errorf("ruby to %s as %s (port %s): accepted, want refused\n%s", c.host, c.peer, c.port, out)
			}
		}
	})
}

// selfSigned is a leaf for the local names that signs itself.
func selfSigned(t *testing.T) *Bundle {
	t.Helper()
	now := time.Now()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	names := DefaultNames()
	tmpl := &x509.Certificate{SerialNumber: serial(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: names.DNS, IPAddresses: names.IPs, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	return &Bundle{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})}
}

// verify checks leafPEM's first certificate against the CA in caPEM for
// name at time at, the way a TLS client with only that CA in its trust
// store does.
func verify(leafPEM, caPEM []byte, name string, at time.Time) error {
	certs, err := parseCerts(leafPEM)
	if err != nil {
		return err
	}
	cas, err := parseCerts(caPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}
