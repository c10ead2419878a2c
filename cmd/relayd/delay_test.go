package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A message still deferred after [queue] delay_notice earns its sender one
// "delayed" DSN (RFC 3464 Action: delayed), and only one: not at the next
// deferrals, not after a restart; a bounce (null sender) never gets one.
func TestDelayNotice(t *testing.T) {
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && arg == "rcpt@example.net" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy, try later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{})
	// delay_notice goes in [queue]: rewrite the file with it there.
	s.opts.retry = `["1s"]` + "\ndelay_notice = \"2s\""
	s.writeConfig("")
	ids := s.drop("delayed", 1)
	// A bounce that cannot be delivered either: never a delay notice.
	bounce := s.dropFrom("<>", "delayed bounce")
	d := s.start()
	notices := func() (n int, data string) {
		for _, m := range up.Messages() {
			if m.From == "" && strings.Contains(string(m.Data), "Action: delayed") {
				n++
				data = string(m.Data)
			}
		}
		return
	}
	waitfor.True(t, "the delay notice", 30*time.Second, func() bool { n, _ := notices(); return n > 0 })
	_, data := notices()
	m := up.Messages()[0]
	if m.To[0] != "app@example.org" {
		t.Errorf("notice to %v", m.To)
	}
	for _, want := range []string{"Subject: Delayed Mail (still being retried)", "Action: delayed", "Status: 4.2.0",
		"Final-Recipient: rfc822; rcpt@example.net", "Will-Retry-Until: ", "X-Mailshim-Queue-ID: " + ids[0],
		"Diagnostic-Code: smtp; 451 4.2.0 mailbox busy, try later", "Subject: delayed 0", "you do not need to send it again"} {
		if !strings.Contains(data, want) {
			t.Errorf("notice lacks %q:\n%s", want, data)
		}
	}
	if !strings.Contains(s.log(), "event=delay-notice id="+ids[0]+" ") {
		t.Errorf("no delay-notice line:\n%s", s.log())
	}
	// More deferrals, then a restart, then more: still one notice.
	deferrals := func() int { return strings.Count(s.log(), "event=deferred id="+ids[0]) }
	n0 := deferrals()
	waitfor.True(t, "two more deferrals", 30*time.Second, func() bool { return deferrals() >= n0+2 })
	if code := d.term(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	n1 := deferrals()
	d = s.start()
	waitfor.True(t, "two deferrals after the restart", 30*time.Second, func() bool { return deferrals() >= n1+2 })
	if n, _ := notices(); n != 1 {
		t.Errorf("%d delay notices, want 1\n%s", n, s.log())
	}
	if strings.Contains(s.log(), "event=delay-notice id="+bounce) || !strings.Contains(s.log(), "event=deferred id="+bounce) {
		t.Errorf("the bounce got a delay notice, or was never deferred:\n%s", s.log())
	}
	d.term(t)
}

// dropFrom writes one message from sender to rcpt@example.net into the
// maildrop and returns its ID.
func (s *site) dropFrom(sender, subject string) string {
	s.t.Helper()
	md, err := spool.OpenDir(s.spool, spool.DirMaildrop)
	if err != nil {
		s.t.Fatal(err)
	}
	defer md.Close()
	m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
		Env:    spool.Envelope{Sender: sender, Recipients: []string{"rcpt@example.net"}},
		Origin: spool.Origin{UID: os.Getuid(), Via: "maildrop", Mode: "bm"}}
	d, err := spool.NewDrop(md, m, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	d.Write([]byte("From: x@example.org\nSubject: " + subject + "\n\nbody\n"))
	if err := d.Commit(); err != nil {
		s.t.Fatal(err)
	}
	return m.ID
}
