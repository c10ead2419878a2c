package main

// relayd doctor, the real binary, against a running relayd on a private
// spool and pkg/smtptest's in-process upstream replying as Microsoft 365,
// Gmail and Amazon SES do.

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// doctorRun runs relayd doctor for site s and returns stdout, stderr and
// the exit status. It fails the test if the output holds the password.
func (s *site) doctor(args ...string) (string, string, int) {
	s.t.Helper()
	argv := append([]string{"doctor", "--config", s.cfgPath, "--sendmail", sendmailBin, "--timeout", "5s"}, args...)
	out, errOut, code := runCmd(s.t, nil, relaydBin, argv...)
	for _, o := range []string{out, errOut} {
		if strings.Contains(o, testPassword) {
			s.t.Fatalf("doctor printed the password:\n%s", o)
		}
	}
	return out, errOut, code
}

// firstFailure returns the first ✘ line and the cause and fix lines under
// it.
func firstFailure(out string) (line, cause, fix string) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.Contains(l, "✘") {
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

func TestDoctorHealthy(t *testing.T) {
	up := newUpstream(t, smtptest.Options{MaxSize: 10 << 20, SMTPUTF8: true})
	s := newSite(t, up, siteOpts{})
	s.start()
	out, errOut, code := s.doctor()
	if code != 0 || !strings.Contains(out, "all checks passed") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"✔ tcp", "✔ greeting", "✔ starttls", "✔ tls-chain", "✔ tls-name", "tls-expiry    expires", "✔ tls-handshake",
		"AUTH PLAIN as relay@example.com accepted", "RCPT TO:<doctor-relay-test@example.org>", "✔ rset", "✔ quit",
		"relayd answers on", "! capabilities", // SIZE 10 MB < max_message_size 50 MB: a warning
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if n := up.Count(); n != 0 {
		t.Errorf("doctor without --send-to delivered %d message(s)", n)
	}
	// --json: the same, as one object.
	js, _, code := s.doctor("--json")
	var rep struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Name, Status, Upstream, Saw string
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil || code != 0 || !rep.OK {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, js)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "config layout sendmail spool relayd listen secrets hostname settings dns tcp greeting ehlo starttls tls-chain tls-name tls-expiry tls-handshake capabilities auth mail rcpt rset quit") {
		t.Errorf("checks in --json: %s", got)
	}
}

// TestDoctorSendTo: --send-to sends one message through relayd's queue and
// prints the upstream's queue id.
func TestDoctorSendTo(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	out, errOut, code := s.doctor("--send-to", "admin@example.net", "--log-file", s.logPath)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	msgs, err := up.WaitFor(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].To[0] != "admin@example.net" {
		t.Fatalf("delivered: %+v", msgs)
	}
	if !strings.Contains(out, "delivered, upstream queue id "+msgs[0].QueueID) {
		t.Errorf("no upstream queue id %s in\n%s", msgs[0].QueueID, out)
	}
}

// Provider replies: doctor's first ✘ and relayd's log line for a message
// give the same cause and fix.
func TestDoctorProviderReplies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stage     string
		reply     *smtp.SMTPError
		check     string
		cause     string
		noLogin   bool
		logEvent  string
		logStatus string
	}{
		{"m365-smtp-auth-disabled", smtptest.StageAuth,
			&smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 139}, Message: "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0054.namprd05.prod.outlook.com]"},
			"✘ auth", "Microsoft 365 has SMTP AUTH", false, "auth-failed", ""},
		{"m365-basic-auth", smtptest.StageAuth,
			&smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 139}, Message: "Authentication unsuccessful, basic authentication is disabled. [BN9PR03CA0123.namprd03.prod.outlook.com]"},
			"✘ auth", "refuses basic authentication", false, "auth-failed", ""},
		{"gmail-app-password", smtptest.StageAuth,
			&smtp.SMTPError{Code: 534, EnhancedCode: smtp.EnhancedCode{5, 7, 9}, Message: "Application-specific password required. For more information, go to\nhttps://support.google.com/mail/?p=InvalidSecondFactor d2e1a72fcca58-7d5-gsmtp"},
			"✘ auth", "an app password is required", false, "auth-failed", ""},
		{"gmail-auth-required", smtptest.StageMail,
			&smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication Required. For more information, go to\nhttps://support.google.com/mail/?p=WantAuthError d2e1a72fcca58-7d5-gsmtp"},
			"✘ mail", "relayd did not authenticate", true, "delivery", "deferred"},
		{"postfix-relay-denied-after-auth", smtptest.StageRcpt,
			&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<doctor-relay-test@example.org>: Relay access denied"},
			"✘ rcpt", "refuses to relay for us", false, "delivery", "deferred"},
		{"ses-not-verified", smtptest.StageMail,
			&smtp.SMTPError{Code: 554, EnhancedCode: smtp.NoEnhancedCode, Message: "Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: app@example.org"},
			"✘ mail", "Amazon SES sends only from verified identities", false, "delivery", "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
				if stage == tc.stage {
					return tc.reply
				}
				return nil
			}})
			s := newSite(t, up, siteOpts{})
			if tc.noLogin {
				s.writeConfig("")
				b, _ := os.ReadFile(s.cfgPath)
				cfg := regexp.MustCompile(`(?m)^(username|password_file) = .*\n`).ReplaceAllString(string(b), "")
				os.WriteFile(s.cfgPath, []byte(cfg), 0o644)
			}
			s.start()
			out, _, code := s.doctor("--sender", "app@example.org")
			line, cause, fix := firstFailure(out)
			if code != 1 || !strings.HasPrefix(line, tc.check) || !strings.Contains(cause, tc.cause) || fix == "" {
				t.Fatalf("exit %d, first failure %q cause %q fix %q, want %q and %q\n%s", code, line, cause, fix, tc.check, tc.cause, out)
			}
			first, _, _ := strings.Cut(tc.reply.Message, "\n")
			if !strings.Contains(out, "reply: "+strconv.Itoa(tc.reply.Code)) || !strings.Contains(out, first) {
				t.Errorf("the reply is not printed whole:\n%s", out)
			}
			// relayd meets the same reply with a real message: its log
			// line says the same cause and fix.
			s.drop("provider", 1)
			waitfor.True(t, "relayd's "+tc.logEvent+" line", 20*time.Second, func() bool {
				return strings.Contains(s.log(), "event="+tc.logEvent)
			})
			var logLine string
			for _, l := range strings.Split(s.log(), "\n") {
				if strings.Contains(l, "event="+tc.logEvent) && strings.Contains(l, "cause=") {
					logLine = l
					break
				}
			}
			if logKV(logLine, "cause") != cause || logKV(logLine, "fix") != fix {
				t.Errorf("relayd's log and doctor differ:\nlog:    %s\ndoctor: cause %q fix %q", logLine, cause, fix)
			}
		})
	}
}

