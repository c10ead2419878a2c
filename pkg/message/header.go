package message

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
)

// Limits on the header section, which is the only part of a message held
// in memory. They are the one definition shared by sendmail (which
// refuses, exit 65, a message over them) and relayd's pickup (which reads
// every stored message with ReadHeader and the same limits): whatever
// sendmail stores, pickup can read.
const (
	// MaxField is the longest header field accepted, its folded
	// continuation lines and line ends included (so also the longest
	// header line): a To: of 10,000 addresses fits, folded or on one line.
	MaxField = 1 << 20
	// MaxHeader is the bound of the whole header section: every field,
	// the empty line that ends the section and the first line of the body
	// when a line that is not a field ends it.
	MaxHeader = 8 << 20
)

// ErrHeaderTooLarge is returned when a header field or the header section
// is over its bound.
var ErrHeaderTooLarge error = headerTooLarge{}

// headerTooLarge is ErrHeaderTooLarge: its text, with the limits in the
// configuration's size form, is built only when it is needed.
type headerTooLarge struct{}

func (headerTooLarge) Error() string {
	return "the message header is too large: a header field is over " + config.FormatSize(MaxField) +
		" or the header section over " + config.FormatSize(MaxHeader)
}

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

// NewField returns the field "name: value" with its LF. value must already
// be a valid, unfolded or properly folded field body without a final line
// end.
func NewField(name, value string) Field {
	return Field{Name: name, Raw: []byte(name + ": " + value + "\n")}
}

// Lookup returns the first field named name (nil: none) and how many
// fields have that name.
func (h *Header) Lookup(name string) (*Field, int) {
	var first *Field
	n := 0
	for i := range h.Fields {
		if h.Fields[i].Is(name) {
			if first == nil {
				first = &h.Fields[i]
			}
			n++
		}
	}
	return first, n
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
	h.Fields = append(h.Fields, NewField(name, value))
}

