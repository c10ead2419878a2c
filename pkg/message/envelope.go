package message

import (
	"errors"
	"fmt"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// Envelope limits, the same for every door into the spool (sendmail's
// maildrop, the submission socket, -bs).
const (
	// MaxRecipients bounds the recipients of one message.
	MaxRecipients = 20000
	// MaxRecipientBytes bounds the recipient addresses of one message
	// together (each counted with one byte more): 20,000 addresses of 50
	// octets, or 10,000 of 100.
	MaxRecipientBytes = 1 << 20
	// MaxFullName bounds the full name (-F).
	MaxFullName = 256
	// MaxEnvID bounds the RFC 3461 envelope ID (-V, ENVID=).
	MaxEnvID = 100
)

// EnvelopeError is an envelope that ValidateEnvelope refused, with the
// sysexits code the caller exits with: 67 for a recipient, 64 for no
// recipients at all, 65 for everything else.
type EnvelopeError struct {
	Code int
	Msg  string
}

func (e *EnvelopeError) Error() string { return e.Msg }

func envErr(code int, format string, a ...any) *EnvelopeError {
	return &EnvelopeError{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// ValidateEnvelope is the one check of an envelope before it is stored,
// run by sendmail and by the submission socket's server alike (a client of
// the socket need not be sendmail). It normalises env in place (addresses
// in their bare form, SMTPUTF8 set when an address needs it) and refuses,
// with an *EnvelopeError:
//
//   - a sender that is not "", "<>" or an address ParseAddress accepts
//     (CR, LF, NUL and other control characters, "|cmd", "/path",
//     "-option" and ":include:" shapes are refused there);
//   - a full name with a control character or over MaxFullName bytes;
//   - NOTIFY, RET, BODY or ENVID values outside RFC 3461 / RFC 6152;
//   - no recipients, more than MaxRecipients, more than
//     MaxRecipientBytes of them, or one ParseAddress refuses.
func ValidateEnvelope(env *spool.Envelope) error {
	switch s := env.Sender; s {
	case "", "<>":
	default:
		a, err := ParseAddress(s)
		if err != nil {
			return envErr(sysexits.DataErr, "invalid sender address %q: %v", truncate(s, 80), err)
		}
		env.Sender = a
	}
	if HasControl(env.FullName) {
		return envErr(sysexits.DataErr, "invalid full name: %v", ErrControl)
	}
	if len(env.FullName) > MaxFullName {
		return envErr(sysexits.DataErr, "the full name is longer than %d bytes", MaxFullName)
	}
	if !ValidNotify(env.Notify) {
		return envErr(sysexits.DataErr, "invalid DSN NOTIFY %q", truncate(env.Notify, 40))
	}
	if r, ok := ParseRet(env.Ret); env.Ret != "" && (!ok || r != env.Ret) {
		return envErr(sysexits.DataErr, "invalid DSN RET %q", truncate(env.Ret, 40))
	}
	if b, ok := ParseBody(env.BodyType); env.BodyType != "" && (!ok || b != env.BodyType) {
		return envErr(sysexits.DataErr, "invalid body type %q", truncate(env.BodyType, 40))
	}
	if env.EnvID != "" && !ValidEnvID(env.EnvID) {
		return envErr(sysexits.DataErr, "invalid DSN ENVID %q", truncate(env.EnvID, 40))
	}
	switch n := len(env.Recipients); {
	case n == 0:
		return envErr(sysexits.Usage, "no recipients")
	case n > MaxRecipients:
		return envErr(sysexits.DataErr, "too many recipients: %d, the limit is %d", n, MaxRecipients)
	}
	total := 0
	for i, r := range env.Recipients {
		total += len(r) + 1
		if total > MaxRecipientBytes {
			return envErr(sysexits.DataErr, "the recipient addresses add up to more than %d bytes", MaxRecipientBytes)
		}
		a, err := ParseAddress(r)
		if err != nil {
			return envErr(sysexits.NoUser, "invalid recipient address %q: %v", truncate(r, 80), err)
		}
		env.Recipients[i] = a
		if !IsASCII(a) {
			env.SMTPUTF8 = true
		}
	}
	if !IsASCII(env.Sender) {
		env.SMTPUTF8 = true
	}
	return nil
}

// errProgram is the refusal of a local part that names a program, a file,
// an include or an option.
var errProgram = errors.New("an address may not start with '|', '/', '-' or \":include:\"")
