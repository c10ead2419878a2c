package pickup

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/mailshim/mailshim/pkg/message"
)

// The header section is scanned by message.ReadHeader, the same scanner
// (the same limits, message.MaxField and message.MaxHeader, and the same
// field-name rule, "Name : value" included) that sendmail used when it
// accepted the message: whatever sendmail stored, pickup can read.

// ErrHeaderTooLarge means the header section exceeds the limits of
// package message. sendmail refuses such messages, so one in the spool came
// from a sendmail with other limits or from a client of the submission
// socket; it is bounced, not quarantined.
var ErrHeaderTooLarge = message.ErrHeaderTooLarge

// field is one header field as it was stored, continuation lines included.
type field struct {
	name string // as written
	raw  []byte // "Name: value\n" with any folded lines
}

func (f *field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value is the unfolded value without the line end.
func (f *field) value() string {
	return message.Field{Name: f.name, Raw: f.raw}.Value()
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

// readHeader reads the header section of a stored message from br with
// message.ReadStoredHeader: the same rules as sendmail's scanner, except
// that a leading "From " line is not dropped again (sendmail dropped the
// mbox one already).
func readHeader(br *bufio.Reader) (*header, error) {
	mh, err := message.ReadStoredHeader(br, 0)
	if err != nil {
		if errors.Is(err, message.ErrHeaderTooLarge) {
			return nil, ErrHeaderTooLarge
		}
		return nil, err
	}
	h := &header{fields: make([]field, 0, len(mh.Fields)+4)}
	for _, f := range mh.Fields {
		h.fields = append(h.fields, field{name: f.Name, raw: f.Raw})
	}
	switch {
	case mh.Separator:
		h.sep = "\n"
	case string(mh.BodyStart) == "\r\n":
		// A CRLF message (the submission socket takes what it is given).
		h.sep = "\r\n"
	default:
		h.bodyStart = mh.BodyStart
	}
	if n := len(h.fields); n > 0 && !bytes.HasSuffix(h.fields[n-1].raw, []byte("\n")) {
		// The last field had no line end (EOF): give it one.
		h.fields[n-1].raw = append(h.fields[n-1].raw, '\n')
	}
	return h, nil
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
