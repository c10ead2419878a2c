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
