package message

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits on the header section, which is the only part of a message held
// in memory.
const (
	// MaxField is the longest header field accepted (with its folded
	// continuation lines): a To: of 10,000 addresses fits.
	MaxField = 4 << 20
	// MaxHeader is the default bound of the whole header section.
	MaxHeader = 16 << 20
)

// ErrHeaderTooLarge is returned when a header field or the header section
// is over its bound.
var ErrHeaderTooLarge = errors.New("message: header section too large")

// Field is one header field as it came, folded lines and final LF
// included.
type Field struct {
	Name string // as written, e.g. "Subject"
	Raw  []byte // "Subject: hello\n  world\n"
}

// Value returns the field body unfolded (continuation line breaks removed)
// and trimmed.
func (f Field) Value() string {
	v := f.Raw[len(f.Name):]
	v = bytes.TrimLeft(v, " \t")
	v = bytes.TrimPrefix(v, []byte(":"))
	s := strings.ReplaceAll(string(v), "\r\n", "")
	s = strings.ReplaceAll(s, "\n", "")
	return strings.Trim(s, " \t")
}

// Is reports whether the field's name is name (case-insensitive).
func (f Field) Is(name string) bool { return strings.EqualFold(f.Name, name) }

// Header is the header section of a message.
type Header struct {
	Fields []Field
	// FromLine is a leading mbox "From " line that was dropped.
	FromLine string
	// Separator is true when the header ended with an empty line (which is
	// not part of Fields). It is false when the input ended inside the
	// header, or when a line that is not a header field started the body.
	Separator bool
	// BodyStart is that non-header line that started the body, if any.
	BodyStart []byte
}

// Get returns the value of the first field named name, or "".
func (h *Header) Get(name string) string {
	for _, f := range h.Fields {
		if f.Is(name) {
			return f.Value()
		}
	}
	return ""
}

// Has reports whether a field named name is present.
func (h *Header) Has(name string) bool {
	for _, f := range h.Fields {
		if f.Is(name) {
			return true
		}
	}
	return false
}

// Values returns the values of every field named name, in order.
func (h *Header) Values(name string) []string {
	var vs []string
	for _, f := range h.Fields {
		if f.Is(name) {
			vs = append(vs, f.Value())
		}
	}
	return vs
}

// Del removes every field named name and reports how many it removed.
func (h *Header) Del(name string) int {
	n := 0
	kept := h.Fields[:0]
	for _, f := range h.Fields {
		if f.Is(name) {
			n++
			continue
		}
		kept = append(kept, f)
	}
	h.Fields = kept
	return n
}

// Add appends a field. value must already be a valid, unfolded or properly
// folded field body without a final line end.
func (h *Header) Add(name, value string) {
	h.Fields = append(h.Fields, Field{Name: name, Raw: []byte(name + ": " + value + "\n")})
}

// fieldName returns the length of the field name at the start of line if
// line starts a header field ("name:" with printable US-ASCII name, an
// optional run of blanks before the colon, as RFC 5322's obsolete syntax
// allows), or -1.
func fieldName(line []byte) int {
	i := 0
	for i < len(line) && line[i] > ' ' && line[i] < 0x7f && line[i] != ':' {
		i++
	}
	if i == 0 {
		return -1
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	if j < len(line) && line[j] == ':' {
		return i
	}
	return -1
}

// ReadHeader reads the header section of a normalised (LF) message from br,
// keeping at most max bytes of it (0: MaxHeader), and leaves br at the
// first byte of the body. A line that is not a header field ends the header
// and becomes Header.BodyStart; a leading mbox "From " line is dropped into
// Header.FromLine.
func ReadHeader(br *bufio.Reader, max int) (*Header, error) {
	if max <= 0 {
		max = MaxHeader
	}
	h := &Header{}
	total := 0
	first := true
	for {
		line, err := readLine(br, MaxField)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 { // EOF
			return h, nil
		}
		total += len(line)
		if total > max {
			return nil, ErrHeaderTooLarge
		}
		if first {
			first = false
			if bytes.HasPrefix(line, []byte("From ")) {
				h.FromLine = string(bytes.TrimRight(line, "\n"))
				continue
			}
		}
		switch {
		case len(line) == 1 && line[0] == '\n':
			h.Separator = true
			return h, nil
		case (line[0] == ' ' || line[0] == '\t') && len(h.Fields) > 0:
			f := &h.Fields[len(h.Fields)-1]
			if len(f.Raw)+len(line) > MaxField {
				return nil, ErrHeaderTooLarge
			}
			f.Raw = append(f.Raw, line...)
		default:
			n := fieldName(line)
			if n < 0 {
				h.BodyStart = line
				return h, nil
			}
			h.Fields = append(h.Fields, Field{Name: string(line[:n]), Raw: line})
		}
		if err == io.EOF {
			return h, nil
		}
	}
}

// readLine returns the next line with its LF (or the last bytes before
// EOF, with io.EOF), refusing lines longer than max.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		c, err := br.ReadSlice('\n')
		if len(line)+len(c) > max {
			return nil, ErrHeaderTooLarge
		}
		line = append(line, c...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return line, err
	}
}

// WriteTo writes the header section: the fields in order, then the empty
// line that separates it from the body when the message had one or has a
// body (BodyStart, or more bytes to come when bodyFollows), then
// BodyStart. It adds no line end anywhere else, so a message that is only
// a header without a final newline is stored as it came.
func (h *Header) WriteTo(w io.Writer, bodyFollows bool) (int64, error) {
	var b bytes.Buffer
	for i, f := range h.Fields {
		b.Write(f.Raw)
		last := i == len(h.Fields)-1
		if !bytes.HasSuffix(f.Raw, []byte("\n")) && (!last || h.Separator || h.BodyStart != nil || bodyFollows) {
			b.WriteByte('\n')
		}
	}
	if h.Separator || (len(h.Fields) > 0 && (h.BodyStart != nil || bodyFollows)) {
		b.WriteByte('\n')
	}
	b.Write(h.BodyStart)
	n, err := w.Write(b.Bytes())
	if err != nil {
		return int64(n), fmt.Errorf("write header: %w", err)
	}
	return int64(n), nil
}
