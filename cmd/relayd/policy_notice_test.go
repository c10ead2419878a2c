package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The admin notice is relayd's own mail, not an account's: it is never
// held or refused by the per-account limits that relayd's own user falls
// under ("*" applies to every UID). Two accounts trip a limit of one
// message an hour; both notices reach notice_to, although relayd's user
// sends the second within the same hour as the first.
func TestPolicyNoticesNotLimited(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy]
notice_to = "abuse@example.com"
[policy."*"]
messages_per_hour = 1
action = "hold"
`)
	s.dropAs(nobodyUID, "nobody", 3)
	s.dropAs(1, "daemon", 3)
	s.start()
	waitfor.True(t, "two limit-tripped lines", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=limit-tripped ") >= 2
	})
	waitfor.True(t, "both notices delivered to notice_to", 30*time.Second, func() bool {
		return countTo(up, "abuse@example.com") >= 2
	})
	if strings.Contains(s.log(), "via=notice") && strings.Contains(s.log(), "not sent") {
		t.Errorf("a notice was not sent:\n%s", s.log())
	}
	if held := s.queueJSON("--held"); len(held) != 4 {
		t.Errorf("%d messages held, want the 4 over the accounts' limits: %+v", len(held), held)
	}
}

// Messages with no To: header (their recipients only in the envelope, as
// with sendmail without -t, or all in Bcc:) trip a limit: the notice and
// its log line show each message's envelope recipients and say that it
// had no To: header, where they showed an empty To.
func TestPolicyNoticeNoToHeader(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy]
notice_to = "abuse@example.com"
[policy."*"]
messages_per_hour = 2
action = "hold"
`)
	ids := s.dropEnv(spool.Origin{UID: nobodyUID, GID: nobodyUID, Via: "maildrop", Script: "/srv/www/quiet.php"},
		spool.Envelope{Sender: "app@example.org", Recipients: []string{"hidden1@example.net", "hidden2@example.net"}}, 3, func(i int) string {
			return fmt.Sprintf("From: app@example.org\nSubject: quiet %d\n\nbody\n", i)
		})
	for _, id := range ids {
		if err := os.Chown(filepath.Join(s.spool, spool.DirMaildrop, id), nobodyUID, -1); err != nil {
			t.Fatal(err)
		}
	}
	s.start()
	waitfor.True(t, "the notice delivered", 30*time.Second, func() bool { return countTo(up, "abuse@example.com") >= 1 })
	var notice string
	for _, m := range up.Messages() {
		if m.To[0] == "abuse@example.com" {
			notice = string(m.Data)
		}
	}
	if strings.Contains(notice, `To: ""`) || strings.Count(notice, "(no To: header)") != 3 || strings.Count(notice, "hidden1@example.net, hidden2@example.net") != 3 {
		t.Errorf("the notice does not show the envelope recipients of messages without To:\n%s", notice)
	}
	var line string
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "event=limit-tripped ") {
			line = l
		}
	}
	if to := logKV(line, "to"); !strings.Contains(to, "hidden1@example.net") {
		t.Errorf("the limit-tripped line's to=%q names no recipient:\n%s", to, line)
	}
}
