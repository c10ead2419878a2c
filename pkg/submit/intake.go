package submit

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// This file is the one submission pipeline behind mailshim's three doors:
//
//   - the maildrop (setgid sendmail: maildrop.Local.Store → Prepare →
//     spool.Drop; relayd's pickup then queues the file),
//   - the submission socket (submitsock.Server.Serve → Intake),
//   - the loopback SMTP listener (package smtpd → Prepare → Intake).
//
// Prepare is the header work every door does to a message in flight
// (PHP's X-PHP-Originating-Script, the origin record bounded, the
// envelope validated, a From: for a message without one, the header
// checked against the limits pickup reads with). Intake is relayd's side:
// the same envelope check, the sender policy, and the store that queues
// the message durably through pickup (pickup.Pickup.Store, which runs the
// same rewriting as for a maildrop file) before the client is answered.

// Prepare completes and checks a message whose header section h has been
// read and whose body follows in body: the PHP header applied to org,
// org bounded (origin.Sanitize), env validated (message.ValidateEnvelope,
// normalised in place), a From: added when the message has none (the full
// name, and the sender or user@hostname), and the header checked against
// the limits of package message. It returns the header bytes to store
// before body. Errors: *message.EnvelopeError, message.ErrHeaderTooLarge.
func Prepare(env *spool.Envelope, org *spool.Origin, h *message.Header, body io.Reader, hostname string) ([]byte, error) {
	if v := h.Get("X-PHP-Originating-Script"); v != "" {
		origin.ApplyPHPHeader(org, v)
	}
	origin.Sanitize(org)
	if err := message.ValidateEnvelope(env); err != nil {
		return nil, err
	}
	message.EnsureFrom(h, env.FullName, fromAddress(env.Sender, org, hostname))
	bodyFollows := false
	if p, ok := body.(interface{ Peek(int) ([]byte, error) }); ok {
		_, err := p.Peek(1)
		bodyFollows = err == nil
	}
	// What pickup could not read is refused here, never stored.
	if err := h.Check(bodyFollows); err != nil {
		return nil, err
	}
	return h.Bytes(bodyFollows), nil
}

// fromAddress is the address of a From: added to a message without one:
// the sender (qualified with hostname), else the user at hostname.
func fromAddress(sender string, org *spool.Origin, hostname string) string {
	if sender != "" && sender != "<>" {
		if strings.Contains(sender, "@") {
			return sender
		}
		return sender + "@" + hostname
	}
	user := org.User
	if user == "" {
		user = "uid" + strconv.Itoa(org.UID)
	}
	return user + "@" + hostname
}

// Intake is relayd's submission pipeline for the doors that reach it
// directly (the submission socket and the SMTP listener): the checks a
// message passes before its body is read, and the durable store. The
// zero value with Store set works; relayd sets Policy too. Its fields are
// not changed after it is handed to a door, so doors may share copies.
type Intake struct {
	Store Store
	// Policy, if set, is asked about every envelope sender given.
	Policy SenderPolicy
	// Recipients, if set, tells each account's recipient limit, which
	// the SMTP listener applies at RCPT (see MaxRecipients).
	Recipients RecipientLimit
	// Sender, if set, is the envelope sender relayd sends upstream for
	// the one a client gave ([senders]: pickup.Pickup.Sender), for the
	// doors' log lines (see SentSender).
	Sender func(sender string, o *spool.Origin) string
}

// SentSender is the envelope sender relayd sends upstream for sender, the
// one a client of o gave: what the mail log names (the upstream's log
// and a refusal at MAIL name it too), sender itself without Sender.
func (in *Intake) SentSender(o *spool.Origin, sender string) string {
	if in.Sender == nil {
		return sender
	}
	return in.Sender(sender, o)
}

// MaxRecipients is the most recipients the account of o may give one
// message ([policy] max_recipients; 0: no limit of its own), so that an
// SMTP door refuses the recipient over it at RCPT (452 4.5.3; the client
// sends the rest in another transaction, RFC 5321 4.5.3.1.8) instead of
// the whole message after its data. The policy at pickup still counts
// the recipients after aliases are expanded.
func (in *Intake) MaxRecipients(o *spool.Origin) int {
	if in.Recipients == nil {
		return 0
	}
	return in.Recipients.MaxRecipients(o.User, o.UID)
}

// CheckSender applies the sender policy to a sender the client gave: an
// *Error with EX_NOPERM (77) and the policy's reason when it is refused.
// The null sender and no sender at all are not checked (the default
// sender is resolved later, by pickup's [senders]).
func (in *Intake) CheckSender(o *spool.Origin, sender string) error {
	if in.Policy == nil || sender == "" {
		return nil
	}
	if err := in.Policy.CheckSender(o.User, o.UID, sender); err != nil {
		return &Error{Code: sysexits.NoPerm, Msg: err.Error()}
	}
	return nil
}

// Accept readies m for Store: a fresh queue ID and arrival time, the
// advisory origin bounded (origin.Sanitize; the kernel-verified UID, GID
// and user are the door's to set before), the envelope validated exactly
// as sendmail validates it, and the sender policy. A refusal is an *Error
// with the sysexits code (67 a recipient, 64 none, 65 other envelope
// errors, 77 the policy).
func (in *Intake) Accept(m *spool.Meta) error {
	now := time.Now()
	m.ID, m.Time = spool.NewID(now), now
	m.Size, m.CRC, m.BodyOffset = 0, 0, 0
	m.Extra = nil // unknown keys: nothing a client may add
	origin.Sanitize(&m.Origin)
	if err := message.ValidateEnvelope(&m.Env); err != nil {
		return Classify(err)
	}
	return in.CheckSender(&m.Origin, m.Env.Sender)
}

// Submit runs Accept, then stores m with body (read to its end) and
// returns the queue ID once the message is durable. Errors are *Error
// (see Classify) except that the error of body itself, when reading it
// failed, is returned as it is, so that a door can tell an aborted
// transfer from a refusal.
func (in *Intake) Submit(m *spool.Meta, body io.Reader) (string, error) {
	if err := in.Accept(m); err != nil {
		return "", err
	}
	return in.Store(m, body)
}

// Classify turns an error of Prepare, Intake or Store into the refusal a
// client is told: an *Error as it is; an envelope refused
// (*message.EnvelopeError) with its code; a *SizeError (its text names
// the limit) or spool.ErrTooLarge EX_DATAERR;
// a header over the limits EX_DATAERR; a full spool (spool.IsFull)
// EX_CANTCREAT; anything else EX_IOERR with a text that names no path or
// other user's data.
func Classify(err error) *Error {
	var (
		e  *Error
		ee *message.EnvelopeError
		se *SizeError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &ee):
		return &Error{Code: ee.Code, Msg: ee.Msg}
	case errors.As(err, &se):
		return &Error{Code: sysexits.DataErr, Msg: se.Error()}
	case errors.Is(err, spool.ErrTooLarge):
		return &Error{Code: sysexits.DataErr, Msg: "message too large"}
	case errors.Is(err, message.ErrHeaderTooLarge):
		return &Error{Code: sysexits.DataErr, Msg: message.ErrHeaderTooLarge.Error()}
	case spool.IsFull(err):
		return &Error{Code: sysexits.CantCreat, Msg: "the spool is full"}
	}
	return &Error{Code: sysexits.IOErr, Msg: "could not store the message"}
}
