//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Applications that speak SMTP to 127.0.0.1, from Debian's packages, as
// two unprivileged users, through relayd's loopback listener to the real
// Postfix upstream: PHPMailer and ActionMailer configured as the hosting
// article says (AUTH with a username and password, STARTTLS, port 587)
// and with no settings at all, WordPress's wp_mail() the default way (PHP
// mail(), so sendmail) and switched to SMTP by a phpmailer_init hook as
// SMTP plugins do, swaks and Python's smtplib. The listener's certificate
// comes from `relayd tls-init` and is verified by every client that does
// STARTTLS against the system's trust store: nothing is told to skip
// verification.

// loopbackPackages are the clients (all from Debian's archive).
var loopbackPackages = []string{
	"libphp-phpmailer", "php-cli", "ruby-actionmailer", "swaks", "python3",
	"wordpress", "mariadb-server", "php-mysql", "ca-certificates", "openssl",
	"libio-socket-inet6-perl", // swaks -6
}

// The article's credentials: any username and password. The listener
// records the username as a claim; the UID comes from the kernel.
const (
	articleUser     = "relay@example.com"
	articlePassword = "hosting-panel-password"
)

var (
	loopbackOnce sync.Once
	loopbackErr  string
	loopbackSys  *System
)

// loopbackSetup is setup plus what the loopback clients need: their
// packages, the listener's certificate trusted system-wide (relayd
// tls-init, as the package's postinst runs it), and relayd started with
// the listener on 127.0.0.1 and ::1, ports 25 and 587, and the Unix
// socket.
func loopbackSetup(t *testing.T) *System {
	t.Helper()
	s := setup(t)
	loopbackOnce.Do(func() {
		loopbackErr = "the loopback setup failed in an earlier test (see its log)"
		aptInstall(t, loopbackPackages...)
		out := run(t, "/usr/sbin/relayd", "tls-init")
		t.Logf("relayd tls-init: %s", strings.TrimSpace(out))
		// The suite's host name is web1.e2e.test (mailshim.conf): the
		// certificate must cover it, localhost and both loopbacks, through
		// the system store only.
		for _, n := range [][]string{{"-verify_ip", "127.0.0.1"}, {"-verify_ip", "::1"},
			{"-verify_hostname", "localhost"}, {"-verify_hostname", hostname}} {
			run(t, "openssl", "verify", "-CAfile", "/etc/ssl/certs/ca-certificates.crt", n[0], n[1], "/etc/mailshim/tls/local.crt")
		}
		s.Relayd.Restart(t, s.Relayd.LoopbackConfig())
		loopbackSys = s
	})
	if loopbackSys == nil {
		t.Fatal(loopbackErr)
	}
	return loopbackSys
}

// LoopbackConfig is the default configuration with the listener on.
func (r *Relayd) LoopbackConfig() RelaydConfig {
	c := r.DefaultConfig()
	c.Extra = listenTOML
	return c
}

// A client run: the program, its script, and what its process looks like
// in relayd's log.
type client struct {
	name    string
	via     string   // pickup's via=
	process []string // relayd's log names the client's process with one of these
	send    func(t *testing.T, u *user.User, tok string) string
}

// phpMailerScript is PHPMailer (Debian's libphp-phpmailer) with isSMTP()
// to 127.0.0.1 and settings (PHP statements). SMTPDebug 2 prints the
// dialogue, so that the test sees STARTTLS happen.
func phpMailerScript(tok, settings string) string {
	return `<?php
require '/usr/share/php/libphp-phpmailer/autoload.php';
use PHPMailer\PHPMailer\PHPMailer;
$m = new PHPMailer(true);
$m->isSMTP();
$m->Host = '127.0.0.1';
` + settings + `
$m->SMTPDebug = 2;
$m->Debugoutput = 'echo';
$m->setFrom('web@example.com', 'Web');
$m->addAddress('x@example.org');
$m->Subject = '` + tok + `';
$m->Body = "PHPMailer over SMTP\n.leading dot\n` + tok + `\n";
$m->send();
echo "sent ok\n";
`
}

const phpMailerArticle = `$m->SMTPAuth = true;
$m->Username = '` + articleUser + `';
$m->Password = '` + articlePassword + `';
$m->SMTPSecure = 'tls';
$m->Port = 587;`

