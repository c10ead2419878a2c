package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// An upstream without SMTPUTF8 (most smarthosts) and a message, sent
// through the real sendmail and relayd, to three recipients: an ASCII
// one, one whose only non-ASCII part is its domain (an IDN), and one
// whose local part is non-ASCII; the sender's domain is an IDN too.
// As Postfix does: the domains go as their A-labels (punycode), without
// SMTPUTF8; only the recipient that cannot be written in ASCII fails,
// for good, with 5.6.7 and the reason in the log and the bounce; the
// other two get the message.
func TestSMTPUTF8NotOfferedPerRecipient(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	cmd := s.sendmailCmd("-i", "-f", "app@bücher.example", "plain@example.net", "user@bücher.example", "jörg@example.net")
	cmd.Stdin = strings.NewReader("Subject: idn\n\nbody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v %s", err, out)
	}
	msgs, err := up.WaitFor(1, 20*time.Second)
	if err != nil {
		t.Fatalf("nothing delivered: %v\n%s", err, s.logTail(3000))
	}
	m := msgs[0]
	if m.From != "app@xn--bcher-kva.example" {
		t.Errorf("MAIL FROM:<%s>, want the sender's domain as its A-label, app@xn--bcher-kva.example", m.From)
	}
	if got, want := strings.Join(m.To, " "), "plain@example.net user@xn--bcher-kva.example"; got != want {
		t.Errorf("RCPT TO %s, want %s", got, want)
	}
	if m.MailOpts.UTF8 {
		t.Errorf("MAIL FROM with SMTPUTF8 to an upstream that does not offer it")
	}
	// The bounce for jörg@ alone, to the sender's A-label.
	waitfor.True(t, "the bounce for the UTF-8 local part", 20*time.Second, func() bool {
		for _, m := range up.Messages() {
			if m.From == "" {
				return true
			}
		}
		return false
	})
	var bounce string
	for _, m := range up.Messages() {
		if m.From == "" {
			bounce = string(m.Data)
			if got := strings.Join(m.To, " "); got != "app@xn--bcher-kva.example" {
				t.Errorf("bounce to %s, want app@xn--bcher-kva.example", got)
			}
		}
	}
	if !strings.Contains(bounce, "Status: 5.6.7") || !strings.Contains(bounce, "jörg@example.net") || !strings.Contains(bounce, "SMTPUTF8") {
		t.Errorf("the bounce does not name jörg@example.net with Status 5.6.7 and SMTPUTF8:\n%s", bounce)
	}
	// RFC 6533 3: a non-ASCII address in a message/delivery-status part
	// (which is ASCII) is of type utf-8, as utf-8-addr-xtext.
	if !strings.Contains(bounce, "Final-Recipient: utf-8; j\\x{F6}rg@example.net\r\n") {
		t.Errorf("the bounce does not give jörg@example.net as \"Final-Recipient: utf-8; j\\x{F6}rg@example.net\":\n%s", bounce)
	}
	for _, rcpt := range []string{"plain@example.net", "user@bücher.example"} {
		if strings.Contains(bounce, "Final-Recipient: rfc822;"+rcpt) || strings.Contains(bounce, "Final-Recipient: utf-8;"+rcpt) {
			t.Errorf("the bounce names %s, which was delivered:\n%s", rcpt, bounce)
		}
	}
	log := s.log()
	var line string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "event=delivery ") && strings.Contains(l, "jörg@example.net") {
			line = l
		}
	}
	if !strings.Contains(line, "status=bounced") || !strings.Contains(line, "5.6.7") || !strings.Contains(line, "SMTPUTF8") {
		t.Errorf("the log line for jörg@ does not say bounced, 5.6.7 and SMTPUTF8: %q", line)
	}
	if n := strings.Count(log, "status=sent"); n != 3 { // two recipients and the bounce
		t.Errorf("%d recipients logged sent, want 3 (plain@, user@bücher, the bounce)", n)
	}
	if t.Failed() {
		t.Logf("log:\n%.6000s", log)
	}
}

