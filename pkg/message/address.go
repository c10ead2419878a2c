package message

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// MaxAddress is the longest address accepted, in octets.
const MaxAddress = 512

// placeholder qualifies a bare local name so that net/mail can parse it.
const placeholder = "@mailshim.invalid"

var parser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	// Display names are thrown away: any charset will do.
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// ErrControl is returned for an address or name that holds CR, LF, NUL or
// another control character.
var ErrControl = errors.New("contains a control character (CR, LF, NUL, ...)")

// HasControl reports whether s contains a control character — a byte
// below 0x20, DEL, or (UTF-8 encoded) a C1 control, a Unicode line or
// paragraph separator, or a bidirectional control (U+061C, U+200E/200F,
// U+202A-202E, U+2066-2069). None has a place in an address, a name or a
// parameter, and each can break a line, drive a terminal, or make what an
// administrator reads differ from what is stored.
func HasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		if c < 0x80 {
			continue
		}
		r, _ := utf8.DecodeRuneInString(s[i:])
		switch {
		case r >= 0x80 && r < 0xa0, r == '\u2028' || r == '\u2029',
			r == '\u061c' || r == '\u200e' || r == '\u200f', r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
			return true
		}
	}
	return false
}

// ParseList parses a comma-separated address list (a To: value, a
// command-line argument) and returns the bare addresses ("user@domain", or
// an unqualified local name "root"). Group syntax is understood; display
// names and comments are dropped. An empty list is not an error.
func ParseList(s string) ([]string, error) {
	if strings.Trim(s, " \t") == "" {
		return nil, nil
	}
	if list, err := parser.ParseList(s); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			bare, err := check(a.Address)
			if err != nil {
				return nil, err
			}
			out = append(out, bare)
		}
		return out, nil
	}
	// net/mail refuses unqualified names: go item by item.
	var out []string
	for _, item := range splitList(s) {
		if strings.Trim(item, " \t") == "" {
			continue
		}
		a, err := ParseAddress(item)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseAddress parses one address, with or without angle brackets and
// display name, qualified or a bare local name, and returns it bare.
func ParseAddress(s string) (string, error) {
	if plainAddress(s) {
		// What the parser below gives back unchanged, without its
		// allocations: every door checks the envelope, some twice.
		return s, nil
	}
	return parseAddress(s)
}

// parseAddress is ParseAddress through net/mail's parser.
func parseAddress(s string) (string, error) {
	if HasControl(strings.ReplaceAll(s, "\t", " ")) {
		return "", ErrControl
	}
	if len(s) > 4*MaxAddress {
		return "", errors.New("too long")
	}
	a, err := parser.Parse(s)
	if err == nil {
		return check(a.Address)
	}
	// RFC 5322 comments where net/mail does not take them (before the
	// address, after a bare local name, inside a local part): the
	// address is the same without them.
	if strings.IndexByte(s, '(') >= 0 {
		if t := stripComments(s); t != s && strings.Trim(t, " \t") != "" {
			if a, err2 := parseAddress(t); err2 == nil {
				return a, nil
			}
		}
	}
	// A display name net/mail refuses (raw 8-bit from a script writing
	// Latin-1, "a@b <a@b>"): the angle-addr alone decides.
	if i, j := strings.LastIndexByte(s, '<'), strings.LastIndexByte(s, '>'); i >= 0 && j > i && strings.TrimSpace(s[j+1:]) == "" {
		if inner := s[i+1 : j]; !strings.ContainsAny(inner, "<>") && inner != s {
			if a, err2 := ParseAddress(inner); err2 == nil {
				return a, nil
			}
		}
	}
	if strings.Contains(s, "@") {
		return "", simplify(err)
	}
	// A bare local name as check returns it: taken as it is, so that
	// ParseAddress of its own result always gives it back (the
	// submission socket validates again what sendmail sends).
	if t := strings.Trim(s, " \t"); localName(t) {
		return t, nil
	}
	// A bare local name: qualify it for the parser, then take it back.
	q := s + placeholder
	if i := strings.LastIndexByte(s, '>'); i >= 0 {
		q = s[:i] + placeholder + s[i:]
	}
	a, err2 := parser.Parse(q)
	if err2 != nil || !strings.HasSuffix(a.Address, placeholder) {
		return "", simplify(err)
	}
	local := strings.TrimSuffix(a.Address, placeholder)
	if !localName(local) {
		return "", fmt.Errorf("%q is not a local user or alias name", local)
	}
	return local, nil
}

// plainAddress reports whether s is an address ParseAddress returns as it
// is: "local@domain" of at most MaxAddress octets, both parts dot-atoms
// (no leading, trailing or doubled dot) of letters, digits and, in the
// local part, "_", "+", "=" and "-" (not first), in the domain "-". Every
// other form, quoted, bracketed, with a name, a comment or 8-bit, goes
// through the parser.
func plainAddress(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || len(s) > MaxAddress {
		return false
	}
	return plainAtom(s[:at], true) && plainAtom(s[at+1:], false)
}

func plainAtom(s string, local bool) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.':
			if s[i-1] == '.' {
				return false
			}
		case c == '-' && i > 0:
		case local && (c == '_' || c == '+' || c == '=' && i > 0):
		default:
			return false
		}
	}
	return true
}

