package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The checks of an upstream's certificate, in the order they are told.
const (
	CertChain = "chain" // signed by a trusted root (ca_file or the system's)
	CertName  = "name"  // valid for the name relayd connects to
	CertDates = "dates" // valid now
)

// CertFault is one fault of an upstream's certificate: the check that
// found it, the error of crypto/x509, and its cause and fix (classify's
// words).
type CertFault struct {
	Check      string
	Err        error
	Cause, Fix string
}

// CertFaults judges the certificates an upstream sent (the leaf first)
// for name at now, each check on its own — the chain against roots (nil:
// the system roots), the name, the dates — and returns every fault, in
// that order: crypto/tls stops at the first it meets (the dates, then the
// name, then the chain), which is not always the one to fix first. The
// chain of a leaf that is not valid now is judged at a moment it was.
// relayd's log (a failed handshake) and relayd doctor both describe a
// certificate with it, so that both name the same faults in the same
// words and order. It does not replace crypto/tls's verification, which
// alone decides whether relayd sends.
func CertFaults(certs []*x509.Certificate, roots *x509.CertPool, name string, now time.Time) []CertFault {
	if len(certs) == 0 {
		return nil
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	var timeErr error
	at := now
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		timeErr = x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired,
			Detail: fmt.Sprintf("current time %s is outside %s to %s", now.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))}
		// Judge the chain as of a moment the leaf was valid.
		at = leaf.NotAfter.Add(-time.Second)
		if now.Before(leaf.NotBefore) {
			at = leaf.NotBefore.Add(time.Second)
		}
	}
	verify := func(at time.Time) error {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at})
		return err
	}
	chainErr := verify(at)
	if chainErr != nil && timeErr != nil {
		// The moment chosen may be outside a CA's validity: the chain is
		// good if it verifies at any moment of the leaf's.
		for _, at := range []time.Time{leaf.NotBefore.Add(time.Second), leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)} {
			if verify(at) == nil {
				chainErr = nil
				break
			}
		}
	}
	var out []CertFault
	for _, f := range []struct {
		check string
		err   error
	}{{CertChain, chainErr}, {CertName, leaf.VerifyHostname(name)}, {CertDates, timeErr}} {
		if f.err != nil {
			e := classify(StageTLS, f.err)
			out = append(out, CertFault{Check: f.check, Err: f.err, Cause: e.Cause, Fix: e.Fix})
		}
	}
	return out
}

// certError explains a failed handshake whose error is crypto/tls's
// refusal of the upstream's certificate: every fault CertFaults finds
// (with the roots and name of cfg), their causes and fixes joined in
// order. Any other error is classify's.
func certError(err error, cfg *tls.Config) *Error {
	var cv *tls.CertificateVerificationError
	if cfg == nil || !errors.As(err, &cv) {
		return classify(StageTLS, err)
	}
	now := time.Now()
	if cfg.Time != nil {
		now = cfg.Time()
	}
	faults := CertFaults(cv.UnverifiedCertificates, cfg.RootCAs, cfg.ServerName, now)
	if len(faults) == 0 {
		return classify(StageTLS, err)
	}
	e := &Error{Class: Temporary, Stage: StageTLS, Err: err}
	var causes, fixes []string
	for _, f := range faults {
		if f.Cause != "" {
			causes = append(causes, f.Cause)
		}
		if f.Fix != "" && !slices.Contains(fixes, f.Fix) {
			fixes = append(fixes, f.Fix)
		}
	}
	e.Cause, e.Fix = strings.Join(causes, "; "), strings.Join(fixes, "; ")
	return e
}
