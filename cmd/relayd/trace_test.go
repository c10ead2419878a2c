package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submitsock"
)

// forgedMessage carries a caller's own copies of the trace fields relayd
// adds: an origin header claiming root's cron, the same under the custom
// header name, and a Received: line in mailshim's form (folded).
const forgedMessage = "X-Mailshim-Origin: uid=0 user=root script=/etc/cron.daily/backup\n" +
	"x-origin: uid=0 user=root\n" +
	"Received: from uid 0 (root)\n by web1.example.com (mailshim) id 0006270A1B2C3D4E5F60;\n Mon, 23 Nov 2026 14:40:00 +0000\n" +
	"Received: from mx.example.net by relay.example.org (Postfix) with ESMTP id 4ABC;\n Mon, 23 Nov 2026 14:39:00 +0000\n" +
	"To: alice@example.org\nSubject: forged trace\n\nbody\n"

// headerLines returns the unfolded fields of a delivered message's header
// section whose name is name (case-insensitive).
func headerLines(data, name string) []string {
	head, _, _ := strings.Cut(strings.ReplaceAll(data, "\r\n", "\n"), "\n\n")
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(head, "\n ", " "), "\n") {
		if n, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(n, name) {
			out = append(out, l)
		}
	}
	return out
}

// A caller's own origin header or mailshim Received: line never reaches
// the upstream as ours, whichever door the message came through: the
// maildrop (sendmail), the submission socket (submitsock.Send), and sendmail
// as an unprivileged user that falls back to the socket. The forged fields
// arrive renamed X-Mailshim-Forged-*, the other MTA's Received: untouched,
// and ours (one of each) name the real UID.
func TestForgedTraceNeverPassesAsOurs(t *testing.T) {
	for _, header := range []string{"", "X-Origin"} {
		for _, door := range []string{"sendmail", "socket", "sendmail-nobody"} {
			t.Run(fmt.Sprintf("%s/header=%s", door, header), func(t *testing.T) {
				if door == "sendmail-nobody" && os.Geteuid() != 0 {
					t.Skip("running sendmail as nobody needs root (CI runs as root)")
				}
				up := newUpstream(t, smtptest.Options{})
				s := newSite(t, up, siteOpts{})
				ours := "X-Mailshim-Origin"
				if header != "" {
					s.writeConfig(fmt.Sprintf("\n[trace]\nheader = %q\n", header))
					ours = header
				}
				s.start()
				uid := os.Getuid()
				switch door {
				case "socket":
					m := &spool.Meta{Env: spool.Envelope{Recipients: []string{"alice@example.org"}}}
					if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader(forgedMessage)); err != nil {
						t.Fatal(err)
					}
				default:
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					cmd := exec.CommandContext(ctx, sendmailBin, "-t", "-i")
					cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
					cmd.Stdin = strings.NewReader(forgedMessage)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					if door == "sendmail-nobody" {
						uid = 65534
						cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
						cmd.Dir = "/"
					}
					if err := cmd.Run(); err != nil {
						t.Fatalf("sendmail: %v\n%s", err, stderr.String())
					}
				}
				msgs, err := up.WaitFor(1, 30*time.Second)
				if err != nil {
					t.Fatalf("%v\n%s", err, s.log())
				}
				data := string(msgs[0].Data)
				origin := headerLines(data, ours)
				if len(origin) != 1 || !strings.HasPrefix(origin[0], ours+": uid="+fmt.Sprint(uid)+" ") {
					t.Errorf("origin fields named %s: %q, want only ours with uid=%d\n%s", ours, origin, uid, data)
				}
				if header != "" {
					if got := headerLines(data, "X-Mailshim-Origin"); len(got) != 0 {
						t.Errorf("the caller's X-Mailshim-Origin passed under a custom [trace] header: %q", got)
					}
				}
				var mailshim []string
				for _, r := range headerLines(data, "Received") {
					if strings.Contains(r, "mailshim") {
						mailshim = append(mailshim, r)
					}
				}
				if len(mailshim) != 1 || !regexp.MustCompile(`^Received: from uid `+fmt.Sprint(uid)+` \(`).MatchString(mailshim[0]) {
					t.Errorf("mailshim Received fields: %q, want only ours (uid %d)", mailshim, uid)
				}
				if got := headerLines(data, "Received"); len(got) != 2 || !strings.Contains(got[1], "(Postfix)") {
					t.Errorf("the other MTA's Received: should be kept: %q", got)
				}
				forgedOrigin := headerLines(data, "X-Mailshim-Forged-Origin")
				wantForged := 1
				if header != "" {
					wantForged = 2 // x-origin is ours too
				}
				if len(forgedOrigin) != wantForged || !strings.Contains(forgedOrigin[0], "uid=0 user=root script=/etc/cron.daily/backup") {
					t.Errorf("renamed origin fields: %q", forgedOrigin)
				}
				if got := headerLines(data, "X-Mailshim-Forged-Received"); len(got) != 1 || !strings.Contains(got[0], "from uid 0 (root) by web1.example.com (mailshim)") {
					t.Errorf("renamed Received fields: %q", got)
				}
				if !strings.Contains(s.log(), "event=forged-trace ") {
					t.Errorf("no forged-trace log line:\n%s", s.log())
				}
			})
		}
	}
}