// An unknown reply is said to be unknown and printed whole.
func TestDoctorUnknownReply(t *testing.T) {
	const text = "Policy violation XK-1138: contact helpdesk quoting reference 42 before relaying"
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: text}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{})
	s.start()
	out, _, code := s.doctor()
	line, cause, _ := firstFailure(out)
	if code != 1 || !strings.HasPrefix(line, "✘ rcpt") || !strings.Contains(cause, "unknown reply") || !strings.Contains(out, "reply: 550 5.7.0 "+text) {
		t.Fatalf("exit %d, %q %q\n%s", code, line, cause, out)
	}
}

// A host that accepts the connection and says nothing: doctor stops at the
// greeting within its own timeout.
func TestDoctorSilentHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent
		}
	}()
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	b, _ := os.ReadFile(s.cfgPath)
	port := ln.Addr().(*net.TCPAddr).Port
	os.WriteFile(s.cfgPath, []byte(regexp.MustCompile(`(?m)^port = \d+`).ReplaceAllString(string(b), "port = "+strconv.Itoa(port))), 0o644)
	s.start()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relaydBin, "doctor", "--config", s.cfgPath, "--sendmail", sendmailBin, "--timeout", "1s")
	outb, _ := cmd.CombinedOutput()
	out := string(outb)
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("doctor took %v against a silent host with --timeout 1s", el)
	}
	line, cause, _ := firstFailure(out)
	if cmd.ProcessState.ExitCode() != 1 || !strings.HasPrefix(line, "✘ greeting") || !strings.Contains(line, "no greeting within 1s") || !strings.Contains(cause, "did not answer in time") {
		t.Fatalf("exit %d, %q %q\n%s", cmd.ProcessState.ExitCode(), line, cause, out)
	}
	if !strings.Contains(out, "- auth          skipped: after the failure at greeting") {
		t.Errorf("later checks not listed as skipped:\n%s", out)
	}
}

// The password never appears in doctor's output, even when the upstream
// echoes it back.
func TestDoctorNeverPrintsSecret(t *testing.T) {
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageAuth {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed: password " + testPassword + " is wrong"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{})
	s.start()
	for _, args := range [][]string{nil, {"--json"}} {
		out, _, code := s.doctor(args...) // fails the test if the password shows
		if code != 1 || !strings.Contains(out, "[redacted]") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
}

func TestDoctorRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run doctor as nobody")
	}
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	_, errOut, code := runCmd(t, nil, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", relaydBin, "doctor", "--config", s.cfgPath)
	if code != 77 || !strings.Contains(errOut, "run it as root or as relayd's user") {
		t.Fatalf("as nobody: exit %d, %q", code, errOut)
	}
}

// logKV returns the value of key in a key=value log line.
func logKV(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		q, err := strconv.QuotedPrefix(v)
		if err != nil {
			return ""
		}
		u, _ := strconv.Unquote(q)
		return u
	}
	w, _, _ := strings.Cut(v, " ")
	return w
}

// --send-to a recipient the upstream defers: doctor reports the deferral
// and its reply after the first attempt, exit 1.
func TestDoctorSendToDeferred(t *testing.T) {
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && arg == "later@example.net" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "mailbox busy, try again"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`})
	s.start()
	out, _, code := s.doctor("--send-to", "later@example.net", "--log-file", s.logPath)
	if code != 1 || !strings.Contains(out, "to later@example.net: deferred") || !strings.Contains(out, "451 4.3.0 mailbox busy") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}
