package message

import "bytes"

// Span is where an address stands in a header field's value: the bytes
// [Start, End).
type Span struct{ Start, End int }

// AddressSpans scans the value of an address field (From:, To:, ...: a
// list of mailboxes and groups, with display names, comments, quoted
// strings and folded lines) and returns, in order, where the address of
// each mailbox stands: the content of its <...> (blanks trimmed), or its
// only word when it has no angle brackets (a mailbox of several words,
// such as a display name alone or a quoted local part with its domain,
// has none it can point at). list reports a list or a group (a ',', ';' or
// ':' outside quotes, comments and angle brackets). ok is false when the
// value cannot be scanned with confidence: an unterminated quoted string,
// comment or angle bracket, a second '<', or a route, quoted string or
// comment inside angle brackets.
//
// It is the one scanner for addresses in header fields: pickup qualifies
// bare local names with it and rewrites a From: address.
func AddressSpans(v []byte) (spans []Span, list, ok bool) {
	var (
		depth                int  // comment nesting
		quoted, inAngle      bool // in a quoted string, in <...>
		angleStart, angleEnd = -1, -1
		words                int
		wordStart, wordEnd   = -1, -1
	)
	reset := func() { angleStart, angleEnd, words, wordStart, wordEnd = -1, -1, 0, -1, -1 }
	finish := func() {
		switch {
		case angleStart >= 0 && angleEnd >= 0:
			a := bytes.TrimSpace(v[angleStart:angleEnd])
			if len(a) > 0 {
				s := angleStart + bytes.Index(v[angleStart:angleEnd], a)
				spans = append(spans, Span{s, s + len(a)})
			}
		case angleStart < 0 && words == 1 && wordStart >= 0:
			spans = append(spans, Span{wordStart, wordEnd})
		}
		reset()
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
		case depth > 0:
			switch c {
			case '\\':
				i++
			case '(':
				depth++
			case ')':
				depth--
			}
		case inAngle:
			if c == '>' {
				inAngle, angleEnd = false, i
			} else if c == '"' || c == '(' || c == '<' {
				return nil, list, false
			}
		case c == '(':
			depth++
		case c == '"':
			quoted = true
			words++
			wordStart, wordEnd = -1, -1
		case c == '<':
			if angleStart >= 0 {
				return nil, list, false
			}
			inAngle, angleStart = true, i+1
		case c == ',' || c == ';':
			list = true
			finish()
		case c == ':':
			// A group's display name ends: its mailboxes follow.
			list = true
			reset()
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		default:
			if wordEnd != i {
				words++
				wordStart = i
			}
			wordEnd = i + 1
		}
	}
	if quoted || depth > 0 || inAngle {
		return nil, list, false
	}
	finish()
	return spans, list, true
}
