package control

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The client's side of the wire format, without encoding/json: the
// client is linked into the setgid sendmail, and encoding/json's
// reflection-driven encoder and decoder are 240 KB of its binary, every
// page of which the kernel maps at every call and unmaps at exit, for
// one object each way. The server (server.go) uses encoding/json; the
// tests check that the two read each other's output the same way
// (TestWireRequest, FuzzWireAnswer).

// encodeRequest returns r as one JSON object, as json.Marshal writes
// it: encoding/json decodes it to r (invalid UTF-8 becomes U+FFFD, as it
// would with json.Marshal).
func encodeRequest(r request) []byte {
	b := append([]byte(`{"verb":`), jsonString(r.Verb)...)
	if len(r.Args) > 0 {
		b = append(b, `,"args":[`...)
		for i, a := range r.Args {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, jsonString(a)...)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// jsonString quotes s as a JSON string: quote, backslash and control
// characters escaped, everything else (invalid UTF-8 included, which a
// JSON decoder turns into U+FFFD) as it is.
func jsonString(s string) []byte {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// errAnswer is a malformed answer.
var errAnswer = errors.New("malformed answer")

// decodeAnswer reads one JSON object from r (at most limit bytes) into an
// answer, as json.NewDecoder(r).Decode(&a) would: keys matched without
// regard to case, the last of a key repeated wins, null leaves a field
// unset, unknown keys skipped whatever their value, and what follows
// the object not read; strings decoded with their escapes, invalid UTF-8
// and lone surrogates becoming U+FFFD.
func decodeAnswer(r io.Reader, limit int64) (answer, error) {
	// Read until the end of the stream, or until a line end (which JSON
	// allows only between tokens, and relayd writes only after the
	// answer) ends a complete object: like Decode, it does not wait for
	// a server that keeps the connection open after answering.
	var data []byte
	buf := make([]byte, 4096)
	r = io.LimitReader(r, limit)
	for {
		n, err := r.Read(buf)
		data = append(data, buf[:n]...)
		if err == io.EOF {
			return parseAnswer(data)
		}
		if err != nil {
			return answer{}, err
		}
		if bytes.IndexByte(buf[:n], '\n') >= 0 {
			if a, err := parseAnswer(data); err != io.ErrUnexpectedEOF {
				return a, err
			}
		}
	}
}

// parseAnswer decodes the answer at the start of data.
func parseAnswer(data []byte) (answer, error) {
	var a answer
	d := jsonDecoder{data: data}
	d.space()
	if d.literal("null") {
		return a, nil
	}
	if !d.consume('{') {
		return a, d.fail()
	}
	d.space()
	if d.consume('}') {
		return a, nil
	}
	for {
		d.space()
		key, ok := d.str()
		if !ok {
			return a, d.fail()
		}
		d.space()
		if !d.consume(':') {
			return a, d.fail()
		}
		d.space()
		var field any
		switch {
		case equalFold(key, "output"):
			field = &a.Output
		case equalFold(key, "error"):
			field = &a.Error
		case equalFold(key, "denied"):
			field = &a.Denied
		case equalFold(key, "throttled"):
			field = &a.Throttled
		case equalFold(key, "usage"):
			field = &a.Usage
		}
		if !d.value(field) {
			return a, d.fail()
		}
		d.space()
		if d.consume(',') {
			continue
		}
		if d.consume('}') {
			return a, nil
		}
		return a, d.fail()
	}
}

// equalFold is strings.EqualFold for the ASCII keys of answer (what
// encoding/json does for them).
func equalFold(s, key string) bool {
	if len(s) != len(key) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != key[i] {
			return false
		}
	}
	return true
}

type jsonDecoder struct {
	data  []byte
	pos   int
	depth int  // of the objects and arrays being skipped
	short bool // a token ran into the end of data
}

// maxDepth bounds the nesting of the values skipped (encoding/json's
// bound is 10,000; relayd's answers have none).
const maxDepth = 100

func (d *jsonDecoder) fail() error {
	if d.short || d.pos >= len(d.data) {
		return io.ErrUnexpectedEOF
	}
	return errAnswer
}

func (d *jsonDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) consume(c byte) bool {
	if d.pos < len(d.data) && d.data[d.pos] == c {
		d.pos++
		return true
	}
	return false
}

func (d *jsonDecoder) literal(s string) bool {
	rest := d.data[d.pos:]
	if len(rest) >= len(s) && string(rest[:len(s)]) == s {
		d.pos += len(s)
		return true
	}
	if len(rest) < len(s) && string(rest) == s[:len(rest)] {
		d.short = true
	}
	return false
}

// value reads one JSON value into field (*string, *bool; nil skips it).
// A value of the wrong type for field is an error, as a type error is for
// Decode.
func (d *jsonDecoder) value(field any) bool {
	if d.pos >= len(d.data) {
		return false
	}
	switch c := d.data[d.pos]; {
	case c == 'n':
		return d.literal("null")
	case c == 't' || c == 'f':
		v := c == 't'
		if !v && !d.literal("false") || v && !d.literal("true") {
			return false
		}
		switch p := field.(type) {
		case *bool:
			*p = v
		case nil:
		default:
			return false
		}
		return true
	case c == '"':
		s, ok := d.str()
		if !ok {
			return false
		}
		switch p := field.(type) {
		case *string:
			*p = s
		case nil:
		default:
			return false
		}
		return true
	case c == '{' || c == '[':
		if field != nil {
			return false
		}
		return d.skipComposite()
	case c == '-' || c >= '0' && c <= '9':
		if field != nil {
			return false
		}
		return d.number()
	}
	return false
}

// skipComposite skips an object or an array.
func (d *jsonDecoder) skipComposite() bool {
	if d.depth++; d.depth > maxDepth {
		return false
	}
	defer func() { d.depth-- }()
	open := d.data[d.pos]
	closing := byte(']')
	if open == '{' {
		closing = '}'
	}
	d.pos++
	d.space()
	if d.consume(closing) {
		return true
	}
	for {
		d.space()
		if open == '{' {
			if _, ok := d.str(); !ok {
				return false
			}
			d.space()
			if !d.consume(':') {
				return false
			}
			d.space()
		}
		if !d.value(nil) {
			return false
		}
		d.space()
		if d.consume(',') {
			continue
		}
		return d.consume(closing)
	}
}

// number skips a JSON number (-? int frac? exp?).
func (d *jsonDecoder) number() bool {
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	d.consume('-')
	if d.consume('0') {
		// no more digits in the integer part
	} else if digits() == 0 {
		return false
	}
	if d.consume('.') && digits() == 0 {
		return false
	}
	if d.consume('e') || d.consume('E') {
		if !d.consume('+') {
			d.consume('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

// str reads a JSON string.
func (d *jsonDecoder) str() (string, bool) {
	if !d.consume('"') {
		return "", false
	}
	var b []byte
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			if b == nil {
				s := d.data[start:d.pos]
				d.pos++
				if utf8.Valid(s) {
					return string(s), true
				}
				return string(validUTF8(nil, s)), true
			}
			b = validUTF8(b, d.data[start:d.pos])
			d.pos++
			return string(b), true
		case c < 0x20:
			return "", false
		case c == '\\':
			b = validUTF8(b, d.data[start:d.pos])
			if b == nil {
				b = []byte{}
			}
			r, ok := d.escape()
			if !ok {
				return "", false
			}
			b = utf8.AppendRune(b, r)
			start = d.pos
			continue
		}
		d.pos++
	}
	return "", false
}

// escape reads the escape sequence at d.pos (a backslash), a surrogate
// pair as one; a lone surrogate is U+FFFD.
func (d *jsonDecoder) escape() (rune, bool) {
	if d.pos+1 >= len(d.data) {
		d.short = true
		return 0, false
	}
	c := d.data[d.pos+1]
	d.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	case 'u':
		r, ok := d.hex4()
		if !ok {
			return 0, false
		}
		if utf16.IsSurrogate(r) {
			// A pair only when a \u escape of the second half follows.
			save := d.pos
			if d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
				d.pos += 2
				if r2, ok := d.hex4(); ok {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						return dec, true
					}
				}
			}
			d.pos = save
			return utf8.RuneError, true
		}
		return r, true
	}
	return 0, false
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if len(d.data)-d.pos < 4 {
		d.short = true
		return 0, false
	}
	n, err := strconv.ParseUint(string(d.data[d.pos:d.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	d.pos += 4
	return rune(n), true
}

// validUTF8 appends s to b with each invalid UTF-8 sequence replaced by
// U+FFFD.
func validUTF8(b, s []byte) []byte {
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[:n]...)
		}
		s = s[n:]
	}
	return b
}
