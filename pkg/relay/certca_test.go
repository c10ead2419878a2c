package relay

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"
)

// An expired CA certificate in the chain (an intermediate the upstream
// still sends, or a root) is not the upstream's own certificate: the
// cause names which certificate it is, so that nobody renews a leaf that
// is fine.
func TestExpiredCACertificateIsNamed(t *testing.T) {
	ca := &x509.Certificate{Subject: pkix.Name{CommonName: "Example Intermediate R3"}, IsCA: true,
		NotBefore: time.Date(2020, 9, 4, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2025, 9, 15, 0, 0, 0, 0, time.UTC)}
	e := classify(StageTLS, x509.CertificateInvalidError{Cert: ca, Reason: x509.Expired})
	if !strings.Contains(e.Cause, "CA certificate") || !strings.Contains(e.Cause, "Example Intermediate R3") ||
		strings.HasPrefix(e.Cause, "the upstream's TLS certificate has expired") {
		t.Errorf("cause %q does not name the expired CA certificate", e.Cause)
	}
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: "smtp.example.net"},
		NotBefore: time.Date(2020, 9, 4, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2025, 9, 15, 0, 0, 0, 0, time.UTC)}
	if e := classify(StageTLS, x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}); !strings.HasPrefix(e.Cause, "the upstream's TLS certificate has expired") {
		t.Errorf("leaf: cause %q", e.Cause)
	}
}
