package main

import (
	"mime"
	"regexp"
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
