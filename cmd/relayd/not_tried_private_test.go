package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// The upstream answers www-data's message with a 421 that names its
// sender and recipient; nobody's message, in the same delivery batch, is
// not tried. What nobody's mailq (and mailq --json) says of its own
// message must not be the queue ID of www-data's message nor the
// upstream's reply to it: a user lists their own mail, and another
// account's addresses are not theirs to read. Nor may the delay notice
// that nobody's sender gets (its message waited past delay_notice) carry
// them out of the host.
func TestNotTriedReasonIsNotAnotherUsersReply(t *testing.T) {
	needRoot(t)
	const secret = "buyer-4711@customer-a.example"
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail && arg == "shop@customer-a.example" {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "<shop@customer-a.example> to <" + secret + ">: sender over its quota, closing"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]` + "\ndelay_notice = \"1s\"", concurrency: 1})
	drop := func(uid int, sender, rcpt string) string {
		ids := s.dropEnv(spool.Origin{UID: uid, GID: uid, Via: "maildrop", Mode: "t"}, spool.Envelope{Sender: sender, Recipients: []string{rcpt}}, 1, func(int) string {
			return "From: " + sender + "\nTo: " + rcpt + "\nSubject: order\n\nbody\n"
		})
		if err := os.Chown(filepath.Join(s.spool, spool.DirMaildrop, ids[0]), uid, -1); err != nil {
			t.Fatal(err)
		}
		return ids[0]
	}
	victim := drop(33, "shop@customer-a.example", secret)
	time.Sleep(2 * time.Millisecond) // a later queue ID: sent after the victim's in the batch
	mine := drop(nobodyUID, "nobody-app@example.org", "friend@example.net")
	time.Sleep(1100 * time.Millisecond) // past delay_notice at the first attempt
	d := s.start()
	defer d.term(t)
	waitFor(t, "both deferred", 30*time.Second, func() bool { return strings.Count(s.log(), "event=deferred ") >= 2 })
	if !strings.Contains(s.log(), "id="+mine+" ") || !strings.Contains(s.log(), "tried=no") {
		t.Skipf("nobody's message was not in the victim's batch:\n%s", s.log())
	}
	for _, args := range [][]string{{"queue", "mailq"}, {"queue", "mailq", "--json"}} {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", relaydBin}, args...)...)
		cmd.Env = []string{"MAILSHIM_CONFIG=" + s.cfgPath}
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v as nobody: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), mine) {
			t.Fatalf("%v as nobody does not list its own message %s:\n%s", args, mine, out)
		}
		if strings.Contains(string(out), victim) || strings.Contains(string(out), secret) || strings.Contains(string(out), "customer-a") {
			t.Errorf("%v as nobody shows www-data's message (%s):\n%s", args, victim, out)
		}
	}
	waitFor(t, "the delay notice to nobody's sender", 30*time.Second, func() bool { return countTo(up, "nobody-app@example.org") > 0 })
	for _, m := range up.Messages() {
		if strings.Join(m.To, ",") == "nobody-app@example.org" && (strings.Contains(string(m.Data), victim) || strings.Contains(string(m.Data), secret)) {
			t.Errorf("the delay notice to nobody's sender carries www-data's message:\n%s", m.Data)
		}
	}
}