func simplify(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "mail: "))
}

// check validates a parsed address and returns it in its bare form, with
// the local part quoted when it needs to be.
func check(addr string) (string, error) {
	if HasControl(addr) {
		return "", ErrControl
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		if !localName(addr) {
			return "", fmt.Errorf("%q is not a local user or alias name", addr)
		}
		return addr, nil
	}
	if at == 0 || at == len(addr)-1 {
		return "", errors.New("empty local part or domain")
	}
	// mail.Address.String quotes the local part where RFC 5322 needs it.
	bare := (&mail.Address{Address: addr}).String()
	bare = strings.TrimSuffix(strings.TrimPrefix(bare, "<"), ">")
	if len(bare) > MaxAddress {
		return "", fmt.Errorf("longer than %d octets", MaxAddress)
	}
	if local := addr[:at]; bare[0] == '-' || strings.ContainsAny(local[:1], "|/-") || strings.HasPrefix(strings.ToLower(local), ":include:") {
		// Valid in RFC 5322 (quoted), but a program, a file or an option
		// for whatever reads it next (local delivery, a program handed the
		// address): refuse.
		return "", errProgram
	}
	if strings.ContainsAny(addr, " \t") && !strings.HasPrefix(bare, "\"") {
		return "", errors.New("white space in an address")
	}
	return bare, nil
}

// IsLocalName reports whether s is a bare local name every part of the
// product takes: an unqualified recipient, a name pickup qualifies in a
// header field.
func IsLocalName(s string) bool { return localName(s) }

// localName reports whether s is acceptable as an unqualified recipient: a
// user or alias name, never a program ("|cmd"), a file ("/path") or an
// include (":include:"), which some MTAs would act on.
func localName(s string) bool {
	if s == "" || len(s) > 64 || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-' || c == '+' || c == '=') && i > 0:
		case c >= 0x80:
		default:
			return false
		}
	}
	return true
}

// stripComments returns s without its RFC 5322 comments (nested, with
// quoted-pairs) outside quoted strings and domain literals, or s itself
// when a comment is not closed or is not set apart by white space (or
// the start, the end, an angle bracket, a comma): "root (Admin)" and
// "(Sales) sales@example.org" are the addresses without the comments,
// but "$(id)@example.org" is not "$@example.org".
func stripComments(s string) string {
	var b strings.Builder
	depth, start, quoted, square, esc := 0, 0, false, false, false
	apart := func(c byte) bool { return c == ' ' || c == '\t' || c == ',' }
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '(':
				depth++
			case c == ')':
				depth--
				if depth == 0 {
					if (start > 0 && !apart(s[start-1]) && s[start-1] != '>') ||
						(i+1 < len(s) && !apart(s[i+1]) && s[i+1] != '<') {
						return s
					}
					b.WriteByte(' ')
				}
			}
			continue
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case quoted:
			quoted = c != '"'
		case c == '"':
			quoted = true
		case square:
			square = c != ']'
		case c == '[':
			square = true
		case c == '(':
			depth, start = 1, i
			continue
		}
		b.WriteByte(c)
	}
	if depth > 0 || quoted {
		return s
	}
	return strings.Trim(b.String(), " \t")
}

