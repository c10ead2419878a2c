package submit_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submit/submittest"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// SMTPReply is the table both SMTP doors answer from: each refusal class
// of the pipeline, and the errors a Store or Prepare returns unwrapped.
func TestSMTPReply(t *testing.T) {
	for _, r := range submittest.Refusals {
		if got := submit.SMTPReply(r.Err).String(); got != r.Want+" "+r.Err.Msg {
			t.Errorf("%s: %q, want %q", r.Name, got, r.Want+" "+r.Err.Msg)
		}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{spool.ErrTooLarge, "552 5.3.4 message too large"},
		{&submit.SizeError{Limit: 2 << 10}, "552 5.3.4 message too large: the limit is 2KB"},
		{fmt.Errorf("store: %w", &submit.SizeError{Limit: 2500}), "552 5.3.4 message too large: the limit is 2500 bytes"},
		{message.ErrHeaderTooLarge, "552 5.3.4 " + message.ErrHeaderTooLarge.Error()},
		{&message.EnvelopeError{Code: sysexits.NoUser, Msg: "bad recipient"}, "553 5.1.3 bad recipient"},
		{&message.EnvelopeError{Code: sysexits.Usage, Msg: "no recipients"}, "554 5.5.1 no recipients"},
		{&os.PathError{Op: "open", Path: "/var/spool/mailshim/queue/seg/1", Err: errors.New("disk")}, "451 4.3.0 could not store the message"},
		{&submit.Error{Code: sysexits.NoPerm, Msg: "a\r\nb"}, "553 5.7.1 a  b"},
		{submit.ReplyBadSender, "553 5.1.7 Bad sender address syntax"},
	} {
		if got := submit.SMTPReply(c.err).String(); got != c.want {
			t.Errorf("SMTPReply(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// A transaction's envelope: the null sender, SMTPUTF8 from either
// address, the union of the recipients' NOTIFY, and the recipient limits of the stored
// envelope (a lower count where the door sets one).
func TestTransaction(t *testing.T) {
	if _, err := submit.Mail("not an address"); err != submit.ReplyBadSender {
		t.Errorf("bad sender: %v", err)
	}
	tr, err := submit.Mail("")
	if err != nil || tr.Env.Sender != "<>" || tr.Env.SMTPUTF8 {
		t.Fatalf("null sender: %+v %v", tr, err)
	}
	tr, _ = submit.Mail("jörg@example.org")
	if tr.Env.Sender != "jörg@example.org" || !tr.Env.SMTPUTF8 {
		t.Errorf("UTF-8 sender: %+v", tr.Env)
	}
	tr, _ = submit.Mail("a@example.org")
	if err := tr.Rcpt("x@", "", 0); err != submit.ReplyBadRecipient {
		t.Errorf("bad recipient: %v", err)
	}
	tr.Rcpt("b@example.org", "NEVER", 2)
	tr.Rcpt("ü@example.org", "SUCCESS", 2)
	if err := tr.Rcpt("c@example.org", "", 2); err != submit.ReplyTooManyRecipients {
		t.Errorf("third of 2: %v", err)
	}
	if e := tr.Env; strings.Join(e.Recipients, " ") != "b@example.org ü@example.org" || e.Notify != "SUCCESS" || !e.SMTPUTF8 {
		t.Errorf("envelope %+v", e)
	}
	tr, _ = submit.Mail("a@example.org")
	long := strings.Repeat("x", 200) + "@example.org"
	n := 0
	for tr.Rcpt(long, "", 0) == nil {
		n++
	}
	if want := message.MaxRecipientBytes / (len(long) + 1); n != want {
		t.Errorf("%d recipients of %d bytes, want %d", n, len(long), want)
	}
	if err := message.ValidateEnvelope(&tr.Env); err != nil {
		t.Errorf("the envelope built is not valid: %v", err)
	}
}