// actionMailerScript is Rails' ActionMailer (ruby-actionmailer) with
// delivery_method :smtp and settings (a Ruby hash body).
func actionMailerScript(settings string) string {
	return `require 'action_mailer'
ActionMailer::Base.delivery_method = :smtp
ActionMailer::Base.smtp_settings = { ` + settings + ` }
ActionMailer::Base.raise_delivery_errors = true
class E2EMailer < ActionMailer::Base
  def note(tok)
    mail(from: 'rails@example.com', to: 'x@example.org', subject: tok,
         body: "ActionMailer over SMTP\n.leading dot\n#{tok}\n")
  end
end
E2EMailer.note(ARGV[0]).deliver_now
puts "sent ok"
`
}

const actionMailerArticle = `address: '127.0.0.1', port: 587, user_name: '` + articleUser + `',
  password: '` + articlePassword + `', authentication: 'plain', enable_starttls_auto: true`

// pythonScript is smtplib: with tls, STARTTLS verified by
// ssl.create_default_context() (the system store) and a login.
func pythonScript(host string, port int, tls bool) string {
	login := ""
	if tls {
		login = `    s.starttls(context=ssl.create_default_context())
    s.login("` + articleUser + `", "` + articlePassword + `")
`
	}
	// The message is written by hand, as most scripts do with sendmail():
	// email.message would quoted-printable-encode the long token line.
	return fmt.Sprintf(`import smtplib, ssl, sys
tok = sys.argv[1]
msg = ("From: py@example.com\r\nTo: x@example.org\r\nSubject: " + tok +
       "\r\n\r\nsmtplib over SMTP\r\n.leading dot\r\n" + tok + "\r\n")
with smtplib.SMTP(%q, %d) as s:
%s    s.sendmail("py@example.com", ["x@example.org"], msg)
print("sent ok")
`, host, port, login)
}

// wordpressScript loads WordPress (wordpress.sh's site) and calls
// wp_mail(); with hook, a phpmailer_init action switches PHPMailer to
// SMTP the way WP Mail SMTP and its kin do.
func wordpressScript(tok string, hook bool) string {
	h := ""
	if hook {
		h = `add_action('phpmailer_init', function ($phpmailer) {
    $phpmailer->isSMTP();
    $phpmailer->Host = '127.0.0.1';
    $phpmailer->Port = 587;
    $phpmailer->SMTPAuth = true;
    $phpmailer->Username = '` + articleUser + `';
    $phpmailer->Password = '` + articlePassword + `';
    $phpmailer->SMTPSecure = 'tls';
});
`
	}
	return `<?php
$_SERVER['HTTP_HOST'] = 'wp-e2e.test';
require '/usr/share/wordpress/wp-load.php';
` + h + `add_action('wp_mail_failed', function ($e) { fwrite(STDERR, "wp_mail_failed: " . $e->get_error_message() . "\n"); });
$ok = wp_mail('x@example.org', '` + tok + `', "WordPress wp_mail\n` + tok + `\n");
echo $ok ? "sent ok\n" : "wp_mail failed\n";
exit($ok ? 0 : 1);
`
}

// clientScript writes src into the user's ~/loopback and returns its path.
func clientScript(t *testing.T, u *user.User, name, src string) string {
	t.Helper()
	p := filepath.Join(u.HomeDir, "loopback", name)
	writeFileAs(t, u, p, []byte(src), 0o644)
	return p
}

