package config

import (
	"strconv"
	"strings"
)

// locator maps every key of a TOML document to the line it is written on.
//
// BurntSushi/toml keeps key positions private, so after a successful parse
// (the input is known to be valid TOML) this small scanner walks the text
// once more and records "section.key" → line. Array-of-tables elements get
// their index as a path element ("upstream.1.host"). Keys inside inline
// tables are not recorded; line() falls back to the nearest recorded parent.
type locator struct {
	lines  map[string]int
	arrays map[string]int // array-of-tables path → elements seen so far
}

func locate(data string) *locator {
	l := &locator{lines: make(map[string]int), arrays: make(map[string]int)}
	s := scanner{data: data, line: 1}
	var table []string
	for !s.eof() {
		s.skipSpace()
		if s.eof() {
			break
		}
		switch c := s.peek(); {
		case c == '\n':
			s.advance()
		case c == '#':
			s.skipComment()
		case c == '[':
			line := s.line
			s.advance()
			array := s.peek() == '['
			if array {
				s.advance()
			}
			raw := s.keyPath(']')
			s.skipTo('\n')
			if array && len(raw) > 0 {
				table = append(l.resolve(raw[:len(raw)-1]), raw[len(raw)-1])
			} else {
				table = l.resolve(raw)
			}
			if array {
				p := strings.Join(table, ".")
				n := l.arrays[p]
				l.arrays[p] = n + 1
				table = append(table, index(n))
			}
			l.record(table, line)
		default:
			line := s.line
			key := s.keyPath('=')
			if len(key) == 0 { // not a key: skip the line (cannot happen on valid TOML)
				s.skipTo('\n')
				continue
			}
			s.advance() // '='
			l.record(append(append([]string{}, table...), key...), line)
			s.skipValue()
		}
	}
	return l
}

// resolve turns a header path into a full path, inserting the current
// index after every element that names an array of tables.
func (l *locator) resolve(raw []string) []string {
	var out []string
	for _, k := range raw {
		out = append(out, k)
		if n, ok := l.arrays[strings.Join(out, ".")]; ok && n > 0 {
			out = append(out, index(n-1))
		}
	}
	return out
}

// line returns the line of path, or of its nearest recorded parent, or 0.
func (l *locator) line(path ...string) int {
	if l == nil {
		return 0
	}
	for n := len(path); n > 0; n-- {
		if ln, ok := l.lines[strings.Join(path[:n], ".")]; ok {
			return ln
		}
	}
	return 0
}

// index is the path element of the n-th array-of-tables element. The NUL
// prefix keeps it apart from any key, even a numeric one ("0" = ...).
func index(n int) string { return "\x00" + strconv.Itoa(n) }

// record sets the line of path and, where not yet known, of its parents
// (implicit tables such as "a" in [a.b] or a.b = 1), so that an error about
// a parent finds the first line that mentions it.
func (l *locator) record(path []string, line int) {
	for n := 1; n < len(path); n++ {
		p := strings.Join(path[:n], ".")
		if _, ok := l.lines[p]; !ok {
			l.lines[p] = line
		}
	}
	l.lines[strings.Join(path, ".")] = line
}

type scanner struct {
	data string
	pos  int
	line int
}

func (s *scanner) eof() bool { return s.pos >= len(s.data) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.data[s.pos]
}

func (s *scanner) advance() {
	if s.eof() {
		return
	}
	if s.data[s.pos] == '\n' {
		s.line++
	}
	s.pos++
}

func (s *scanner) hasPrefix(p string) bool { return strings.HasPrefix(s.data[s.pos:], p) }

func (s *scanner) skipSpace() {
	for !s.eof() && (s.peek() == ' ' || s.peek() == '\t' || s.peek() == '\r') {
		s.advance()
	}
}

func (s *scanner) skipComment() {
	for !s.eof() && s.peek() != '\n' {
		s.advance()
	}
}

// skipTo advances to (not past) the next c outside strings, or to EOF.
func (s *scanner) skipTo(c byte) {
	for !s.eof() && s.peek() != c {
		if s.peek() == '"' || s.peek() == '\'' {
			s.skipString()
			continue
		}
		s.advance()
	}
}

// keyPath reads a dotted key (bare or quoted parts) up to end, which is
// left unread. It returns nil when no key is found before end or newline.
func (s *scanner) keyPath(end byte) []string {
	var parts []string
	var cur strings.Builder
	have := false
	for !s.eof() {
		s.skipSpace()
		c := s.peek()
		switch {
		case c == end:
			if have {
				parts = append(parts, cur.String())
			}
			return parts
		case c == '\n' || c == '#':
			return nil
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
			have = false
			s.advance()
		case c == '"' || c == '\'':
			start := s.pos
			s.skipString()
			cur.WriteString(unquoteKey(s.data[start:s.pos]))
			have = true
		default:
			for !s.eof() {
				c := s.peek()
				if c == end || c == '.' || c == ' ' || c == '\t' || c == '\n' || c == '#' {
					break
				}
				cur.WriteByte(c)
				s.advance()
			}
			have = true
		}
	}
	return nil
}

// unquoteKey decodes a quoted key as the TOML decoder does.
func unquoteKey(q string) string {
	if len(q) < 2 {
		return q
	}
	body := q[1 : len(q)-1]
	if q[0] == '\'' {
		return body
	}
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '\\' || i+1 >= len(body) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := body[i]; e {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case 'u', 'U', 'x':
			n := map[byte]int{'u': 4, 'U': 8, 'x': 2}[e]
			if i+n < len(body) {
				if r, err := strconv.ParseUint(body[i+1:i+1+n], 16, 32); err == nil {
					b.WriteRune(rune(r))
					i += n
					continue
				}
			}
			b.WriteByte(e)
		default:
			b.WriteByte(e)
		}
	}
	return b.String()
}

// skipString skips one basic, literal or multi-line string.
func (s *scanner) skipString() {
	q := s.peek()
	triple := string([]byte{q, q, q})
	if s.hasPrefix(triple) {
		for i := 0; i < 3; i++ {
			s.advance()
		}
		for !s.eof() {
			if q == '"' && s.peek() == '\\' {
				s.advance()
				s.advance()
				continue
			}
			if s.hasPrefix(triple) {
				for i := 0; i < 3; i++ {
					s.advance()
				}
				// Up to two more quotes may belong to the content.
				for i := 0; i < 2 && s.peek() == q; i++ {
					s.advance()
				}
				return
			}
			s.advance()
		}
		return
	}
	s.advance()
	for !s.eof() && s.peek() != '\n' {
		c := s.peek()
		if q == '"' && c == '\\' {
			s.advance()
			s.advance()
			continue
		}
		s.advance()
		if c == q {
			return
		}
	}
}

// skipValue skips a value (with nested arrays and inline tables, which may
// span lines) and the rest of its line.
func (s *scanner) skipValue() {
	depth := 0
	for !s.eof() {
		c := s.peek()
		switch {
		case c == '"' || c == '\'':
			s.skipString()
		case c == '[' || c == '{':
			depth++
			s.advance()
		case c == ']' || c == '}':
			depth--
			s.advance()
		case c == '#':
			s.skipComment()
		case c == '\n':
			if depth <= 0 {
				return
			}
			s.advance()
		default:
			s.advance()
		}
	}
}