// splitList splits an address list at commas outside quotes, angle
// brackets, comments and domain literals.
func splitList(s string) []string {
	var out []string
	depth, angle, square := 0, false, false
	quoted, esc := false, false
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case quoted:
			quoted = c != '"'
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
			// A double quote in a comment is ctext (RFC 5322), not
			// the start of a quoted string.
		case c == '"':
			quoted = true
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == '[':
			square = true
		case c == ']':
			square = false
		case c == ',' && !angle && !square:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// IsASCII reports whether s is all US-ASCII (else the message needs
// SMTPUTF8 to be relayed).
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FormatFrom returns the value of a From: field for the address addr and
// the full name name (may be empty), quoting or encoding the name as
// needed.
func FormatFrom(name, addr string) string {
	if name == "" {
		return addr
	}
	if IsASCII(name) && !strings.ContainsAny(name, "()<>[]:;@\\,.\"") && strings.TrimSpace(name) == name && !strings.Contains(name, "=?") {
		return name + " <" + addr + ">"
	}
	if !utf8.ValidString(name) {
		// Not UTF-8: a name from a script in a legacy locale or an old
		// GECOS field, most likely ISO-8859-1, where every byte is a
		// character. Labelled so, a reader shows the name that was
		// meant; labelled UTF-8 it would show replacement characters.
		return phrase("iso-8859-1", name) + " <" + addr + ">"
	}
	if !IsASCII(name) {
		return phrase("utf-8", name) + " <" + addr + ">"
	}
	a := mail.Address{Name: name, Address: "x@x"}
	s := a.String() // `"Name" <x@x>`: every character is ASCII
	return strings.TrimSuffix(s, "<x@x>") + "<" + addr + ">"
}

// phrase Q-encodes name, in charset "utf-8" or "iso-8859-1" (every byte a
// character), as a display name: encoded-words of at most 75 characters
// (RFC 2047 section 2) that split no character (section 5), separated by
// a space (not shown, section 6.2), each holding only letters, digits and
// "!*+-/" as they are (section 5(3): what may stand in a phrase), every
// other byte as =XX and a space as "_". (mime.QEncoding, which
// mail.Address uses unless the name holds one of a list of specials,
// leaves a backslash and the specials , < > " ( ) @ : ; as they are,
// which end a phrase and let a name put an address into From:, and
// splits no word in a charset other than UTF-8.)
func phrase(charset, name string) string {
	open, shut := "=?"+charset+"?q?", "?="
	room := 75 - len(open) - len(shut)
	const hex = "0123456789ABCDEF"
	plain := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ' ' || strings.IndexByte("!*+-/", c) >= 0
	}
	var b strings.Builder
	b.Grow(len(open) + 3*len(name) + len(name)/room*(len(open)+len(shut)+1) + len(shut))
	n := room // characters in the current word: a new one first
	for i := 0; i < len(name); {
		size := 1
		if charset == "utf-8" {
			_, size = utf8.DecodeRuneInString(name[i:])
		}
		w := 0 // the character's width encoded
		for _, c := range []byte(name[i : i+size]) {
			if w += 3; plain(c) {
				w -= 2
			}
		}
		if n+w > room {
			if i > 0 {
				b.WriteString(shut + " ")
			}
			b.WriteString(open)
			n = 0
		}
		for _, c := range []byte(name[i : i+size]) {
			switch {
			case c == ' ':
				b.WriteByte('_')
			case plain(c):
				b.WriteByte(c)
			default:
				b.WriteByte('=')
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			}
		}
		n += w
		i += size
	}
	b.WriteString(shut)
	return b.String()
}
