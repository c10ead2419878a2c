package smtptest

import "strings"

// SMTP smuggling (the class of Postfix's CVE-2023-51764 and SEC Consult's
// "SMTP smuggling" research): a client whose DATA holds a line end other
// than CRLF next to a "." tries to end the message early, so that what
// follows is read as a second transaction with recipients of its own. The
// only end of DATA is <CR><LF>.<CR><LF> (RFC 5321 4.1.1.4); every SMTP
// server of the product (sendmail -bs, relayd's listeners) must keep the
// variants below as data or refuse the message, never end it there.
//
// SmugglingCases and SmugglingDialogue let a test drive any such server
// with every variant and check that SmuggledRcpt never gets a message.

// SmuggledRcpt is the recipient of the smuggled second transaction.
const SmuggledRcpt = "smuggled@attacker.example"

// SmuggledSubject is the subject of the smuggled message.
const SmuggledSubject = "smuggled"

// SmugglingCase is one end-of-data variant.
type SmugglingCase struct {
	Name string
	// End is what the attacker puts into the body in the hope that the
	// server takes it for the end of DATA.
	End string
}

// SmugglingCases returns the variants: bare LF, mixed CR/LF and bare CR
// around the dot.
func SmugglingCases() []SmugglingCase {
	return []SmugglingCase{
		{"LF.LF", "\n.\n"},
		{"CRLF.LF", "\r\n.\n"},
		{"LF.CRLF", "\n.\r\n"},
		{"CR.CRLF", "\r.\r\n"},
		{"CRLF.CR", "\r\n.\r"},
		{"CR.CR", "\r.\r"},
		{"CRLF.CRCRLF", "\r\n.\r\r\n"},
		{"CRLF.NULCRLF", "\r\n.\x00\r\n"},
	}
}

// SmugglingBody is a message whose body carries c's variant followed by a
// complete second transaction to SmuggledRcpt. It ends without the final
// <CR><LF>.<CR><LF>.
func SmugglingBody(c SmugglingCase) string {
	return "From: contact-form@example.org\r\nSubject: contact form\r\n\r\nhello" + c.End +
		"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<" + SmuggledRcpt + ">\r\nDATA\r\n" +
		"From: ceo@bank.example\r\nSubject: " + SmuggledSubject + "\r\n\r\nwire the money\r\n"
}

// SmugglingDialogue is a whole client side of a session: EHLO, one
// transaction from sender to rcpt whose body is SmugglingBody(c), the
// real end of DATA, and QUIT (pipelined: the client does not wait for
// replies).
func SmugglingDialogue(c SmugglingCase, sender, rcpt string) string {
	var b strings.Builder
	b.WriteString("EHLO attacker.example\r\n")
	b.WriteString("MAIL FROM:<" + sender + ">\r\n")
	b.WriteString("RCPT TO:<" + rcpt + ">\r\n")
	b.WriteString("DATA\r\n")
	b.WriteString(SmugglingBody(c))
	b.WriteString("\r\n.\r\nQUIT\r\n")
	return b.String()
}
