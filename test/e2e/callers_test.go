//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Real callers, as unprivileged users, through the installed
// /usr/sbin/sendmail, to the real Postfix upstream.

// phpScript writes a PHP script into the user's ~/site and returns its path.
func phpScript(t *testing.T, u *user.User, name, tok, src string) string {
	t.Helper()
	p := filepath.Join(u.HomeDir, "site", name)
	writeFileAs(t, u, p, []byte(strings.ReplaceAll(src, "TOKEN", tok)), 0o644)
	return p
}

// A body with the things that break naive MTAs: a leading dot, a lone dot
// line (sent with -i), 8-bit UTF-8, trailing spaces.
const trickyBody = "Hello from mailshim's e2e suite.\n.leading dot\n.\nUTF-8: gr\u00fc\u00dfe, \u65e5\u672c\ntrailing space \nTOKEN\n"

func tricky(tok string) string { return strings.ReplaceAll(trickyBody, "TOKEN", tok) }

// phpEOL is the line end PHP's mail() writes after the message (its
// MAIL_NEWLINE): part of what the caller sent, so part of the body.
const phpEOL = "\n"

// phpString quotes s as a PHP double-quoted string.
func phpString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", `\$`, "\n", `\n`, "\r", `\r`)
	return `"` + r.Replace(s) + `"`
}