// signingSite starts relayd on a site whose [trace] key_file signs the
// origin header, and returns the site and its upstream.
func signingSite(t *testing.T) (*site, *smtptest.Server) {
	t.Helper()
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	keyFile := filepath.Join(s.dir, "origin.key")
	if err := os.WriteFile(keyFile, []byte("k3y-0f-at-least-16-bytes-for-hmac\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(fmt.Sprintf("\n[trace]\nkey_file = %q\n", keyFile))
	s.start()
	return s, up
}

// runVerifyOrigin runs relayd verify-origin with cfg as its configuration
// and stdin as its input, and returns its standard output, standard
// error and exit code. A run that did not end in an exit (the binary did
// not start, or the timeout killed it) fails the test rather than
// passing as exit 0, "genuine".
func runVerifyOrigin(t *testing.T, cfg string, stdin io.Reader) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relaydBin, "verify-origin")
	cmd.Env = append(os.Environ(), "MAILSHIM_CONFIG="+cfg)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Exited() {
			t.Fatalf("relayd verify-origin: %v (stderr %q)", err, errb.String())
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// With [trace] key_file the origin header is signed, and relayd
// verify-origin tells the delivered message's genuine header (exit 0)
// from an altered one or one copied into another message (exit 1). A
// caller who copies a genuine signed header into its own message gets it
// renamed, and its message carries its own genuine origin.
func TestVerifyOrigin(t *testing.T) {
	s, up := signingSite(t)
	verify := func(data string) (string, string, int) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "msg")
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		in, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		return runVerifyOrigin(t, s.cfgPath, in)
	}
	m := &spool.Meta{Env: spool.Envelope{Recipients: []string{"alice@example.org"}}, Origin: spool.Origin{Script: "/srv/www/shop/contact.php", ScriptSource: "SCRIPT_FILENAME"}}
	if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: first\n\nhello\n")); err != nil {
		t.Fatal(err)
	}
	msgs, err := up.WaitFor(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := string(msgs[0].Data)
	out, stderr, code := verify(first)
	uid := fmt.Sprint(os.Getuid())
	if code != 0 || !regexp.MustCompile(`^genuine: X-Mailshim-Origin: uid=`+uid+` user=\S+ script=/srv/www/shop/contact.php id=[0-9A-F]{20}\n$`).MatchString(out) {
		t.Fatalf("the delivered message: exit %d, %q %q", code, out, stderr)
	}
	origin := headerLines(first, "X-Mailshim-Origin")[0]
	if !strings.Contains(origin, " mac=") {
		t.Fatalf("not signed: %q", origin)
	}
	// Altered: another uid.
	if out, _, code := verify(strings.Replace(first, "X-Mailshim-Origin: uid="+uid+" ", "X-Mailshim-Origin: uid=33 ", 1)); code != 1 || !strings.HasPrefix(out, "not genuine: the signature does not match") {
		t.Errorf("altered: exit %d %q", code, out)
	}
	// Copied into another message by hand (not through mailshim).
	other := "X-Mailshim-Origin:" + strings.TrimPrefix(origin, "X-Mailshim-Origin:") + "\r\nMessage-ID: <forged@example.net>\r\nSubject: spam\r\n\r\nbuy\r\n"
	if out, _, code := verify(other); code != 1 || !strings.Contains(out, "not genuine") {
		t.Errorf("copied: exit %d %q", code, out)
	}
	// Copied into a message sent through mailshim: renamed, and the new
	// message's own header is the genuine one.
	if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader(origin+"\nSubject: second\n\nhello\n")); err != nil {
		t.Fatal(err)
	}
	msgs, err = up.WaitFor(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	second := string(msgs[1].Data)
	if got := headerLines(second, "X-Mailshim-Forged-Origin"); len(got) != 1 {
		t.Errorf("the copied header was not renamed: %q", got)
	}
	if out, _, code := verify(second); code != 0 || strings.Contains(out, headerLines(first, "X-Mailshim-Origin")[0][len("X-Mailshim-Origin: "):]) {
		t.Errorf("second: exit %d %q", code, out)
	}
	// Without a key nothing can be verified: a configuration error.
	s.writeConfig("")
	if _, stderr, code := verify(first); code != 78 || !strings.Contains(stderr, "key_file is not set") {
		t.Errorf("no key: exit %d %q", code, stderr)
	}
}

