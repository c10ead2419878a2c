package attack

// Hostile upstream replies: huge, endless multi-line, over-long lines.
// relayd must stay up, bound what it logs and keeps, and defer the mail.

import (
	"strings"
	"testing"
	"time"
)

func TestHostileUpstreamReplies(t *testing.T) {
	for _, tc := range []struct {
		name, tried string
		reply       func() string
	}{
		{"multiline-20MB", "a 451 reply to RCPT of 20,000 continuation lines of 1,000 bytes (20 MB)", func() string {
			line := "451-" + strings.Repeat("A", 996) + "\r\n"
			return strings.Repeat(line, 20000) + "451 4.3.0 end\r\n"
		}},
		{"overlong-line", "a 451 reply to RCPT on one line of 1 MB", func() string {
			return "451 4.3.0 " + strings.Repeat("B", 1<<20) + "\r\n"
		}},
		{"no-code", "a reply to RCPT that is not SMTP (binary garbage with NULs and invalid UTF-8)", func() string {
			return "\x00\xff\xfe garbage \x1b]0;title\x07\r\n"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tried(t, tc.tried, "relayd stays up, defers the message, and logs well-formed lines of bounded length")
			reply := tc.reply()
			fu := &fakeUpstream{Rcpt: func(string) string { return reply }}
			e := newEnvRaw(t, fu, "", "")
			if r := e.sendmail(run{uid: nobody, stdin: "Subject: hostile\n\nx\n"}, "-i", "rcpt@example.net"); r.code != 0 {
				t.Fatalf("sendmail: %v", r)
			}
			e.waitFor("the message deferred", 60*time.Second, func() bool { return strings.Contains(e.log(), "event=deferred ") })
			if e.r.Exited() {
				t.Fatalf("relayd exited")
			}
			log := e.log()
			checkLog(t, log)
			for _, l := range strings.Split(log, "\n") {
				if len(l) > 16<<10 {
					t.Errorf("a log line of %d bytes: %.200q...", len(l), l)
				}
			}
			if _, peak, err := e.r.RSS(); err == nil {
				t.Logf("relayd peak RSS %d KB", peak)
			}
		})
	}
}

// A hostile upstream's refusal becomes a bounce: its text must not add
// header lines or MIME parts to the bounce, nor forge a log line.
func TestHostileReplyInBounce(t *testing.T) {
	fu := &fakeUpstream{Rcpt: func(rcpt string) string {
		if strings.HasPrefix(rcpt, "refused@") {
			return "550-5.1.1 no such user\r\n550-Bcc: injected@attacker.example\r\n550-\r\n550---boundary--\r\n" +
				"550 5.1.1 Content-Type: text/html\x1b[2J\xff\u202e\r\n"
		}
		return "250 2.1.5 Ok\r\n"
	}}
	e := newEnvRaw(t, fu, "", "")
	tried(t, "an upstream refusal (550) whose multi-line text holds header lines, an empty line, a MIME boundary, ESC, invalid UTF-8 and a bidi override; relayd bounces it to the sender",
		"the bounce's header and MIME structure are relayd's own; the refusal is text inside it; the log is well-formed")
	if r := e.sendmail(run{uid: nobody, stdin: "Subject: to be refused\n\nx\n"}, "-i", "refused@example.net"); r.code != 0 {
		t.Fatalf("sendmail: %v", r)
	}
	var dsn string
	e.waitFor("the bounce", 30*time.Second, func() bool {
		for _, m := range fu.messages() {
			if strings.Contains(m, "multipart/report") {
				dsn = m
				return true
			}
		}
		return false
	})
	hdr, _, _ := strings.Cut(dsn, "\r\n\r\n")
	for _, l := range strings.Split(hdr, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "bcc:") || strings.HasPrefix(l, "Content-Type: text/html") {
			t.Errorf("the refusal added a header line to the bounce: %q", l)
		}
	}
	if strings.Contains(dsn, "\r\n--boundary--\r\n") || strings.Contains(dsn, "\r\nBcc: injected") || strings.Contains(dsn, "\x1b") {
		t.Errorf("the refusal's text broke out of its line in the bounce:\n%q", dsn)
	}
	checkLog(t, e.log())
}