func loopbackClients() []client {
	return []client{
		{name: "phpmailer-article", via: "smtp", process: []string{"phpmailer-article.php"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "phpmailer-article.php", phpMailerScript(tok, phpMailerArticle))
			out := runAs(t, u, nil, nil, "php", p)
			if !strings.Contains(out, "CLIENT -> SERVER: STARTTLS") || !strings.Contains(out, "AUTH") {
				t.Errorf("PHPMailer with SMTPSecure=tls and SMTPAuth did not STARTTLS and AUTH:\n%s", out)
			}
			return out
		}},
		{name: "phpmailer-none", via: "smtp", process: []string{"phpmailer-none.php"}, send: func(t *testing.T, u *user.User, tok string) string {
			// Only isSMTP() and Host: port 25, no AUTH; PHPMailer still
			// does STARTTLS when offered (SMTPAutoTLS) and verifies.
			p := clientScript(t, u, "phpmailer-none.php", phpMailerScript(tok, ""))
			return runAs(t, u, nil, nil, "php", p)
		}},
		{name: "actionmailer-article", via: "smtp", process: []string{"actionmailer-article.rb"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "actionmailer-article.rb", actionMailerScript(actionMailerArticle))
			return runAs(t, u, nil, nil, "ruby", p, tok)
		}},
		{name: "actionmailer-none", via: "smtp", process: []string{"actionmailer-none.rb"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "actionmailer-none.rb", actionMailerScript(`address: '127.0.0.1', port: 25`))
			return runAs(t, u, nil, nil, "ruby", p, tok)
		}},
		{name: "wordpress-smtp-hook", via: "smtp", process: []string{"wordpress-smtp.php"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "wordpress-smtp.php", wordpressScript(tok, true))
			return runAs(t, u, nil, nil, "php", p)
		}},
		{name: "wordpress-default", via: "maildrop", process: []string{"wordpress-default.php"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "wordpress-default.php", wordpressScript(tok, false))
			return runAs(t, u, nil, nil, "php", p)
		}},
		{name: "swaks-587-tls-auth", via: "smtp", process: []string{"/usr/bin/swaks"}, send: func(t *testing.T, u *user.User, tok string) string {
			// --tls-verify: the system store must vouch for 127.0.0.1.
			return runAs(t, u, nil, nil, "swaks", "--server", "127.0.0.1", "--port", "587", "--tls", "--tls-verify",
				"--auth", "PLAIN", "--auth-user", articleUser, "--auth-password", articlePassword,
				"--from", "swaks@example.com", "--to", "x@example.org",
				"--header", "Subject: "+tok, "--body", "swaks over SMTP\n"+tok+"\n")
		}},
		{name: "swaks-ipv6-25", via: "smtp", process: []string{"/usr/bin/swaks"}, send: func(t *testing.T, u *user.User, tok string) string {
			if noIPv6 != nil {
				t.Skipf("no IPv6 loopback here: %v", noIPv6)
			}
			return runAs(t, u, nil, nil, "swaks", "--server", "::1", "--port", "25", "-6",
				"--from", "swaks@example.com", "--to", "x@example.org",
				"--header", "Subject: "+tok, "--body", "swaks over SMTP\n"+tok+"\n")
		}},
		{name: "swaks-unix-socket", via: "smtp", process: []string{"/usr/bin/swaks"}, send: func(t *testing.T, u *user.User, tok string) string {
			return runAs(t, u, nil, nil, "swaks", "--socket", smtpSock,
				"--from", "swaks@example.com", "--to", "x@example.org",
				"--header", "Subject: "+tok, "--body", "swaks over SMTP\n"+tok+"\n")
		}},
		{name: "python-smtplib-587-tls-auth", via: "smtp", process: []string{"smtplib-tls.py"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "smtplib-tls.py", pythonScript("127.0.0.1", 587, true))
			return runAs(t, u, nil, nil, "python3", p, tok)
		}},
		{name: "python-smtplib-25", via: "smtp", process: []string{"smtplib-plain.py"}, send: func(t *testing.T, u *user.User, tok string) string {
			p := clientScript(t, u, "smtplib-plain.py", pythonScript("127.0.0.1", 25, false))
			return runAs(t, u, nil, nil, "python3", p, tok)
		}},
	}
}

func TestLoopbackClients(t *testing.T) {
	s := loopbackSetup(t)
	startWordPress(t) // for the wordpress-* clients
	for _, c := range loopbackClients() {
		for _, u := range []*user.User{s.Alice, s.Bob} {
			t.Run(c.name+"/"+u.Username, func(t *testing.T) {
				tok := token(t)
				out := c.send(t, u, tok)
				if !strings.Contains(out, "sent ok") && !strings.Contains(out, "250 ") {
					t.Errorf("%s as %s: no success reported:\n%s", c.name, u.Username, out)
				}
				// The script is in the origin header too.
				want := Want{User: u, Via: c.via, BodyHas: []string{tok}, Script: c.process[0]}
				got := checkDelivered(t, s, tok, want)
				// Its own subtest: the delivery above stands whatever
				// this says.
				t.Run("process-named", func(t *testing.T) { checkProcess(t, got, c.via, c.process) })
			})
		}
	}
}

