package main

import (
	"mime"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A full name that is not UTF-8 (-F from a script in a Latin-1 locale, or
// a legacy GECOS field) is most likely ISO-8859-1: the From: field relayd
// completes labels it so, and a mail reader shows the name that was
// meant, not replacement characters. A UTF-8 name is labelled UTF-8.
func TestGeneratedFromLabelsTheFullNamesCharset(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	for i, name := range []string{"Jos\xe9 Garc\xeda", "José García"} {
		cmd := s.sendmailCmd("-i", "-F", name, "rcpt@example.net")
		cmd.Stdin = strings.NewReader("Subject: full name " + string(rune('0'+i)) + "\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail -F %q: %v\n%s", name, err, out)
		}
	}
	msgs, err := up.WaitFor(2, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	dec := new(mime.WordDecoder)
	for _, m := range msgs {
		f := regexp.MustCompile(`(?m)^From: (.*?) <[^>]*>\r?$`).FindStringSubmatch(string(m.Data))
		if f == nil {
			t.Errorf("no From: with a name in\n%s", m.Data)
			continue
		}
		got, err := dec.DecodeHeader(f[1])
		if err != nil || got != "José García" {
			t.Errorf("From: name %q decodes to %q (%v), want %q", f[1], got, err, "José García")
		}
	}
}

// A full name that is not UTF-8 is encoded as RFC 2047 wants an
// encoded-word in a From: phrase: at most 75 characters each (section 2:
// a reader may refuse a longer one), and none of the characters that end
// a phrase (section 5(3): a comma, an angle bracket, a quote), so that the
// From: field is one mailbox, the caller's, whatever the name holds:
// "Dupont, Jos\xe9" is not two addresses, and "\xe9 <evil@example.com>, x"
// does not put evil@example.com in the From: field. Each decodes to the
// name.
func TestGeneratedFromEncodedWordsSafe(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	names := []string{
		"François-René de Châteaubriand-Béthéncourt d'Épaigné, Société Générale",
		"Dupont, José",
		"é <evil@example.com>, x",
		"Café \"x\" (y) a@b:c;",
	}
	for i, want := range names {
		latin1 := make([]byte, 0, len(want))
		for _, r := range want {
			latin1 = append(latin1, byte(r))
		}
		cmd := s.sendmailCmd("-i", "-F", string(latin1), "rcpt@example.net")
		cmd.Stdin = strings.NewReader("Subject: full name " + strconv.Itoa(i) + "\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail -F: %v\n%s", err, out)
		}
	}
	msgs, err := up.WaitFor(len(names), 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	for _, m := range msgs {
		sub := regexp.MustCompile(`(?m)^Subject: full name (\d+)\r?$`).FindStringSubmatch(string(m.Data))
		f := regexp.MustCompile(`(?m)^From: (.*?)\r?$`).FindStringSubmatch(string(m.Data))
		if sub == nil || f == nil {
			t.Errorf("no Subject: or From: in\n%s", m.Data)
			continue
		}
		n, _ := strconv.Atoi(sub[1])
		want := names[n]
		list, err := mail.ParseAddressList(f[1])
		if err != nil || len(list) != 1 || list[0].Address != m.From {
			var got []string
			for _, a := range list {
				got = append(got, a.Address)
			}
			t.Errorf("-F %q: From: %s is %q (%v), want the one mailbox %s", want, f[1], got, err, m.From)
			continue
		}
		if list[0].Name != want {
			t.Errorf("-F %q: From: %s: name decodes to %q", want, f[1], list[0].Name)
		}
		for _, w := range strings.Fields(f[1]) {
			if len(w) > 75 {
				t.Errorf("-F %q: encoded-word of %d characters (at most 75): %s", want, len(w), w)
			}
		}
	}
}

// A UTF-8 full name is encoded as a Latin-1 one is: encoded-words that
// hold no character that ends a phrase or that an atom may not hold
// (RFC 2047 section 5(3)), so that the From: field is one mailbox, the
// caller's, whose name decodes to the name. A backslash ("CORP\jörg", a
// Windows account name) was left raw in a Q-encoded word: a From: field
// no RFC 5322 parser takes, which a strict upstream refuses.
func TestGeneratedFromUTF8NameIsOnePhrase(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	names := []string{
		`CORP\jörg`,
		`Jörg "x" (y) <evil@example.com>, z \ a@b:c;`,
		strings.Repeat("ö", 40) + ` \ ` + strings.Repeat("€", 30),
	}
	for i, name := range names {
		cmd := s.sendmailCmd("-i", "-F", name, "rcpt@example.net")
		cmd.Stdin = strings.NewReader("Subject: full name " + strconv.Itoa(i) + "\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail -F: %v\n%s", err, out)
		}
	}
	msgs, err := up.WaitFor(len(names), 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	for _, m := range msgs {
		sub := regexp.MustCompile(`(?m)^Subject: full name (\d+)\r?$`).FindStringSubmatch(string(m.Data))
		f := regexp.MustCompile(`(?m)^From: (.*?)\r?$`).FindStringSubmatch(string(m.Data))
		if sub == nil || f == nil {
			t.Errorf("no Subject: or From: in\n%s", m.Data)
			continue
		}
		n, _ := strconv.Atoi(sub[1])
		want := names[n]
		list, err := mail.ParseAddressList(f[1])
		if err != nil || len(list) != 1 || list[0].Address != m.From {
			t.Errorf("-F %q: From: %s: %v (%v), want the one mailbox %s", want, f[1], list, err, m.From)
			continue
		}
		if list[0].Name != want {
			t.Errorf("-F %q: From: %s: name decodes to %q", want, f[1], list[0].Name)
		}
		for _, w := range strings.Fields(f[1]) {
			if len(w) > 75 {
				t.Errorf("-F %q: encoded-word of %d characters (at most 75): %s", want, len(w), w)
			}
		}
	}
}
