package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// RFC 3461 5.2.2: sendmail's -N (NOTIFY) decides which notices a sender
// gets. With NEVER none; with a list only the kinds it names (FAILURE: the
// bounce, DELAY: the delay notice); without -N both. Each message goes to
// one recipient the upstream refuses for good and one it keeps deferring,
// through the real sendmail binary and the real relayd.
func TestNotifyDecidesNotices(t *testing.T) {
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		switch {
		case stage == smtptest.StageRcpt && arg == "gone@example.net":
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case stage == smtptest.StageRcpt && arg == "busy@example.net":
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy, try later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{})
	s.opts.retry = `["1s"]` + "\ndelay_notice = \"2s\""
	s.writeConfig("")
	s.start()
	cases := []struct {
		notify, sender string
		failure, delay bool
	}{
		{"never", "never@example.org", false, false},
		{"delay", "delay@example.org", false, true},
		{"failure", "failure@example.org", true, false},
		{"success,failure", "both@example.org", true, false},
		{"", "none@example.org", true, true},
	}
	for _, tc := range cases {
		args := []string{"-i", "-f", tc.sender}
		if tc.notify != "" {
			args = append(args, "-N", tc.notify)
		}
		args = append(args, "gone@example.net", "busy@example.net")
		cmd := s.sendmailCmd(args...)
		cmd.Stdin = strings.NewReader("Subject: notify " + tc.notify + "\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail -N %s: %v %s", tc.notify, err, out)
		}
	}
	// notices counts the DSNs of kind action ("failed", "delayed") that
	// reached the upstream for sender.
	notices := func(sender, action string) int {
		n := 0
		for _, m := range up.Messages() {
			if m.From == "" && len(m.To) == 1 && m.To[0] == sender && strings.Contains(string(m.Data), "Action: "+action) {
				n++
			}
		}
		return n
	}
	// Every notice wanted arrives; then, once each message has been
	// deferred well past delay_notice, nothing unwanted has.
	waitfor.True(t, "the notices asked for", 30*time.Second, func() bool {
		for _, tc := range cases {
			if tc.failure && notices(tc.sender, "failed") == 0 || tc.delay && notices(tc.sender, "delayed") == 0 {
				return false
			}
		}
		return true
	})
	waitfor.True(t, "deferrals past delay_notice", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=deferred ") >= 5*len(cases)
	})
	for _, tc := range cases {
		if got, want := notices(tc.sender, "failed"), b2i(tc.failure); got != want {
			t.Errorf("-N %q: %d failure notices, want %d", tc.notify, got, want)
		}
		if got, want := notices(tc.sender, "delayed"), b2i(tc.delay); got != want {
			t.Errorf("-N %q: %d delay notices, want %d", tc.notify, got, want)
		}
	}
	// A failure nobody is told of is still logged, as failed, not bounced.
	status := map[string]int{}
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "event=delivery ") && strings.Contains(l, " to=gone@example.net ") {
			for _, st := range []string{"failed", "bounced"} {
				if strings.Contains(l, " status="+st+" ") {
					status[st]++
				}
			}
		}
	}
	if status["failed"] != 2 || status["bounced"] != 3 {
		t.Errorf("gone@ logged failed %d times, bounced %d; want 2 and 3", status["failed"], status["bounced"])
	}
	if t.Failed() {
		t.Logf("log:\n%.6000s", s.log())
	}
}

// sendmailCmd is the real sendmail binary with the site's configuration,
// run as the test's user.
func (s *site) sendmailCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(sendmailBin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
	return cmd
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A maildrop file relayd will not relay is bounced to its sender
// (TestRejectedMaildropIsBounced), but not when the sender asked for no
// failure notice (NOTIFY=NEVER): then it is quarantined, kept for the
// administrator with a loud log line, and nothing goes to the sender.
func TestRejectedMaildropNotifyNever(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	id := s.dropHugeHeader("NEVER")
	s.drop("after", 1)
	s.start()
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%.4000s", err, s.log())
	}
	waitfor.True(t, "the rejection", 20*time.Second, func() bool { return strings.Contains(s.log(), "event=rejected id="+id+" ") })
	only := func() bool {
		l := s.leftovers()
		return len(l) == 1 && strings.HasPrefix(l[0], spool.DirQuarantine+"/")
	}
	waitfor.True(t, "the one quarantined file left", 20*time.Second, only)
	for _, msg := range up.Messages() {
		if msg.From == "" {
			t.Errorf("a notice went to %v despite NOTIFY=NEVER", msg.To)
		}
	}
	// The administrator learns of it: the quarantine line says it was
	// refused, and check-config counts it as a refused message, not only
	// as a damaged or hostile file.
	if !strings.Contains(s.log(), "event=quarantine file="+id+` reason="rejected: `) {
		t.Errorf("no event=quarantine line with the refusal for %s", id)
	}
	_, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 0 || !strings.Contains(stderr, "warning: 1 quarantined file(s) in ") || !strings.Contains(stderr, "refused messages whose sender gets no bounce") {
		t.Errorf("check-config: exit %d\n%s", code, stderr)
	}
	if t.Failed() {
		t.Logf("log:\n%.4000s", s.log())
	}
}

// The spool keeps one NOTIFY per message; an SMTP transaction gives one
// per recipient. A failure notice is withheld only when no recipient
// wants it: RCPT TO without NOTIFY (the MTA's choice: failures are
// reported) beside one with NOTIFY=NEVER still gets the bounce. Through
// the real sendmail -bs into the real relayd.
func TestNotifyPerRecipientKeepsWantedBounce(t *testing.T) {
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && strings.HasSuffix(arg, "@example.net") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{})
	s.start()
	cmd := s.sendmailCmd("-bs")
	cmd.Stdin = strings.NewReader("EHLO c\r\nMAIL FROM:<mixed@example.org>\r\nRCPT TO:<plain@example.net>\r\n" +
		"RCPT TO:<never@example.net> NOTIFY=NEVER\r\nDATA\r\nSubject: mixed\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "250 2.0.0 Ok: queued as ") {
		t.Fatalf("sendmail -bs: %v\n%s", err, out)
	}
	msgs, err := up.WaitFor(1, 30*time.Second)
	if err != nil {
		t.Fatalf("no bounce for the recipient that did not ask for NEVER: %v\n%s", err, s.log())
	}
	if m := msgs[0]; m.From != "" || len(m.To) != 1 || m.To[0] != "mixed@example.org" || !strings.Contains(string(m.Data), "Final-Recipient: rfc822; plain@example.net") {
		t.Errorf("the bounce: from %q to %v\n%s", m.From, m.To, m.Data)
	}
}
