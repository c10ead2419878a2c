package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A message the SMTP listener refuses at DATA is logged as event=smtp-error
// with from= the envelope sender relayd would have sent upstream — after
// [senders], which maps root@<hostname> to the address the upstream
// account may use — and reply= the whole reply the client got, its
// enhanced status code included (as event=delivery's reply= has the
// upstream's). It said from=root@web1.example.com and reply="500 Line too
// long; ..." for the client's "500 5.5.2 Line too long; ...".
func TestListenErrorLineSenderAndStatus(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + "\n[senders]\nroot = \"server-alerts@example.com\"\n"})
	d := s.start()
	defer d.term(t)
	r := dialRaw(t, "tcp", s.listenAddrs()["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<root@web1.example.com>", "RCPT TO:<b@example.net>", "DATA"} {
		r.cmd(c)
	}
	r.send("Subject: refused\r\nX-Data: " + strings.Repeat("x", message.MaxField+1) + "\r\n\r\nbody\r\n.\r\n")
	got := r.reply()
	if !strings.HasPrefix(got, "500 5.5.2 ") {
		t.Fatalf("DATA: %q, want 500 5.5.2", got)
	}
	waitfor.True(t, "the smtp-error line", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=smtp-error") })
	var line string
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "event=smtp-error") {
			line = l
		}
	}
	if !strings.Contains(line, " from=server-alerts@example.com ") {
		t.Errorf("from= is not the sender relayd sends upstream (server-alerts@example.com, by [senders]): %s", line)
	}
	if want := `reply="` + strings.TrimRight(got, "\r\n") + `"`; !strings.Contains(line, want) {
		t.Errorf("reply= is not the reply the client got (%s): %s", want, line)
	}
}