// checkProcess checks that relayd's pickup line names the client's
// process: for SMTP, its pid= and its process= (or script=) with one of
// want; for the sendmail door, the script.
func checkProcess(t *testing.T, c *Checked, via string, want []string) {
	t.Helper()
	if via == "smtp" && c.Pickup.Get("pid") == "" {
		t.Errorf("relayd's pickup line names no pid= for the client's process: %s", c.Pickup.Line)
	}
	for _, k := range []string{"process", "script"} {
		for _, w := range want {
			if strings.Contains(c.Pickup.Get(k), w) {
				return
			}
		}
	}
	t.Errorf("relayd's pickup line does not name the client's process (one of %q in process= or script=): %s", want, c.Pickup.Line)
}

// TestLoopbackNoImpersonation: bob's connection claims to be alice in
// AUTH and MAIL FROM; the message is recorded under bob's UID (or refused
// by the sender policy), never under alice's.
func TestLoopbackNoImpersonation(t *testing.T) {
	s := loopbackSetup(t)
	for _, tc := range []struct {
		name  string
		claim string // the AUTH username, recorded as auth_claim
		args  []string
	}{
		{"auth-as-alice", alice, []string{"--server", "127.0.0.1", "--port", "587", "--tls",
			"--auth", "PLAIN", "--auth-user", alice, "--auth-password", "x", "--from", "bob@example.com"}},
		{"auth-and-from-alice", alice, []string{"--server", "127.0.0.1", "--port", "587", "--tls",
			"--auth", "LOGIN", "--auth-user", alice, "--auth-password", "x", "--from", "alice@example.com"}},
		{"auth-as-uid", "uid:" + s.Alice.Uid, []string{"--server", "127.0.0.1", "--port", "25",
			"--auth", "PLAIN", "--auth-user", "uid:" + s.Alice.Uid, "--auth-password", "x", "--from", "e2e-alice@" + hostname}},
		{"unix-socket-from-alice", "", []string{"--socket", smtpSock, "--from", alice + "@" + hostname}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := token(t)
			args := append(tc.args, "--to", "x@example.org", "--header", "Subject: "+tok,
				"--header", "X-Claim: uid="+s.Alice.Uid+" user="+alice, "--body", "impersonation "+tok+"\n")
			runAs(t, s.Bob, nil, nil, "swaks", args...)
			c := checkDelivered(t, s, tok, Want{User: s.Bob, Via: "smtp", BodyHas: []string{tok}})
			if strings.Contains(c.OriginLine, "uid="+s.Alice.Uid+" ") || strings.Contains(c.Pickup.Line, "uid="+s.Alice.Uid+" ") {
				t.Errorf("recorded as alice: origin %q, pickup %s", c.OriginLine, c.Pickup.Line)
			}
			for _, r := range c.Msg.Header["Received"] {
				if regexp.MustCompile(`from uid ` + s.Alice.Uid + `\b`).MatchString(r) {
					t.Errorf("a Received: names alice's uid: %q", r)
				}
			}
			// The username is kept as what it is: a claim.
			if tc.claim != "" && c.Pickup.Get("auth_claim") != tc.claim {
				t.Errorf("pickup line's auth_claim=%q, want %q: %s", c.Pickup.Get("auth_claim"), tc.claim, c.Pickup.Line)
			}
		})
	}

	// With a sender policy, AUTH as alice does not let bob use alice's
	// address: MAIL FROM is refused (553) and nothing is sent.
	t.Run("policy-refuses-alice-sender", func(t *testing.T) {
		c := s.Relayd.LoopbackConfig()
		c.Extra += fmt.Sprintf("\n[policy.allowed_senders]\n%q = [\"%%u\", \"bob@example.com\"]\n", bob)
		s.Relayd.Restart(t, c)
		defer s.Relayd.Restart(t, s.Relayd.LoopbackConfig())
		tok := token(t)
		cmd := asUser(s.Bob, nil, "swaks", "--server", "127.0.0.1", "--port", "587", "--tls",
			"--auth", "PLAIN", "--auth-user", alice, "--auth-password", "x", "--from", "alice@example.com",
			"--to", "x@example.org", "--header", "Subject: "+tok, "--body", "policy "+tok+"\n")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "553 5.7.1") {
			t.Fatalf("bob's MAIL FROM alice@example.com with AUTH as alice: %v, want a 553 refusal:\n%s", err, out)
		}
		// A message bob may send goes through on the same configuration,
		// so the refusal above was the policy.
		ok := token(t)
		runAs(t, s.Bob, nil, nil, "swaks", "--server", "127.0.0.1", "--port", "587", "--tls",
			"--auth", "PLAIN", "--auth-user", alice, "--auth-password", "x", "--from", "bob@example.com",
			"--to", "x@example.org", "--header", "Subject: "+ok, "--body", "policy "+ok+"\n")
		checkDelivered(t, s, ok, Want{User: s.Bob, Via: "smtp", BodyHas: []string{ok}})
		for _, m := range mustMessages(t, s) {
			if strings.Contains(string(m.Raw), tok) {
				t.Errorf("the refused message was delivered:\n%s", m.Raw)
			}
		}
	})
}

