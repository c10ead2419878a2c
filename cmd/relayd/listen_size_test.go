package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// A message over max_message_size is refused with the limit named, as
// sendmail's own refusal names it (and as Postfix's does): through the
// submission socket (the real sendmail, not set-group-ID, as nobody) and
// over the SMTP listener, both when go-smtp's reader finds the data over
// the limit and when the message as stored (LF line ends, the trace
// headers added) is.
func TestSizeRefusalNamesTheLimit(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	cfg, _ := os.ReadFile(s.cfgPath)
	os.WriteFile(s.cfgPath, []byte(strings.Replace(string(cfg), "aliases_file", "max_message_size = \"2KB\"\naliases_file", 1)), 0o644)
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	const want = "message too large: the limit is 2KB"

	// The submission socket.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sendmailBin, "-t", "-i")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
	cmd.Stdin = strings.NewReader("From: app@example.org\nTo: rcpt@example.net\nSubject: too large socket\n\n" + strings.Repeat(strings.Repeat("x", 70)+"\n", 60))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}}
	cmd.Dir = "/"
	err := cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 65 || !strings.Contains(stderr.String(), want) {
		t.Errorf("sendmail through the socket: %v, stderr %q; want exit 65 and %q", err, stderr.String(), want)
	}

	for _, c := range []struct {
		name, data string
	}{
		// Over the limit as sent: go-smtp's reader stops it.
		{"as sent", strings.Repeat(strings.Repeat("x", 70)+"\r\n", 60)},
		// Under it as sent (2,040 bytes), over it as the store reads
		// it: LF line ends, the From: added (20 bytes).
		{"as stored", strings.Repeat("y", 1000) + "\r\n" + strings.Repeat("z", 1004) + "\r\n"},
	} {
		r := dialRaw(t, "tcp", addrs["tcp4"])
		r.reply()
		for _, cmd := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
			r.cmd(cmd)
		}
		r.send("Subject: too large " + c.name + "\r\n\r\n" + c.data + ".\r\n")
		if got := r.reply(); got != "552 5.3.4 "+want {
			t.Errorf("listener, over the limit %s: %q, want %q", c.name, got, "552 5.3.4 "+want)
		}
		if got := r.cmd("NOOP"); !strings.HasPrefix(got, "250 ") {
			t.Errorf("after the 552: %q", got)
		}
		r.cmd("QUIT")
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(up.Messages()); n != 0 {
		t.Errorf("%d messages delivered, want none", n)
	}
}