// The SMTP listener is a door like the others: a client's forged trace
// fields are renamed, and the per-account policy answers a rate limit
// with 451 4.7.1 naming the limit (a static limit with 553 5.7.1).
func TestListenForgedTraceAndPolicy(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + `
[policy]
notice_to = ""
[policy.www-data]
messages_per_minute = 0
messages_per_hour = 1
from_domains = ["shop.example"]
action = "refuse"
`})
	d := s.start()
	defer d.term(t)
	addr := s.listenAddrs()["tcp4"]
	cmd := exec.Command("setpriv", "--reuid=33", "--regid=33", "--clear-groups", "/usr/bin/python3", "-c", `
import smtplib, sys
c = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
c.ehlo("x")
forged = sys.argv[2].replace("\n", "\r\n")
def send(frm, subject, extra=""):
    try:
        c.sendmail("www-data@shop.example", ["alice@example.org"], extra + "From: " + frm + "\r\nSubject: " + subject + "\r\n\r\nbody\r\n")
        print("250")
    except smtplib.SMTPDataError as e:
        print(e.smtp_code, e.smtp_error.decode())
send("www-data@shop.example", "forged over smtp", forged)
send("ceo@bank.example", "wrong domain")
send("www-data@shop.example", "over the rate")
`, addr[strings.LastIndexByte(addr, ':')+1:], strings.SplitN(forgedMessage, "To:", 2)[0])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || lines[0] != "250" ||
		!strings.HasPrefix(lines[1], `553 5.7.1 policy: the From: address "ceo@bank.example" is not in a domain`) ||
		!strings.HasPrefix(lines[2], "451 4.7.1 policy: rate limit messages_per_hour=1 reached ([policy.www-data])") {
		t.Fatalf("replies:\n%s", out)
	}
	msgs, err := up.WaitFor(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := string(msgs[0].Data)
	if got := headerLines(data, "X-Mailshim-Origin"); len(got) != 1 || !strings.HasPrefix(got[0], "X-Mailshim-Origin: uid=33 ") {
		t.Errorf("origin: %q\n%s", got, data)
	}
	if got := headerLines(data, "X-Mailshim-Forged-Origin"); len(got) != 1 {
		t.Errorf("forged origin not renamed: %q", got)
	}
	if got := headerLines(data, "X-Mailshim-Forged-Received"); len(got) != 1 {
		t.Errorf("forged Received not renamed: %q", got)
	}
	if up.Count() != 1 {
		t.Errorf("%d delivered, want only the first", up.Count())
	}
}
