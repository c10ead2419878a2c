package relay

import (
	"errors"
	"strings"

	"golang.org/x/net/idna"

	"github.com/mailshim/mailshim/pkg/message"
)

// To an upstream that does not offer SMTPUTF8 (RFC 6531), an address is
// sent as Postfix sends it: an address whose only non-ASCII part is its
// domain goes with the domain as its A-label (punycode, UTS #46
// non-transitional: idna.Lookup), which names the same domain; one whose
// local part is not ASCII cannot be written at all, and fails for good
// with 5.6.7 (RFC 6531 3.6.4: "non-ASCII address, SMTPUTF8 not
// available"), alone: the message's other recipients are sent to. With
// SMTPUTF8 offered, addresses go as they are.

// statusNoUTF8 is the enhanced status of an address that needs SMTPUTF8
// where the upstream does not offer it (RFC 6531 3.6.4; Postfix's too).
const statusNoUTF8 = "5.6.7"

var errNoUTF8 = errors.New("SMTPUTF8 is required, but was not offered by the upstream")

// asciiAddr returns addr as an upstream without SMTPUTF8 can take it, or
// the permanent failure at stage (StageMail for the sender, StageRcpt for
// a recipient) that says why it cannot.
func asciiAddr(stage, addr string) (string, *Error) {
	if message.IsASCII(addr) {
		return addr, nil
	}
	who, bad := "recipient", "5.1.3" // bad destination mailbox address syntax
	if stage == StageMail {
		who, bad = "sender", "5.1.7" // bad sender's mailbox address syntax
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr, ""
	if at >= 0 {
		local, domain = addr[:at], addr[at+1:]
	}
	if !message.IsASCII(local) {
		return "", &Error{Class: Permanent, Stage: stage, Enhanced: statusNoUTF8, Err: errNoUTF8,
			Cause: "the " + who + " address has non-ASCII characters before the @, which only an upstream that offers SMTPUTF8 can take, and this one does not",
			Fix:   "use an ASCII address for this " + who + ", or an upstream that supports SMTPUTF8"}
	}
	a, err := idna.Lookup.ToASCII(domain)
	if err != nil || !message.IsASCII(a) {
		if err == nil {
			err = errors.New("not convertible to ASCII")
		}
		return "", &Error{Class: Permanent, Stage: stage, Enhanced: bad, Err: errors.New("invalid internationalized domain name: " + err.Error()),
			Cause: "the " + who + "'s domain " + domain + " is not a valid internationalized domain name (IDNA), so it cannot be converted to ASCII for an upstream without SMTPUTF8",
			Fix:   "check the domain of the " + who + " address"}
	}
	return local + "@" + a, nil
}
