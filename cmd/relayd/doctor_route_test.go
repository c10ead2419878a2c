package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// ownsSenders is a Hook that refuses, as Postfix's
// smtpd_sender_login_maps does, every sender not in domain.
func ownsSenders(domain string) func(ctx context.Context, stage, arg string) error {
	return func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail && !strings.HasSuffix(arg, "@"+domain) {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + arg + ">: Sender address rejected: not owned by user"}
		}
		return nil
	}
}

// doctor with [[route]]s: each upstream is checked with its own
// credentials and with the senders whose mail goes through it. A
// routed_only upstream that only a sender domain's route uses is asked
// MAIL FROM an address of that domain, and one that a user's route uses
// is asked with that user's sender ([senders]), not with root's sender,
// which no mail through them carries and which they rightly refuse.
func TestDoctorRoutedUpstreams(t *testing.T) {
	main := newUpstream(t, smtptest.Options{Hook: ownsSenders("web1.example.com")})
	shop := smtptest.New(t, smtptest.Options{Username: "web1@shop.example", Password: "shop-" + testPassword, Hook: ownsSenders("shop.example")})
	own := smtptest.New(t, smtptest.Options{Username: "nobody@own.example", Password: "own-" + testPassword, Hook: ownsSenders("own.example")})
	s := newSite(t, main, siteOpts{})
	secret := func(name, pw string) string {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	named := func(name string, srv *smtptest.Server, secretFile string) string {
		u := srv.Upstream()
		return fmt.Sprintf("\n[[upstream]]\nname = %q\nrouted_only = true\nhost = %q\nport = %d\ntls = \"starttls\"\nca_file = %q\nusername = %q\npassword_file = %q\n",
			name, u.Host, u.Port, u.CAFile, u.Username, secretFile)
	}
	s.writeConfig(named("shop", shop, secret("shop.secret", "shop-"+testPassword)) +
		named("own", own, secret("own.secret", "own-"+testPassword)) + `
[[route]]
sender_domains = ["shop.example"]
upstream = ["shop"]

[[route]]
users = ["nobody"]
upstream = ["own"]

[senders]
nobody = "nobody@own.example"
root = "root@web1.example.com"
`)
	s.start()
	out, errOut, code := s.doctor()
	for _, want := range []string{
		"MAIL FROM:<root@web1.example.com> accepted",
		"MAIL FROM:<postmaster@shop.example> accepted",
		"MAIL FROM:<nobody@own.example> accepted",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the report", want)
		}
	}
	for _, srv := range []*smtptest.Server{shop, own} {
		for _, who := range []string{"root@web1.example.com", "nobody@own.example", "postmaster@shop.example"} {
			if strings.Contains(out, "MAIL FROM:<"+who+"> refused") {
				t.Errorf("%s was asked MAIL FROM:<%s>, mail no route sends through it", srv.Addr, who)
			}
		}
	}
	if code != 0 {
		line, cause, fix := firstFailure(out)
		t.Errorf("exit %d; first failure %q (cause %q, fix %q)\n%s\n%s", code, line, cause, fix, out, errOut)
	}
}

// [trace] key_file is a secret like password_file: doctor checks that
// relayd's user owns it and no one else can read it. A key that root
// created for itself (relayd's user cannot read it, and relayd does not
// start) is a failed secrets check that names the file.
func TestDoctorChecksTraceKey(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{MaxSize: 100 << 20, SMTPUTF8: true})
	s := newSite(t, up, siteOpts{})
	keyFile := filepath.Join(s.dir, "origin.key")
	if err := os.WriteFile(keyFile, []byte("k3y-0f-at-least-16-bytes-for-hmac\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(fmt.Sprintf("\n[trace]\nkey_file = %q\n", keyFile))
	s.start()
	if out, _, code := s.doctor(); code != 0 || !strings.Contains(out, keyFile) {
		t.Errorf("a key owned by relayd's user: exit %d, or the secrets check does not name it:\n%s", code, out)
	}
	if err := os.Chown(keyFile, nobodyUID, -1); err != nil {
		t.Fatal(err)
	}
	out, _, code := s.doctor()
	line, _, fix := firstFailure(out)
	if code != 1 || !strings.Contains(line, "secrets") || !strings.Contains(line, keyFile) || !strings.Contains(fix, "chown") {
		t.Errorf("a key relayd's user does not own: exit %d, first failure %q (fix %q)\n%s", code, line, fix, out)
	}
}

// doctor --json gives scripts and monitoring one JSON object also when
// the configuration does not load: ok false and a failed "config" check
// with the error, beside exit 78 and the error on stderr.
func TestDoctorJSONConfigError(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[metrics]\nno_such_key = 1\n")
	out, errOut, code := s.doctor("--json")
	if code != 78 || !strings.Contains(errOut, "no_such_key") {
		t.Errorf("exit %d, stderr %q; want 78 naming the key", code, errOut)
	}
	var rep struct {
		OK     bool
		Checks []struct{ Name, Status, Saw string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%q", err, out)
	}
	if rep.OK || len(rep.Checks) != 1 || rep.Checks[0].Name != "config" || rep.Checks[0].Status != "fail" || !strings.Contains(rep.Checks[0].Saw, "no_such_key") {
		t.Errorf("report %+v", rep)
	}
}

// Postfix's reject_unknown_sender_domain ("Sender address rejected: Domain
// not found", 4.1.8) and reject_unverified_sender ("Sender address
// rejected: undeliverable address") are about our sender's domain or
// address, not about which login owns it: doctor (and relayd's log) say
// so, instead of "not owned by the authenticated user".
func TestDoctorSenderDomainNotFound(t *testing.T) {
	for _, tc := range []struct {
		code int
		enh  smtp.EnhancedCode
		text string
		want string
	}{
		{450, smtp.EnhancedCode{4, 1, 8}, "<root@web1.example.com>: Sender address rejected: Domain not found", "domain"},
		{450, smtp.EnhancedCode{4, 1, 7}, "<root@web1.example.com>: Sender address rejected: undeliverable address: host mx.example.com said: 550 5.1.1 User unknown", "could not verify"},
	} {
		up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
			if stage == smtptest.StageMail {
				return &smtp.SMTPError{Code: tc.code, EnhancedCode: tc.enh, Message: tc.text}
			}
			return nil
		}})
		s := newSite(t, up, siteOpts{})
		s.start()
		out, _, code := s.doctor()
		line, cause, fix := firstFailure(out)
		if code != 1 || !strings.Contains(line, "MAIL FROM") || strings.Contains(cause, "not owned") || !strings.Contains(cause, tc.want) {
			t.Errorf("%s: exit %d, first failure %q, cause %q, fix %q", tc.text, code, line, cause, fix)
		}
	}
}
