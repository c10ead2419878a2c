// Package localca makes the certificate relayd's loopback SMTP listener
// presents: a leaf for the names local applications connect to
// (localhost, the host name, 127.0.0.1, ::1), signed by a certificate
// authority made for this one purpose.
//
// Local applications verify the listener's certificate as soon as it offers
// STARTTLS (PHPMailer's SMTPAutoTLS, Rails' enable_starttls_auto), against
// the system's trust store. A self-signed leaf fails that; a CA in the trust
// store that could sign for any name would be a risk for every TLS client
// on the machine. So the CA carries a critical nameConstraints extension
// (RFC 5280, 4.2.1.10) that permits only the local names: DNS localhost,
// DNS <host name> (and their subdomains, by the RFC's rule), IP
// 127.0.0.0/8 and IP ::1/128. A verifier that honours the extension (Go,
// OpenSSL and so PHP, Ruby, Python, curl) refuses anything else it signs,
// and one that does not understand it must refuse the CA, because the
// extension is critical.
//
// The CA's private key exists only in memory while New runs: it signs the
// one leaf and is dropped. Nothing on the machine can sign another
// certificate the trust store accepts, even inside the constraints.
// Renewal therefore makes a new CA and a new leaf together (Check tells
// when that is due).
//
// Its Go API is not stable.
package localca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// Validity is how long a new leaf (and its CA) is valid: 825 days, the
// longest that any common verifier accepts for a certificate from a
// locally trusted CA (Apple's limit; OpenSSL, Go and Java set none).
const Validity = 825 * 24 * time.Hour

// RenewBefore is how long before expiry Check asks for a new certificate.
const RenewBefore = 30 * 24 * time.Hour

// Names are the names a leaf is for, and the only names its CA may sign.
type Names struct {
	DNS []string // localhost and the host names, lower case, no trailing dot
	IPs []net.IP // 127.0.0.1 and ::1
}

// DefaultNames is localhost, 127.0.0.1 and ::1 plus the given host names
// (empty ones, duplicates, IP literals and "localhost" are skipped).
func DefaultNames(hosts ...string) Names {
	n := Names{DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}}
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
		if h == "" || net.ParseIP(h) != nil || slices.Contains(n.DNS, h) {
			continue
		}
		n.DNS = append(n.DNS, h)
	}
	return n
}

// Loopback ranges the CA may sign for. Only addresses of this host: a
// listener never serves another machine, so no other address is needed.
var permittedIPs = []*net.IPNet{
	{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)},
	{IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)},
}

// Bundle is a new CA certificate and the leaf it signed, PEM-encoded.
type Bundle struct {
	CA   *x509.Certificate
	Leaf *x509.Certificate

	CAPEM   []byte // the CA certificate: what the trust store gets
	CertPEM []byte // the leaf, then the CA (the chain the server sends)
	KeyPEM  []byte // the leaf's private key (PKCS #8)
}

// New makes a CA constrained to names and a leaf for exactly those names,
// valid from now (minus an hour of clock skew) for validity. The CA's key
// is not returned: it is dropped once the leaf is signed.
func New(names Names, now time.Time, validity time.Duration) (*Bundle, error) {
	if len(names.DNS) == 0 && len(names.IPs) == 0 {
		return nil, errors.New("localca: no names")
	}
	for _, ip := range names.IPs {
		if !permitted(ip) {
			return nil, fmt.Errorf("localca: %s is not a loopback address", ip)
		}
	}
	notBefore := now.Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := now.Add(validity).UTC().Truncate(time.Second)

	ca, caKey, err := newCA(names, now, notBefore, notAfter.Add(24*time.Hour))
	if err != nil {
		return nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("localca: leaf key: %w", err)
	}
	leafDER, err := sign(ca, caKey, names, leafKey.Public(), notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}
	b := &Bundle{CA: ca, Leaf: leaf}
	b.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	b.CertPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), b.CAPEM...)
	b.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return b, nil
}

// newCA makes the CA certificate, constrained to names, and its key. New
// gives it a notAfter a day past the leaf's, so that the leaf is never
// valid under an expired CA.
func newCA(names Names, now, notBefore, notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("localca: CA key: %w", err)
	}
	host := "localhost"
	if len(names.DNS) > 0 {
		host = names.DNS[len(names.DNS)-1]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject: pkix.Name{
			Organization: []string{"mailshim"},
			CommonName:   fmt.Sprintf("mailshim local CA for %s (%s)", host, now.UTC().Format("2006-01-02")),
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// No intermediate below it: it signs leaves only.
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         slices.Clone(names.DNS),
		PermittedIPRanges:           permittedIPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("localca: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return ca, caKey, nil
}

// sign makes a server certificate for names, signed by ca with caKey.
func sign(ca *x509.Certificate, caKey crypto.Signer, names Names, pub crypto.PublicKey, notBefore, notAfter time.Time) ([]byte, error) {
	cn := "localhost"
	if len(names.DNS) > 0 {
		cn = names.DNS[len(names.DNS)-1]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"mailshim"}, CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              slices.Clone(names.DNS),
		IPAddresses:           slices.Clone(names.IPs),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("localca: leaf certificate: %w", err)
	}
	return der, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

func permitted(ip net.IP) bool {
	for _, r := range permittedIPs {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// Check tells whether the certificate chain in certPEM, with the key in
// keyPEM, still serves names: it must parse, the key must match the leaf,
// the leaf must verify against caPEM alone for every name at now+renewBefore
// (so it is renewed before it expires). A nil error means nothing to do;
// otherwise the error says why a new one is needed.
func Check(certPEM, keyPEM, caPEM []byte, names Names, now time.Time, renewBefore time.Duration) error {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	leaf := certs[0]
	if err := keyMatches(leaf, keyPEM); err != nil {
		return err
	}
	cas, err := parseCerts(caPEM)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	for _, c := range cas {
		if !c.PermittedDNSDomainsCritical || len(c.PermittedIPRanges) == 0 {
			return errors.New("the CA certificate carries no critical name constraints")
		}
	}
	at := now.Add(renewBefore)
	if at.After(leaf.NotAfter) {
		return fmt.Errorf("the certificate expires %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	var all []string
	all = append(all, names.DNS...)
	for _, ip := range names.IPs {
		all = append(all, ip.String())
	}
	for _, name := range all {
		_, err := leaf.Verify(x509.VerifyOptions{
			DNSName:     name,
			Roots:       roots,
			CurrentTime: at,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("not valid for %s: %w", name, err)
		}
	}
	return nil
}

func parseCerts(p []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// keyMatches checks that the private key in keyPEM belongs to leaf.
func keyMatches(leaf *x509.Certificate, keyPEM []byte) error {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return errors.New("key: no PEM block")
	}
	var key any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return fmt.Errorf("key: unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return errors.New("key: not a signing key")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := s.Public().(equaler); !ok || !pub.Equal(leaf.PublicKey) {
		return errors.New("key: does not belong to the certificate")
	}
	return nil
}

// ParseLeaf returns the first certificate in a PEM chain.
func ParseLeaf(certPEM []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}
