package doctor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

func firstFail(cs []Check) *Check {
	for i := range cs {
		if cs[i].Status == Fail {
			return &cs[i]
		}
	}
	return nil
}

func run(t *testing.T, srv *smtptest.Server, edit func(o *UpstreamOptions)) []Check {
	t.Helper()
	o := UpstreamOptions{Hostname: "web1.example.com", MaxMessageSize: 1 << 20, Senders: []string{"app@example.com"}, Timeout: 5 * time.Second}
	if edit != nil {
		edit(&o)
	}
	up := srv.Upstream()
	return Upstream(context.Background(), 1, up, o)
}

func TestUpstreamCertificates(t *testing.T) {
	srv := smtptest.New(t, smtptest.Options{Username: "u@example.com", Password: "pw-not-shown"})
	// Healthy: every check passes.
	cs := run(t, srv, nil)
	if f := firstFail(cs); f != nil {
		t.Fatalf("healthy upstream: %+v", *f)
	}
	// A clock after the certificate's end: expired, the chain still good.
	cs = run(t, srv, func(o *UpstreamOptions) { o.Now = func() time.Time { return time.Now().AddDate(5, 0, 0) } })
	f := firstFail(cs)
	if f == nil || f.Name != CTLSExpiry || !strings.Contains(f.Cause, "expired") {
		t.Fatalf("expired: %+v", f)
	}
	for _, c := range cs {
		if c.Name == CTLSChain && c.Status != OK {
			t.Errorf("chain judged by the expiry: %+v", c)
		}
		if c.Name == CAuth && c.Status != Skipped {
			t.Errorf("AUTH after a bad certificate: %+v", c)
		}
	}
	// Another name than the certificate's.
	up := srv.Upstream()
	up.ServerName = "smtp.other.example"
	cs = Upstream(context.Background(), 1, up, UpstreamOptions{Hostname: "web1.example.com", Timeout: 5 * time.Second})
	if f := firstFail(cs); f == nil || f.Name != CTLSName || !strings.Contains(f.Fix, "server_name") {
		t.Fatalf("wrong name: %+v", f)
	}
	// Roots that do not hold the CA.
	up = srv.Upstream()
	up.CAFile = ""
	cs = Upstream(context.Background(), 1, up, UpstreamOptions{Hostname: "web1.example.com", Timeout: 5 * time.Second})
	if f := firstFail(cs); f == nil || f.Name != CTLSChain || !strings.Contains(f.Cause, "could not be verified") {
		t.Fatalf("unknown authority: %+v", f)
	}
}

func TestUpstreamImplicitTLSAndNoTLS(t *testing.T) {
	srv := smtptest.New(t, smtptest.Options{ImplicitTLS: true, Username: "u@example.com", Password: "pw"})
	if f := firstFail(run(t, srv, nil)); f != nil {
		t.Fatalf("implicit TLS: %+v", *f)
	}
	// STARTTLS expected, the server has none: stops at starttls.
	plain := smtptest.New(t, smtptest.Options{NoTLS: true})
	up := plain.Upstream()
	up.TLS = "starttls"
	cs := Upstream(context.Background(), 1, up, UpstreamOptions{Hostname: "web1.example.com", Timeout: 5 * time.Second})
	if f := firstFail(cs); f == nil || f.Name != CSTARTTLS || !strings.Contains(f.Cause, "STARTTLS stripped or not offered") {
		t.Fatalf("no STARTTLS: %+v", f)
	}
	// tls = "none" to a loopback server without credentials: passes.
	if f := firstFail(run(t, plain, nil)); f != nil {
		t.Fatalf("tls none: %+v", *f)
	}
}

func TestReportRedactsAndSkips(t *testing.T) {
	r := &Report{}
	r.Add(Check{Name: CAuth, Status: Fail, Saw: "x", Reply: "535 5.7.8 password hunter22 wrong", Cause: "c"})
	r.Redact("hunter22")
	var b strings.Builder
	r.WriteText(&b)
	if strings.Contains(b.String(), "hunter22") || !strings.Contains(b.String(), "[redacted]") || !r.Failed() {
		t.Fatalf("%s", b.String())
	}
}
