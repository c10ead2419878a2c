package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submitsock"
)

// breakLongLines does what Postfix's smtp client does to a line longer
// than smtp_line_length_limit (998): it inserts CRLF SPACE.
func breakLongLines(data string) string {
	var b strings.Builder
	for i, l := range strings.Split(data, "\r\n") {
		if i > 0 {
			b.WriteString("\r\n")
		}
		for len(l) > 998 {
			b.WriteString(l[:998] + "\r\n ")
			l = l[998:]
		}
		b.WriteString(l)
	}
	return b.String()
}

// refoldWithTabs unfolds the named field and folds it again at every
// space after column 40, with CRLF TAB in place of the space, as MTAs
// that re-wrap long header lines do.
func refoldWithTabs(data, name string) string {
	head, body, _ := strings.Cut(data, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		n, _, _ := strings.Cut(l, ":")
		if !strings.EqualFold(n, name) {
			out = append(out, l)
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			l += lines[i]
		}
		var b strings.Builder
		col := 0
		for j, w := range strings.Split(l, " ") {
			switch {
			case j == 0:
			case col > 40:
				b.WriteString("\r\n\t")
				col = 1
			default:
				b.WriteString(" ")
				col++
			}
			b.WriteString(w)
			col += len(w)
		}
		out = append(out, b.String())
	}
	return strings.Join(out, "\r\n") + "\r\n\r\n" + body
}

// A signed origin header survives what the mail path does to header
// lines: relayd writes no line longer than RFC 5322's 998 characters
// (a script path in a legacy encoding, quoted, is four times its length),
// so Postfix's smtp client need not break it, and a header that another
// MTA re-folds (tabs for spaces) still verifies as genuine, while a
// changed value still does not.
func TestVerifyOriginRefolded(t *testing.T) {
	s, up := signingSite(t)
	verify := func(data string) (string, int) {
		t.Helper()
		out, errs, code := runVerifyOrigin(t, s.cfgPath, strings.NewReader(data))
		return out + errs, code
	}
	// A site whose directories are named in Windows-1251 ("сайт/...",
	// "контакт.php"): every letter a byte that the header quotes as \xNN.
	script := "/var/www/" + strings.Repeat("\xf1\xe0\xe9\xf2/", 70) + "\xea\xee\xed\xf2\xe0\xea\xf2.php"
	for _, sc := range []string{"/srv/www/shop/wp-content/plugins/contact-form-7/includes/mail.php", script} {
		m := &spool.Meta{Env: spool.Envelope{Recipients: []string{"alice@example.org"}},
			Origin: spool.Origin{Script: sc, ScriptSource: "SCRIPT_FILENAME"}}
		if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: refold\n\nhello\n")); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := up.WaitFor(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, msg := range msgs {
		data := string(msg.Data)
		for _, l := range strings.Split(data, "\r\n") {
			if len(l) > 998 {
				t.Errorf("message %d: a line of %d characters (RFC 5322 allows 998): %.80q...", i, len(l), l)
			}
		}
		if out, code := verify(data); code != 0 {
			t.Fatalf("message %d as delivered: exit %d %s\n%q", i, code, out, data)
		}
		if out, code := verify(breakLongLines(data)); code != 0 {
			t.Errorf("message %d with long lines broken as Postfix does: exit %d %s", i, code, out)
		}
		// As a mail client saves it: LF line ends, and in an mbox file
		// after the "From " separator line.
		lf := strings.ReplaceAll(data, "\r\n", "\n")
		if out, code := verify(lf); code != 0 {
			t.Errorf("message %d with LF line ends: exit %d %s", i, code, out)
		}
		if out, code := verify("From MAILER-DAEMON Mon Dec  7 03:11:10 2026\n" + lf); code != 0 {
			t.Errorf("message %d from an mbox file: exit %d %s", i, code, out)
		}
		refolded := refoldWithTabs(data, "X-Mailshim-Origin")
		if refolded == data {
			t.Fatalf("message %d: refolding changed nothing", i)
		}
		if out, code := verify(refolded); code != 0 {
			t.Errorf("message %d re-folded with tabs: exit %d %s\n%s", i, code, out, refolded[:strings.Index(refolded, "\r\n\r\n")])
		}
		altered := regexp.MustCompile(`uid=\d+`).ReplaceAllString(refolded, "uid=1003")
		if out, code := verify(altered); code != 1 || !strings.Contains(out, "not genuine") {
			t.Errorf("message %d re-folded and altered: exit %d %s", i, code, out)
		}
	}
}