func TestCallers(t *testing.T) {
	s := setup(t)
	cronTok := startCron(t, s)
	var refused []string // tokens of messages that must never arrive
	defer func() {
		// By now later messages have arrived, so a refused one that had
		// been queued would have too.
		for _, m := range mustMessages(t, s) {
			for _, tok := range refused {
				if strings.Contains(string(m.Raw), tok) {
					t.Errorf("a message sendmail refused was delivered:\n%s", m.Raw)
				}
			}
		}
	}()

	t.Run("php-cli-mail", func(t *testing.T) {
		tok := token(t)
		p := phpScript(t, s.Alice, "plain.php", tok, `<?php
$ok = mail("x@example.org", "TOKEN", `+phpString(tricky(tok))+`,
    ["From" => "Alice <alice@example.com>", "Bcc" => "hidden@example.net"]);
echo $ok ? "sent ok\n" : "mail() failed\n";
exit($ok ? 0 : 1);
`)
		out := runAs(t, s.Alice, nil, nil, "php", p)
		if !strings.Contains(out, "sent ok") {
			t.Fatalf("php: %s", out)
		}
		checkDelivered(t, s, tok, Want{User: s.Alice, Script: p, Sender: "alice@example.com",
			Recipients: []string{"x@example.org", "hidden@example.net"}, Body: tricky(tok) + phpEOL})
	})

	t.Run("php-cli-mail-f", func(t *testing.T) {
		tok := token(t)
		p := phpScript(t, s.Bob, "withf.php", tok, `<?php
$ok = mail("x@example.org", "TOKEN", "Body with -f TOKEN\n", "From: bob@example.com", "-fbob-bounces@example.com");
echo $ok ? "sent ok\n" : "mail() failed\n";
exit($ok ? 0 : 1);
`)
		runAs(t, s.Bob, nil, nil, "php", p)
		checkDelivered(t, s, tok, Want{User: s.Bob, Script: p, Sender: "bob-bounces@example.com",
			Body: "Body with -f " + tok + "\n" + phpEOL})
	})

	t.Run("php-cli-mail-add-x-header", func(t *testing.T) {
		tok := token(t)
		p := phpScript(t, s.Bob, "xheader.php", tok, `<?php
$ok = mail("x@example.org", "TOKEN", "x-header TOKEN\n", "From: bob@example.com");
exit($ok ? 0 : 1);
`)
		runAs(t, s.Bob, nil, nil, "php", "-d", "mail.add_x_header=On", p)
		c := checkDelivered(t, s, tok, Want{User: s.Bob, Script: "xheader.php", Sender: "e2e-bob@" + hostname})
		x := c.Msg.Header.Get("X-PHP-Originating-Script")
		if x != s.Bob.Uid+":xheader.php" {
			t.Errorf("X-PHP-Originating-Script: %q, want %q", x, s.Bob.Uid+":xheader.php")
		}
	})

	t.Run("php-mail-f-injection", func(t *testing.T) {
		// CVE-2016-10033's class: a "sender" that smuggles options into
		// the 5th parameter. sendmail must refuse -X (a path) and store
		// nothing; mail() reports failure.
		tok := token(t)
		pwn := filepath.Join(os.TempDir(), "mailshim-e2e-pwn-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		p := phpScript(t, s.Bob, "inject.php", tok, `<?php
$ok = mail("x@example.org", "TOKEN", "<?php echo 'owned'; ?>", "From: bob@example.com",
    "-fbob@example.com -X`+pwn+` -OQueueDirectory=/tmp");
echo $ok ? "sent\n" : "refused\n";
`)
		out := runAs(t, s.Bob, nil, nil, "php", p)
		if !strings.Contains(out, "refused") {
			t.Errorf("mail() with -X in its 5th parameter succeeded: %s", out)
		}
		if fileExists(pwn) {
			os.Remove(pwn)
			t.Fatalf("sendmail wrote the -X file %s", pwn)
		}
		// The same arguments straight to sendmail: EX_USAGE, one line.
		c := asUser(s.Bob, nil, "/usr/sbin/sendmail", "-t", "-i", "-fbob@example.com", "-X"+pwn)
		c.Stdin = strings.NewReader("Subject: " + tok + "\n\nx\n")
		b, err := c.CombinedOutput()
		if code := exitCode(err); code != 64 {
			t.Errorf("sendmail -X: exit %d, want 64 (EX_USAGE): %s", code, b)
		}
		if lines := strings.Count(strings.TrimSpace(string(b)), "\n") + 1; len(b) == 0 || lines > 2 {
			t.Errorf("sendmail -X: want one line on stderr (and maybe a hint), got %q", b)
		}
		// Exit status 64 means nothing was stored (PRODUCT.md): the Maildir
		// is checked for it at the end of TestCallers.
		refused = append(refused, tok)
	})

	t.Run("php-cgi", func(t *testing.T) {
		tok := token(t)
		p := phpScript(t, s.Bob, "cgi.php", tok, `<?php
header("Content-Type: text/plain");
$ok = mail("x@example.org", "TOKEN", "from php-cgi TOKEN\n", "From: bob@example.com");
echo $ok ? "sent ok\n" : "mail() failed\n";
`)
		env := []string{"SCRIPT_FILENAME=" + p, "SCRIPT_NAME=/cgi.php", "REQUEST_METHOD=GET",
			"REDIRECT_STATUS=200", "GATEWAY_INTERFACE=CGI/1.1", "SERVER_PROTOCOL=HTTP/1.1",
			"SERVER_NAME=web1.e2e.test", "REMOTE_ADDR=127.0.0.1", "QUERY_STRING="}
		out := runAs(t, s.Bob, env, nil, "php-cgi")
		if !strings.Contains(out, "sent ok") {
			t.Fatalf("php-cgi's page: %s", out)
		}
		checkDelivered(t, s, tok, Want{User: s.Bob, Script: p, Body: "from php-cgi " + tok + "\n" + phpEOL})
	})

	t.Run("php-fpm-prepend", func(t *testing.T) { testPHPFPM(t, s) })

	t.Run("phpmailer", func(t *testing.T) {
		tok := token(t)
		p := phpScript(t, s.Alice, "phpmailer.php", tok, `<?php
require '/usr/share/php/libphp-phpmailer/autoload.php';
use PHPMailer\PHPMailer\PHPMailer;
$m = new PHPMailer(true);
$m->isSendmail();
$m->setFrom('alice@example.com', 'Alice');
$m->addAddress('x@example.org');
$m->addBCC('hidden@example.net');
$m->Subject = 'TOKEN';
$m->Body = "PHPMailer body\n.leading dot\nTOKEN\n";
$m->send();
echo "sent ok\n";
`)
		runAs(t, s.Alice, nil, nil, "php", p)
		checkDelivered(t, s, tok, Want{User: s.Alice, Script: p, Sender: "alice@example.com",
			Recipients: []string{"x@example.org", "hidden@example.net"},
			BodyHas:    []string{"PHPMailer body\n.leading dot\n" + tok}})
	})

	t.Run("symfony-mailer-bs", func(t *testing.T) {
		tok := token(t)
		p := phpScript(t, s.Bob, "symfony.php", tok, `<?php
require '/usr/share/php/Symfony/Component/Mailer/autoload.php';
use Symfony\Component\Mailer\Mailer;
use Symfony\Component\Mailer\Transport;
use Symfony\Component\Mime\Email;
$mailer = new Mailer(Transport::fromDsn('sendmail://default'));
$email = (new Email())
    ->from('bob@example.com')
    ->to('x@example.org')
    ->bcc('hidden@example.net')
    ->subject('TOKEN')
    ->text("Symfony body\n.leading dot\nTOKEN\n");
$mailer->send($email);
echo "sent ok\n";
`)
		runAs(t, s.Bob, nil, nil, "php", p)
		checkDelivered(t, s, tok, Want{User: s.Bob, Script: p, Sender: "bob@example.com",
			Recipients: []string{"x@example.org", "hidden@example.net"},
			BodyHas:    []string{"Symfony body", ".leading dot", tok}})
	})

	t.Run("git-send-email", func(t *testing.T) { testGitSendEmail(t, s, "") })
	t.Run("git-send-email-envelope-sender", func(t *testing.T) { testGitSendEmail(t, s, "bob-git@example.com") })

	t.Run("s-nail", func(t *testing.T) {
		if !s.FromDeb {
			t.Skip("s-nail depends on an MTA: installed only once mailshim's .deb (mail-transport-agent) is")
		}
		tok := token(t)
		runAs(t, s.Bob, nil, []byte("s-nail body\n.leading dot\n"+tok+"\n"), "s-nail", "-s", tok, "x@example.org")
		checkDelivered(t, s, tok, Want{User: s.Bob, Sender: "e2e-bob@" + hostname,
			BodyHas: []string{"s-nail body\n.leading dot\n" + tok}})
	})

	t.Run("no-new-privs", func(t *testing.T) {
		// systemd NoNewPrivileges=, a container's no-new-privs: the setgid
		// bit does nothing, sendmail must use relayd's submission socket.
		tok := token(t)
		msg := "From: bob@example.com\nTo: x@example.org\nBcc: hidden@example.net\nSubject: " + tok + "\n\nno-new-privs " + tok + "\n"
		c := asUser(s.Bob, nil, "/usr/sbin/sendmail", "-t", "-i")
		c.Args = append([]string{c.Args[0], "--no-new-privs"}, c.Args[1:]...)
		c.Stdin = strings.NewReader(msg)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("sendmail under no-new-privs: %v\n%s", err, out)
		}
		checkDelivered(t, s, tok, Want{User: s.Bob, Via: "socket",
			Recipients: []string{"x@example.org", "hidden@example.net"},
			Body:       "no-new-privs " + tok + "\n"})
	})

	t.Run("cron", func(t *testing.T) {
		if cronTok == "" {
			t.Skip("cron could not be started (see log above)")
		}
		// MAILTO unset: cron mails the crontab's owner, a local name that
		// relayd's [aliases] turns into alice@example.com.
		checkDelivered(t, s, cronTok, Want{User: s.Alice, Sender: "alice@example.com", Repeats: true,
			Recipients: []string{"alice@example.com"}, BodyHas: []string{"cron output " + cronTok}})
	})
}

// startCron installs a crontab for alice that prints a token every minute
// and starts Debian's cron (unless one runs already). It returns the token.
func startCron(t *testing.T, s *System) string {
	tok := fmt.Sprintf("e2e-cron-%d", time.Now().UnixNano())
	tab := filepath.Join(t.TempDir(), "crontab")
	// No MAILTO: the mail goes to the owner.
	must(t, os.WriteFile(tab, []byte("* * * * * echo \"cron output "+tok+"\"\n"), 0o644), "crontab")
	run(t, "crontab", "-u", alice, tab)
	t.Cleanup(func() { runErr("crontab", "-u", alice, "-r") })
	// A cron of this system: pgrep also lists the crons of containers
	// running on this host (other PID namespaces), which read their own
	// crontabs, not this one.
	if out, err := exec.Command("pgrep", "-x", "cron").Output(); err == nil {
		self, _ := os.Readlink("/proc/self/ns/pid")
		for _, pid := range strings.Fields(string(out)) {
			if ns, err := os.Readlink("/proc/" + pid + "/ns/pid"); err == nil && ns == self {
				t.Logf("cron already running (pid %s): it rereads crontabs every minute", pid)
				return tok
			}
		}
	}
	c := exec.Command("cron", "-f")
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Start(); err != nil {
		t.Logf("cannot start cron: %v", err)
		return ""
	}
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		c.Wait()
	})
	return tok
}

func lastLines(s string, n int) string { return tail(s, n) }

// testGitSendEmail sends a patch with git send-email (which runs
// `sendmail -i [-f envelope] recipients...`).
func testGitSendEmail(t *testing.T, s *System, envelope string) {
	tok := token(t)
	repo := filepath.Join(s.Bob.HomeDir, "repo-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	writeFileAs(t, s.Bob, filepath.Join(repo, "README"), []byte("hello "+tok+"\n"), 0o644)
	git := func(args ...string) string {
		return runAs(t, s.Bob, nil, nil, "git", append([]string{"-C", repo}, args...)...)
	}
	git("init", "-q")
	git("config", "user.name", "Bob")
	git("config", "user.email", "bob@example.com")
	git("add", "README")
	git("commit", "-q", "-m", "Add README "+tok)
	git("format-patch", "-q", "-1", "-o", "out")
	args := []string{"send-email", "--confirm=never", "--suppress-cc=all", "--no-validate",
		"--smtp-server=/usr/sbin/sendmail", "--to=x@example.org", "--cc=dev@example.org",
		"--bcc=hidden@example.net"}
	want := "e2e-bob@" + hostname // no -f: the default sender
	if envelope != "" {
		args = append(args, "--envelope-sender="+envelope)
		want = envelope
	}
	out := git(append(args, "out")...)
	t.Logf("git send-email: %s", lastLines(out, 3))
	checkDelivered(t, s, tok, Want{User: s.Bob, Sender: want,
		Recipients: []string{"x@example.org", "dev@example.org", "hidden@example.net"},
		BodyHas:    []string{"+hello " + tok}})
}

// exitCode is a command's exit status (-1 if it did not exit normally).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