// An upstream that offers SMTPUTF8 gets the addresses as they are, with
// SMTPUTF8, whatever their parts.
func TestSMTPUTF8OfferedUnchanged(t *testing.T) {
	up := newUpstream(t, smtptest.Options{SMTPUTF8: true})
	s := newSite(t, up, siteOpts{})
	s.start()
	cmd := s.sendmailCmd("-i", "-f", "app@bücher.example", "plain@example.net", "user@bücher.example", "jörg@example.net")
	cmd.Stdin = strings.NewReader("Subject: idn\n\nbody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v %s", err, out)
	}
	msgs, err := up.WaitFor(1, 20*time.Second)
	if err != nil {
		t.Fatalf("nothing delivered: %v\n%s", err, s.logTail(3000))
	}
	m := msgs[0]
	got := fmt.Sprintf("%s %s %v", m.From, strings.Join(m.To, " "), m.MailOpts.UTF8)
	if want := "app@bücher.example plain@example.net user@bücher.example jörg@example.net true"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Headers in raw UTF-8 (not RFC 2047), envelope in ASCII once its IDN
// domain is converted, to an upstream with 8BITMIME but not SMTPUTF8:
// the message goes, as 8-bit data (BODY=8BITMIME), headers untouched,
// as Postfix sends it with smtputf8_enable = no and as every MTA did
// before SMTPUTF8. Refusing it would lose the mail of every cron job and
// mail -s with a non-ASCII subject.
func TestSMTPUTF8HeadersTo8BitUpstream(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	for _, rcpt := range []string{"plain@example.net", "user@bücher.example"} {
		cmd := s.sendmailCmd("-i", "-f", "app@example.org", rcpt)
		cmd.Stdin = strings.NewReader("Subject: Grüße an " + rcpt + "\nTo: Jörg <" + rcpt + ">\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail: %v %s", err, out)
		}
	}
	waitfor.True(t, "both messages sent or refused", 20*time.Second, func() bool {
		return strings.Count(s.log(), "event=removed ") >= 2
	})
	n := 0
	for _, m := range up.Messages() {
		if m.From != "app@example.org" {
			continue
		}
		n++
		if m.MailOpts.Body != "8BITMIME" || m.MailOpts.UTF8 {
			t.Errorf("to %v: BODY=%s SMTPUTF8=%v, want BODY=8BITMIME without SMTPUTF8", m.To, m.MailOpts.Body, m.MailOpts.UTF8)
		}
		if !strings.Contains(string(m.Data), "Subject: Grüße an ") {
			t.Errorf("to %v: the subject was changed:\n%s", m.To, m.Data)
		}
	}
	if n != 2 || strings.Contains(s.log(), "status=bounced") {
		t.Errorf("%d of 2 messages delivered:\n%s", n, s.log())
	}
}

// relayd doctor, against an upstream without SMTPUTF8, says in the
// capabilities check what relayd then does with every kind of non-ASCII
// address, the sender's included (its message fails, 5.6.7), in one
// item of its "; "-separated list (a "; " inside the item splits it).
func TestDoctorSaysWhatHappensWithoutSMTPUTF8(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	out, _, _ := s.doctor()
	line, _, _ := checkLine(out, "capabilities")
	_, item, ok := strings.Cut(line, "no SMTPUTF8 (")
	if !ok {
		t.Fatalf("the capabilities check does not say the upstream lacks SMTPUTF8:\n%s", out)
	}
	if i := strings.Index(item, "; "); i >= 0 {
		item = item[:i]
	}
	if strings.Count("("+item, "(") != strings.Count(item, ")") {
		t.Errorf("the SMTPUTF8 item is split by the list's \"; \": %q\n%s", item, line)
	}
	for _, want := range []string{"A-label", "recipient", "sender", "5.6.7"} {
		if !strings.Contains(item, want) {
			t.Errorf("the SMTPUTF8 item does not say %q: %q", want, item)
		}
	}
}
