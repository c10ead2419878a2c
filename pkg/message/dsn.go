package message

import (
	"errors"
	"strings"
)

// The RFC 3461 DSN parameters, one definition for every door (sendmail's
// -N, -R, -V and -B, the submission socket, the -bs server, the SMTP
// listener) and for relay, which passes them on. The spool stores each in
// the form the Parse functions return: upper case, NOTIFY as a comma list
// without blanks, ENVID decoded (plain text, which the SMTP client
// xtext-encodes again when it sends it).

// The NOTIFY keywords.
const (
	NotifyNever   = "NEVER"
	NotifySuccess = "SUCCESS"
	NotifyFailure = "FAILURE"
	NotifyDelay   = "DELAY"
)

// ParseNotify returns the stored form of a NOTIFY value given in any case,
// with blanks around its commas: NEVER alone, or a list of SUCCESS,
// FAILURE and DELAY. ok is false for anything else ("" included).
func ParseNotify(v string) (notify string, ok bool) {
	parts := strings.Split(strings.ToUpper(v), ",")
	for i, p := range parts {
		p = strings.Trim(p, " \t")
		switch p {
		case NotifySuccess, NotifyFailure, NotifyDelay:
		case NotifyNever:
			if len(parts) > 1 {
				return "", false
			}
		default:
			return "", false
		}
		parts[i] = p
	}
	return strings.Join(parts, ","), true
}

// ValidNotify reports whether v is "" (none given) or a NOTIFY value in
// its stored form.
func ValidNotify(v string) bool {
	if v == "" {
		return true
	}
	n, ok := ParseNotify(v)
	return ok && n == v
}

// NotifyKeywords returns the keywords of a stored NOTIFY value (nil for
// "" or an invalid one).
func NotifyKeywords(notify string) []string {
	n, ok := ParseNotify(notify)
	if !ok {
		return nil
	}
	return strings.Split(n, ",")
}

// NotifyAllows reports whether a NOTIFY value lets a notice of kind
// (NotifySuccess, NotifyFailure, NotifyDelay) be sent: when none was given
// (the MTA's choice), or when it names kind.
func NotifyAllows(notify, kind string) bool {
	if notify == "" {
		return true
	}
	for _, k := range NotifyKeywords(notify) {
		if k == kind {
			return true
		}
	}
	return false
}

// NotifyUnion is the one NOTIFY a message stores for recipients that
// gave a and b (stored forms, "" for none): every kind of notice either
// asks for, so that a notice is withheld only when no recipient wants it.
// "" (the MTA's choice, which reports failures and delays) wins over any
// list; NEVER adds nothing.
func NotifyUnion(a, b string) string {
	switch {
	case a == "" || b == "":
		return ""
	case a == NotifyNever:
		return b
	case b == NotifyNever:
		return a
	}
	var out []string
	for _, k := range []string{NotifySuccess, NotifyFailure, NotifyDelay} {
		if NotifyAllows(a, k) || NotifyAllows(b, k) {
			out = append(out, k)
		}
	}
	return strings.Join(out, ",")
}

// ParseRet returns the stored form of a RET value (FULL or HDRS, any
// case); ok is false for anything else.
func ParseRet(v string) (string, bool) {
	switch u := strings.ToUpper(v); u {
	case "FULL", "HDRS":
		return u, true
	}
	return "", false
}

// ParseBody returns the stored form of a BODY value (7BIT or 8BITMIME,
// any case); ok is false for anything else.
func ParseBody(v string) (string, bool) {
	switch u := strings.ToUpper(v); u {
	case "7BIT", "8BITMIME":
		return u, true
	}
	return "", false
}

// ValidEnvID reports whether v is acceptable as an RFC 3461 ENVID in its
// stored (decoded) form: 1 to MaxEnvID printable US-ASCII characters, no
// space.
func ValidEnvID(v string) bool {
	if v == "" || len(v) > MaxEnvID {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

// errXtext is a malformed xtext value.
var errXtext = errors.New("malformed xtext")

// DecodeXtext decodes an RFC 3461 xtext value as an SMTP client sends
// ENVID: printable US-ASCII other than '+' and '=' stands for itself,
// "+XX" (two upper-case hex digits) for the byte XX.
func DecodeXtext(s string) (string, error) {
	if !strings.ContainsAny(s, "+=") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '=':
			return "", errXtext
		case '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return "", errXtext
			}
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b), nil
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}
