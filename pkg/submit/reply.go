package submit

import (
	"errors"
	"strconv"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// Reply is an SMTP reply (RFC 5321) with its enhanced status code
// (RFC 3463). It is free of any SMTP library, so that the setgid
// sendmail's -bs server and relayd's listener (go-smtp) answer from the
// same values. As an error it is a refusal of a command.
type Reply struct {
	Code   int
	Status [3]int // class, subject, detail: 5.7.1 is {5, 7, 1}
	Text   string // one line (ReplyLine)
}

// String is the reply line without its CRLF: "553 5.7.1 text".
func (r *Reply) String() string {
	b := make([]byte, 0, 16+len(r.Text))
	b = strconv.AppendInt(b, int64(r.Code), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(r.Status[0]), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.Status[1]), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.Status[2]), 10)
	b = append(b, ' ')
	return string(append(b, r.Text...))
}

func (r *Reply) Error() string { return r.String() }

func reply(code int, status [3]int, text string) *Reply {
	return &Reply{Code: code, Status: status, Text: ReplyLine(text)}
}

// SMTPReply is the SMTP reply to a refusal of the pipeline, the one
// mapping of both SMTP servers (sendmail -bs and relayd's listener): err
// is what Prepare, Intake or a Store returned, or an *Error built from
// the sysexits code and text of a refusal that arrived without its
// error (sendmail's exit status, the submission socket's answer). The
// text is the refusal's own (Classify); the code and status are:
//
//	refusal                                               reply
//	a later try may pass (Temporary: an account's rate)    451 4.7.1
//	64 EX_USAGE: no recipients                             554 5.5.1
//	65 EX_DATAERR: the message or its header over a limit  552 5.3.4
//	67 EX_NOUSER: a recipient address refused              553 5.1.3
//	77 EX_NOPERM: the sender or the account's policy       553 5.7.1
//	73 EX_CANTCREAT: the spool is full or not writable     452 4.3.1
//	anything else (74 EX_IOERR, ...): local trouble        451 4.3.0
//
// At DATA the envelope has passed MAIL and RCPT, which check what
// ValidateEnvelope checks, so the data errors a door meets there are the
// size limits of the message and of its header section.
func SMTPReply(err error) *Reply {
	var r *Reply
	if errors.As(err, &r) {
		return r
	}
	e := Classify(err)
	switch {
	case e.Temporary:
		return reply(451, [3]int{4, 7, 1}, e.Msg)
	case e.Code == sysexits.Usage:
		return reply(554, [3]int{5, 5, 1}, e.Msg)
	case e.Code == sysexits.DataErr:
		return reply(552, [3]int{5, 3, 4}, e.Msg)
	case e.Code == sysexits.NoUser:
		return reply(553, [3]int{5, 1, 3}, e.Msg)
	case e.Code == sysexits.NoPerm:
		return reply(553, [3]int{5, 7, 1}, e.Msg)
	case e.Code == sysexits.CantCreat:
		return reply(452, [3]int{4, 3, 1}, e.Msg)
	}
	return reply(451, [3]int{4, 3, 0}, e.Msg)
}

// The replies to MAIL and RCPT arguments that cannot enter an envelope,
// the same from both SMTP servers.
var (
	ReplyBadSender         = &Reply{553, [3]int{5, 1, 7}, "Bad sender address syntax"}
	ReplyBadRecipient      = &Reply{553, [3]int{5, 1, 3}, "Bad recipient address syntax"}
	ReplyTooManyRecipients = &Reply{452, [3]int{4, 5, 3}, "Too many recipients"}
)

// Transaction is the envelope an SMTP transaction builds, MAIL FROM then
// each RCPT TO: how both SMTP servers (-bs and relayd's listener) turn the
// addresses of the dialogue into the envelope that Prepare and Intake
// check again at DATA. Its limits are the envelope's
// (message.MaxRecipients, unless the door sets a lower one, and
// message.MaxRecipientBytes), so every recipient accepted is one the
// stored envelope may hold.
type Transaction struct {
	Env       spool.Envelope
	rcptBytes int // of Env.Recipients, counted as ValidateEnvelope does
}

// Mail starts a transaction with the reverse path of MAIL FROM (without
// its angle brackets; "" is the null sender, stored "<>"): the address in
// its bare form, SMTPUTF8 set when it is not ASCII. The refusal is
// ReplyBadSender.
func Mail(path string) (*Transaction, error) {
	t := &Transaction{}
	if path == "" {
		t.Env.Sender = "<>"
		return t, nil
	}
	a, err := message.ParseAddress(path)
	if err != nil {
		return nil, ReplyBadSender
	}
	t.Env.Sender = a
	if !message.IsASCII(a) {
		t.Env.SMTPUTF8 = true
	}
	return t, nil
}

// Rcpt adds the forward path of RCPT TO with its NOTIFY (as
// message.ParseNotify returns it, "" for none; the spool keeps one per
// message: the union of the recipients' (message.NotifyUnion), so that
// relayd withholds a notice only when no recipient wants it) unless it
// would take the envelope past max recipients (0: message.MaxRecipients)
// or message.MaxRecipientBytes.
// The refusals are ReplyBadRecipient and ReplyTooManyRecipients.
func (t *Transaction) Rcpt(path, notify string, max int) error {
	if max <= 0 || max > message.MaxRecipients {
		max = message.MaxRecipients
	}
	if len(t.Env.Recipients) >= max {
		return ReplyTooManyRecipients
	}
	a, err := message.ParseAddress(path)
	if err != nil {
		return ReplyBadRecipient
	}
	if t.rcptBytes+len(a)+1 > message.MaxRecipientBytes {
		return ReplyTooManyRecipients
	}
	t.rcptBytes += len(a) + 1
	if len(t.Env.Recipients) == 0 {
		t.Env.Notify = notify
	} else {
		t.Env.Notify = message.NotifyUnion(t.Env.Notify, notify)
	}
	if !message.IsASCII(a) {
		t.Env.SMTPUTF8 = true
	}
	t.Env.Recipients = append(t.Env.Recipients, a)
	return nil
}
