// Package submit is the one submission pipeline behind mailshim's doors
// into the spool: the maildrop (package maildrop, sendmail's own door),
// the submission socket (package submitsock) and the loopback SMTP
// listener (package smtpd). Every door prepares a message the same way
// (Prepare); the doors that reach relayd directly share its checks and
// its durable store (Intake); a refusal is an *Error carrying the sysexits
// code the client is told, its text fitted to one line by ReplyLine. The
// two SMTP servers (sendmail -bs, relayd's listener) build the envelope
// of a transaction the same way (Transaction) and answer a refusal with
// the same reply (SMTPReply).
//
// Its Go API is not stable.
package submit

import (
	"io"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Error is a refusal with the sysexits code the client should exit with.
type Error struct {
	Code int
	Msg  string
	// Temporary is a refusal that a later try may pass (a rate limit of
	// the per-account policy): the SMTP servers answer it 4xx, not 5xx
	// (SMTPReply), the submission socket with "later" instead of "error";
	// sendmail exits Code all the same.
	Temporary bool
}

func (e *Error) Error() string { return e.Msg }

// Store stores one message: it reads body to its end (an error from body
// means the message is incomplete and must not be stored), makes it
// durable, and returns its queue ID. Returning an *Error chooses the code
// the client exits with; spool.ErrTooLarge maps to EX_DATAERR, a full
// spool (spool.IsFull) to EX_CANTCREAT, anything else to EX_IOERR.
type Store func(m *spool.Meta, body io.Reader) (id string, err error)

// SenderPolicy decides whether a user may use an envelope sender
// (config.Config implements it with [policy] allowed_senders). An error
// refuses the message with EX_NOPERM (77) and its text.
type SenderPolicy interface {
	CheckSender(user string, uid int, sender string) error
}

// SizeError is a message over a size limit of Limit bytes
// (max_message_size): errors.Is(err, spool.ErrTooLarge) holds for it,
// and its text names the limit, the same from every door (sendmail's own
// refusal, the submission socket's, both SMTP servers' 552 5.3.4), as
// Postfix's names its message_size_limit.
type SizeError struct{ Limit int64 }

func (e *SizeError) Error() string {
	if e.Limit <= 0 {
		return "message too large"
	}
	n := config.FormatSize(e.Limit)
	if n[len(n)-1] >= '0' && n[len(n)-1] <= '9' {
		n += " bytes"
	}
	return "message too large: the limit is " + n
}

func (e *SizeError) Is(target error) bool { return target == spool.ErrTooLarge }

// RecipientLimit tells the most recipients an account may give one
// message (relayd implements it with [policy] max_recipients); 0 for no
// limit.
type RecipientLimit interface {
	MaxRecipients(user string, uid int) int
}

// ReplyLine makes s fit in one reply line (control characters become
// spaces, at most 400 bytes): the rule of every door that answers a
// client with a line, both SMTP servers (-bs and the loopback listener)
// and the submission socket.
func ReplyLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 400 {
		s = s[:400]
	}
	return s
}