// ParseFieldName reports whether line starts a header field and returns
// the length of its name: "Name:" where the name is one or more printable
// US-ASCII characters other than ':', and blanks may come between the name
// and the colon (RFC 5322 4.5.3's obsolete syntax, which Postfix accepts
// too: "Subject : x" is a field named "Subject"). It returns -1 for a line
// that is not a field. It is the rule sendmail and pickup both use.
func ParseFieldName(line []byte) int {
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
// and becomes Header.BodyStart (a very long one only in part: its first
// MaxField bytes or so, the rest stays in br); a leading mbox "From " line
// is dropped into Header.FromLine. A field over MaxField, or a section over
// max, is ErrHeaderTooLarge.
func ReadHeader(br *bufio.Reader, max int) (*Header, error) {
	return readHeader(br, max, true)
}

// ReadStoredHeader is ReadHeader for a message as sendmail stored it
// (relayd's pickup): sendmail has already dropped a leading mbox "From "
// line, so one found here is the message's own first line and is not
// dropped again (it starts the body, as any line that is not a field).
// Both sides then see the same fields and the same body.
func ReadStoredHeader(br *bufio.Reader, max int) (*Header, error) {
	return readHeader(br, max, false)
}

func readHeader(br *bufio.Reader, max int, dropFromLine bool) (*Header, error) {
	if max <= 0 || max > MaxHeader {
		max = MaxHeader
	}
	h := &Header{Fields: make([]Field, 0, 4)}
	// The lines of a usual header share one allocation: each is read to
	// the end of arena when it fits there, and capped (a later append to
	// a field copies it); a line that does not fit gets its own. The
	// arena never grows, so a large header costs what it did.
	arena := make([]byte, 0, headerArena)
	total := 0
	first := true
	for {
		line, long, err := readLine(br, MaxField, arena[len(arena):])
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 { // EOF
			return h, nil
		}
		if len(arena)+len(line) <= cap(arena) {
			arena = arena[:len(arena)+len(line)]
		}
		line = line[:len(line):len(line)]
		total += len(line)
		if total > max {
			return nil, ErrHeaderTooLarge
		}
		cont := (line[0] == ' ' || line[0] == '\t') && len(h.Fields) > 0
		if long {
			// Over MaxField: a field (or the continuation of one) is too
			// large; any other line starts the body, and the rest of it
			// stays in br.
			if cont || ParseFieldName(line) >= 0 {
				return nil, ErrHeaderTooLarge
			}
			h.BodyStart = line
			return h, nil
		}
		if first {
			first = false
			if dropFromLine && bytes.HasPrefix(line, []byte("From ")) {
				h.FromLine = string(bytes.TrimRight(line, "\n"))
				continue
			}
		}
		switch {
		case len(line) == 1 && line[0] == '\n':
			h.Separator = true
			return h, nil
		case cont:
			f := &h.Fields[len(h.Fields)-1]
			if len(f.Raw)+len(line) > MaxField {
				return nil, ErrHeaderTooLarge
			}
			f.Raw = append(f.Raw, line...)
		default:
			n := ParseFieldName(line)
			if n < 0 {
				h.BodyStart = line
				return h, nil
			}
			h.Fields = append(h.Fields, Field{Name: fieldName(line[:n]), Raw: line})
		}
		if err == io.EOF {
			// The input ended inside the header, without a line end: give
			// the last field the LF it will have when stored, so that its
			// value reads the same here and when read back from the spool
			// (a field ending in a bare CR would otherwise gain a CRLF).
			if n := len(h.Fields); n > 0 && !bytes.HasSuffix(h.Fields[n-1].Raw, []byte("\n")) {
				h.Fields[n-1].Raw = append(h.Fields[n-1].Raw, '\n')
			}
			return h, nil
		}
	}
}

// readLine returns the next line with its LF (or the last bytes before
// EOF, with io.EOF). A line longer than max is returned in part, at least
// max bytes of it, with long set; the rest stays in br. The line is
// appended to line (empty, with room for it or not).
func readLine(br *bufio.Reader, max int, line []byte) (_ []byte, long bool, err error) {
	for {
		c, err := br.ReadSlice('\n')
		line = append(line, c...)
		if err == bufio.ErrBufferFull {
			if len(line) > max {
				return line, true, nil
			}
			continue
		}
		if len(line) > max {
			return line, true, err
		}
		return line, false, err
	}
}

// headerArena is the room readHeader reads a header's lines into at
// first: a script's usual header fits.
const headerArena = 256

// fieldName is name as a string: the constant for the names of nearly
// every message (no allocation), else a copy.
func fieldName(name []byte) string {
	switch string(name) {
	case "From":
		return "From"
	case "To":
		return "To"
	case "Cc":
		return "Cc"
	case "Subject":
		return "Subject"
	case "Date":
		return "Date"
	case "Message-ID":
		return "Message-ID"
	case "MIME-Version":
		return "MIME-Version"
	case "Content-Type":
		return "Content-Type"
	case "Content-Transfer-Encoding":
		return "Content-Transfer-Encoding"
	case "Reply-To":
		return "Reply-To"
	case "X-Mailer":
		return "X-Mailer"
	case "X-PHP-Originating-Script":
		return "X-PHP-Originating-Script"
	case "Received":
		return "Received"
	}
	return string(name)
}

// Check reports whether h, as WriteTo would write it, is within the limits
// ReadHeader reads: every field at most MaxField bytes and the section at
// most MaxHeader. sendmail checks the header it is about to store (Bcc:
// removed, From: added) so that pickup never finds it too large.
func (h *Header) Check(bodyFollows bool) error {
	for _, f := range h.Fields {
		if len(f.Raw)+1 > MaxField {
			return ErrHeaderTooLarge
		}
	}
	if len(h.Bytes(bodyFollows)) > MaxHeader {
		return ErrHeaderTooLarge
	}
	return nil
}

// Bytes returns the header section as WriteTo writes it: the fields in
// order, then the empty line that separates it from the body when the
// message had one or has a body (BodyStart, or more bytes to come when
// bodyFollows), then BodyStart. It adds no line end anywhere else, so a
// message that is only a header without a final newline is stored as it
// came.
func (h *Header) Bytes(bodyFollows bool) []byte {
	n := len(h.BodyStart) + 1
	for _, f := range h.Fields {
		n += len(f.Raw) + 1
	}
	b := make([]byte, 0, n)
	for i, f := range h.Fields {
		b = append(b, f.Raw...)
		last := i == len(h.Fields)-1
		if !bytes.HasSuffix(f.Raw, []byte("\n")) && (!last || h.Separator || h.BodyStart != nil || bodyFollows) {
			b = append(b, '\n')
		}
	}
	if h.Separator || (len(h.Fields) > 0 && (h.BodyStart != nil || bodyFollows)) {
		b = append(b, '\n')
	}
	return append(b, h.BodyStart...)
}