// startWordPress sets up wordpress.sh's site once and stops the MariaDB it
// started when the suite ends.
var (
	wpOnce  sync.Once
	wpState string
	wpErr   error
)

func startWordPress(t *testing.T) {
	t.Helper()
	wpOnce.Do(func() {
		wpState = filepath.Join(os.TempDir(), "mailshim-e2e-wordpress")
		out, err := runErr("bash", filepath.Join(repoRoot(), "test", "e2e", "loopback", "wordpress.sh"), "start", wpState)
		if err != nil {
			wpErr = fmt.Errorf("wordpress.sh start: %v\n%s", err, out)
			return
		}
		t.Logf("%s", strings.TrimSpace(out))
	})
	if wpErr != nil {
		t.Fatal(wpErr)
	}
}

// stopLoopback ends what the loopback tests started for the whole run (the
// MariaDB that wordpress.sh started, if it did).
func stopLoopback() {
	if wpState != "" {
		runErr("bash", filepath.Join(repoRoot(), "test", "e2e", "loopback", "wordpress.sh"), "stop", wpState)
	}
}

// listenTOML turns the listener on with the certificate relayd tls-init
// made (the defaults, written out: this is what the tests rely on).
const listenTOML = `
[listen]
enabled = true
cert_file = "/etc/mailshim/tls/local.crt"
key_file = "/etc/mailshim/tls/local.key"
`

// TestLoopbackAdminCertificate: the admin's own certificate by [listen]
// cert_file/key_file instead of tls-init's: the listener presents it, and
// a client that trusts only the admin's CA verifies it.
func TestLoopbackAdminCertificate(t *testing.T) {
	s := loopbackSetup(t)
	dir := "/etc/mailshim/admin-tls"
	must(t, os.MkdirAll(dir, 0o750), "mkdir")
	defer os.RemoveAll(dir)
	ossl := func(args ...string) { run(t, "openssl", args...) }
	ca, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
		"-subj", "/CN=admin test CA", "-keyout", caKey, "-out", ca)
	ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-subj", "/CN=admin-cert.e2e.test", "-keyout", key, "-out", filepath.Join(dir, "req.pem"))
	ext := filepath.Join(dir, "ext.cnf")
	must(t, os.WriteFile(ext, []byte("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"), 0o644), "ext")
	ossl("x509", "-req", "-in", filepath.Join(dir, "req.pem"), "-CA", ca, "-CAkey", caKey, "-CAcreateserial",
		"-days", "2", "-extfile", ext, "-out", cert)
	run(t, "chown", "-R", "root:mailshim", dir)
	must(t, os.Chmod(key, 0o640), "chmod key")
	must(t, os.Chmod(ca, 0o644), "chmod ca")
	// The users must read the CA to verify against it.
	must(t, os.Chmod(dir, 0o755), "chmod dir")

	c := s.Relayd.LoopbackConfig()
	c.Extra = fmt.Sprintf("\n[listen]\nenabled = true\ncert_file = %q\nkey_file = %q\n", cert, key)
	s.Relayd.Restart(t, c)
	defer s.Relayd.Restart(t, s.Relayd.LoopbackConfig())
	tok := token(t)
	out := runAs(t, s.Alice, nil, nil, "swaks", "--server", "127.0.0.1", "--port", "587", "--tls", "--tls-verify",
		"--tls-ca-path", ca, "--from", "alice@example.com", "--to", "x@example.org",
		"--header", "Subject: "+tok, "--body", "admin certificate "+tok+"\n")
	if !strings.Contains(out, "CN=admin-cert.e2e.test") {
		t.Errorf("the listener did not present the admin's certificate:\n%s", out)
	}
	checkDelivered(t, s, tok, Want{User: s.Alice, Via: "smtp", BodyHas: []string{tok}})
}
