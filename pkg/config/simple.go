package config

import (
	"strconv"
)

// parseSimple decodes data into the map BurntSushi/toml's Decode would
// produce (map[string]any: string, int64, bool, []any, map[string]any and
// []map[string]any for arrays of tables), for files written in the plain
// subset of TOML that mailshim.conf uses; ok is false for anything else,
// and the caller then decodes with BurntSushi/toml, which also reports the
// errors. sendmail reads the configuration at every call, and in a fresh
// process BurntSushi/toml's parse of even a five-line file costs ~0.1 ms,
// most of it the first use of its code and memory; this parser touches a
// few pages of its own.
//
// The subset, each line one of:
//
//	(blank, or a comment)
//	[key.key]     a table not seen before (every key before the last one a table)
//	[[key.key]]   an element of an array of tables
//	key = value   a key not yet set in the current table
//
// with spaces and tabs anywhere between tokens and a comment after the
// last one. A key is bare (A-Z a-z 0-9 _ -) or quoted ("..." or '...',
// not empty, without backslash). A value is a string ("..." without
// backslash, or '...'), a decimal integer without underscores or leading
// zeros, true, false, or an array of those on one line. Anything else —
// escapes, floats, dates, inline tables, dotted keys, multi-line strings
// or arrays, CR, bytes outside printable ASCII and tab, a table or key
// defined twice — returns ok = false, so that what this parser accepts it
// decodes exactly as BurntSushi/toml does (FuzzParseSimple compares the
// two).
func parseSimple(data []byte) (map[string]any, bool) {
	root := map[string]any{}
	cur := root
	p := simpleParser{data: data}
	for !p.eof() {
		p.skipBlank()
		switch c := p.peek(); {
		case c == '\n':
			p.pos++
			continue
		case c == '#':
			if !p.comment() {
				return nil, false
			}
			continue
		case c == '[':
			t, ok := p.header(root)
			if !ok {
				return nil, false
			}
			cur = t
		default:
			k, ok := p.key()
			if !ok {
				return nil, false
			}
			p.skipBlank()
			if p.peek() != '=' {
				return nil, false
			}
			p.pos++
			p.skipBlank()
			v, ok := p.value()
			if !ok {
				return nil, false
			}
			if _, dup := cur[k]; dup {
				return nil, false
			}
			cur[k] = v
		}
		if !p.endOfLine() {
			return nil, false
		}
	}
	return root, true
}

type simpleParser struct {
	data []byte
	pos  int
}

func (p *simpleParser) eof() bool { return p.pos >= len(p.data) }

// peek returns the next byte, 0 at the end.
func (p *simpleParser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.data[p.pos]
}

func (p *simpleParser) skipBlank() {
	for !p.eof() && (p.data[p.pos] == ' ' || p.data[p.pos] == '\t') {
		p.pos++
	}
}

// comment skips a comment up to the line end: printable ASCII and tab.
func (p *simpleParser) comment() bool {
	for !p.eof() && p.data[p.pos] != '\n' {
		if !printable(p.data[p.pos]) {
			return false
		}
		p.pos++
	}
	return true
}

// endOfLine skips blanks and a comment and the line end (or the end of
// the data); false when something else follows.
func (p *simpleParser) endOfLine() bool {
	p.skipBlank()
	if p.peek() == '#' && !p.comment() {
		return false
	}
	if p.eof() {
		return true
	}
	if p.data[p.pos] != '\n' {
		return false
	}
	p.pos++
	return true
}

func printable(c byte) bool { return c == '\t' || c >= 0x20 && c < 0x7f }

func bareKeyByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// key reads a bare or quoted key.
func (p *simpleParser) key() (string, bool) {
	switch p.peek() {
	case '"', '\'':
		s, ok := p.str()
		return s, ok && s != ""
	}
	start := p.pos
	for !p.eof() && bareKeyByte(p.data[p.pos]) {
		p.pos++
	}
	return string(p.data[start:p.pos]), p.pos > start
}

// str reads a string in double quotes without backslash, or in single
// quotes, on one line.
func (p *simpleParser) str() (string, bool) {
	q := p.data[p.pos]
	p.pos++
	start := p.pos
	for !p.eof() {
		c := p.data[p.pos]
		switch {
		case c == q:
			s := string(p.data[start:p.pos])
			p.pos++
			return s, true
		case c == '\\' && q == '"', !printable(c):
			return "", false
		}
		p.pos++
	}
	return "", false
}

// value reads a string, an integer, a boolean or a one-line array of them.
func (p *simpleParser) value() (any, bool) {
	switch c := p.peek(); {
	case c == '"' || c == '\'':
		if p.pos+2 < len(p.data) && p.data[p.pos+1] == c && p.data[p.pos+2] == c {
			return nil, false // multi-line string
		}
		return p.str()
	case c == '[':
		p.pos++
		arr := []any{}
		for {
			p.skipBlank()
			if p.peek() == ']' {
				p.pos++
				return arr, true
			}
			if p.peek() == '[' {
				return nil, false // nested array
			}
			v, ok := p.value()
			if !ok {
				return nil, false
			}
			arr = append(arr, v)
			p.skipBlank()
			switch p.peek() {
			case ',':
				p.pos++
			case ']':
			default:
				return nil, false
			}
		}
	}
	start := p.pos
	for !p.eof() && bareKeyByte(p.data[p.pos]) || p.peek() == '+' {
		p.pos++
	}
	w := string(p.data[start:p.pos])
	switch w {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	digits := w
	if len(digits) > 0 && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" || len(digits) > 1 && digits[0] == '0' {
		return nil, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return nil, false
		}
	}
	n, err := strconv.ParseInt(w, 10, 64)
	return n, err == nil
}

// header reads a table header ([a.b] or [[a.b]]) and returns the table
// that the keys after it go into. A header naming a key that exists
// already (a table named before, made on the way to another, or a value)
// is left to the full parser: TOML allows some of those orders, not all.
func (p *simpleParser) header(root map[string]any) (map[string]any, bool) {
	p.pos++
	array := p.peek() == '['
	if array {
		p.pos++
	}
	var path []string
	for {
		p.skipBlank()
		k, ok := p.key()
		if !ok {
			return nil, false
		}
		path = append(path, k)
		p.skipBlank()
		if p.peek() == '.' {
			p.pos++
			continue
		}
		if p.peek() != ']' {
			return nil, false
		}
		p.pos++
		if array {
			if p.peek() != ']' {
				return nil, false
			}
			p.pos++
		}
		break
	}
	t := root
	for _, k := range path[:len(path)-1] {
		switch v := t[k].(type) {
		case nil:
			m := map[string]any{}
			t[k] = m
			t = m
		case map[string]any:
			t = v
		default:
			return nil, false
		}
	}
	last := path[len(path)-1]
	m := map[string]any{}
	switch v := t[last].(type) {
	case nil:
		if array {
			t[last] = []map[string]any{m}
		} else {
			t[last] = m
		}
	case []map[string]any:
		if !array {
			return nil, false
		}
		t[last] = append(v, m)
	default:
		return nil, false
	}
	return m, true
}
