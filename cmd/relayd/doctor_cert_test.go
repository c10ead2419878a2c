package main

// relayd doctor, the real binary, on the upstream's certificate: its
// dates said in the unit that fits them, its faults in relayd's words.

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// checkLine returns the line of check name (after its mark) in doctor's
// text output, and the cause and fix lines under it.
func checkLine(out, name string) (line, cause, fix string) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[1] != name {
			continue
		}
		for _, m := range lines[i+1:] {
			m = strings.TrimSpace(m)
			switch {
			case strings.HasPrefix(m, "cause: "):
				cause = strings.TrimPrefix(m, "cause: ")
			case strings.HasPrefix(m, "fix:"):
				fix = strings.TrimSpace(strings.TrimPrefix(m, "fix:"))
			case strings.HasPrefix(m, "reply: "):
			default:
				return strings.TrimSpace(l), cause, fix
			}
		}
		return strings.TrimSpace(l), cause, fix
	}
	return "", "", ""
}

// A certificate with less than a day left is said to expire in hours,
// with a warning (it was "in 0 day(s)"); one that has expired says how
// long ago.
func TestDoctorCertificateHoursLeft(t *testing.T) {
	up := newUpstream(t, smtptest.Options{ServerCert: func(c *x509.Certificate) {
		c.NotAfter = time.Now().Add(23 * time.Hour)
	}})
	s := newSite(t, up, siteOpts{})
	out, _, _ := s.doctor()
	line, cause, fix := checkLine(out, "tls-expiry")
	if !strings.HasPrefix(line, "! tls-expiry") || !strings.Contains(line, "in 23 hours") || strings.Contains(line, "day") || cause == "" || fix == "" {
		t.Errorf("23 hours left: %q (cause %q, fix %q)\n%s", line, cause, fix, out)
	}

	up = newUpstream(t, smtptest.Options{ServerCert: func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(-48 * time.Hour)
		c.NotAfter = time.Now().Add(-3 * time.Hour)
	}})
	s = newSite(t, up, siteOpts{})
	out, _, code := s.doctor()
	line, cause, _ = checkLine(out, "tls-expiry")
	if code != 1 || !strings.HasPrefix(line, "✘ tls-expiry") || !strings.Contains(line, "expired 3 hours ago") || !strings.Contains(cause, "expired") {
		t.Errorf("expired 3 hours ago: exit %d, %q (cause %q)\n%s", code, line, cause, out)
	}
}

// A self-signed certificate for another name: relayd's log line for the
// failed delivery and relayd doctor name the same faults, in the same
// words and the same order (the chain, then the name).
func TestDoctorCertificateFaultsAsLogged(t *testing.T) {
	up := newUpstream(t, smtptest.Options{SelfSigned: true, ServerCert: func(c *x509.Certificate) {
		c.DNSNames, c.IPAddresses = []string{"smtp.other.example"}, nil
	}})
	s := newSite(t, up, siteOpts{})
	s.start()
	out, _, code := s.doctor()
	chain, chainCause, chainFix := checkLine(out, "tls-chain")
	name, nameCause, nameFix := checkLine(out, "tls-name")
	if code != 1 || !strings.HasPrefix(chain, "✘") || !strings.HasPrefix(name, "✘") || chainCause == "" || nameCause == "" {
		t.Fatalf("doctor: exit %d, %q, %q\n%s", code, chain, name, out)
	}
	s.drop("cert", 1)
	var line string
	waitfor.True(t, "relayd's log line of the failed delivery", 20*time.Second, func() bool {
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "status=deferred") && strings.Contains(l, "cause=") {
				line = l
				return true
			}
		}
		return false
	})
	cause, fix := logKV(line, "cause"), logKV(line, "fix")
	if want := chainCause + "; " + nameCause; cause != want {
		t.Errorf("the log's cause is not doctor's, in doctor's order:\nlog:    %q\ndoctor: %q\n%s", cause, want, line)
	}
	if want := chainFix + "; " + nameFix; fix != want {
		t.Errorf("the log's fix is not doctor's, in doctor's order:\nlog:    %q\ndoctor: %q", fix, want)
	}
}
