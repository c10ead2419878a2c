package main

// relayd doctor, the real binary, on the upstream's certificate: its
// dates said in the unit that fits them, its faults in relayd's words.

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
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
