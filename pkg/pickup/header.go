package pickup

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// Header limits: the header section is the only part of a message pickup
// holds in memory.
const (
	maxHeaderBytes = 1 << 20
	maxLineBytes   = 64 << 10
)

// ErrHeaderTooLarge means the header section exceeds the limits above.
var ErrHeaderTooLarge = errors.New("header section larger than 1 MiB, or a header line longer than 64 KiB")

// field is one header field as it was stored, continuation lines included.
type field struct {
	name string // as written
	raw  []byte // "Name: value\n" with any folded lines
}

func (f *field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value is the unfolded value without the line end.
func (f *field) value() string {
	v := f.raw[len(f.name)+1:]
	v = bytes.TrimRight(v, "\r\n")
	s := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
	return strings.TrimLeft(s, " \t")
}

// header is a parsed header section.
type header struct {
	fields []field
	// sep is the blank line that ended the section ("\n" or "\r\n"), or ""
	// when the section ended otherwise (EOF, or a line that is not a field,
	// kept in bodyStart).
	sep       string
	bodyStart []byte
}

func (h *header) has(name string) bool {
	for i := range h.fields {
		if h.fields[i].is(name) {
			return true
		}
	}
	return false
}

func (h *header) get(name string) (*field, int) {
	n := 0
	var first *field
	for i := range h.fields {
		if h.fields[i].is(name) {
			if first == nil {
				first = &h.fields[i]
			}
			n++
		}
	}
	return first, n
}

func (h *header) remove(name string) {
	out := h.fields[:0]
	for _, f := range h.fields {
		if !f.is(name) {
			out = append(out, f)
		}
	}
	h.fields = out
}

// fieldName returns the name of a header line "Name: ...", or "".
func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return ""
	}
	for _, c := range line[:i] {
		if c <= ' ' || c >= 0x7f {
			return ""
		}
	}
	return string(line[:i])
}

// readHeader reads the header section from br, bounded by the limits.
func readHeader(br *bufio.Reader) (*header, error) {
	h := &header{}
	total := 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A very long line: a header field this long is refused; a
			// body line (no field name) simply starts the body.
			if fieldName(line) != "" || (len(line) > 0 && (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0) {
				return nil, ErrHeaderTooLarge
			}
			h.bodyStart = append([]byte(nil), line...)
			return h, nil
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 && err == io.EOF {
			return h, nil
		}
		total += len(line)
		if total > maxHeaderBytes {
			return nil, ErrHeaderTooLarge
		}
		switch {
		case string(line) == "\n" || string(line) == "\r\n":
			h.sep = string(line)
			return h, nil
		case (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0:
			f := &h.fields[len(h.fields)-1]
			f.raw = append(f.raw, line...)
		default:
			name := fieldName(line)
			if name == "" {
				h.bodyStart = append([]byte(nil), line...)
				return h, nil
			}
			h.fields = append(h.fields, field{name: name, raw: append([]byte(nil), line...)})
		}
		if err == io.EOF {
			// The last field had no line end: give it one.
			f := &h.fields[len(h.fields)-1]
			if !bytes.HasSuffix(f.raw, []byte("\n")) {
				f.raw = append(f.raw, '\n')
			}
			return h, nil
		}
	}
}

// write writes the header section with the blank line (LF) that ends it,
// then bodyStart.
func (h *header) write(w io.Writer, pre []field) error {
	bw := bufio.NewWriter(w)
	for _, f := range pre {
		bw.Write(f.raw)
	}
	for _, f := range h.fields {
		bw.Write(f.raw)
	}
	if h.sep != "" {
		bw.WriteString(h.sep)
	} else {
		bw.WriteString("\n")
	}
	bw.Write(h.bodyStart)
	return bw.Flush()
}

func newField(name, value string) field {
	return field{name: name, raw: []byte(name + ": " + value + "\n")}
}
