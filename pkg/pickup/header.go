package pickup

import (
	"bufio"
	"bytes"
	"io"
	"sync"

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

// header is a stored message's header section (package message's model)
// and how it ended.
type header struct {
	message.Header
	// sep is the blank line that ended the section ("\n" or "\r\n"), or ""
	// when the section ended otherwise (EOF, or a line that is not a field,
	// kept in BodyStart).
	sep string
}

// readHeader reads the header section of a stored message from br with
// message.ReadStoredHeader: the same rules as sendmail's scanner, except
// that a leading "From " line is not dropped again (sendmail dropped the
// mbox one already).
func readHeader(br *bufio.Reader) (*header, error) {
	mh, err := message.ReadStoredHeader(br, 0)
	if err != nil {
		return nil, err // ErrHeaderTooLarge is package message's error
	}
	h := &header{Header: *mh}
	switch {
	case mh.Separator:
		h.sep = "\n"
	case string(mh.BodyStart) == "\r\n":
		// A CRLF message (the submission socket takes what it is given).
		h.sep = "\r\n"
		h.BodyStart = nil
	}
	if n := len(h.Fields); n > 0 && !bytes.HasSuffix(h.Fields[n-1].Raw, []byte("\n")) {
		// The last field had no line end (EOF): give it one.
		h.Fields[n-1].Raw = append(h.Fields[n-1].Raw, '\n')
	}
	return h, nil
}

// headerWriters recycles the buffers the header section is written
// through (a 4 KiB allocation per picked-up message otherwise).
var headerWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// write writes the fields pre, then the header section with the blank
// line (LF) that ends it, then BodyStart.
func (h *header) write(w io.Writer, pre []message.Field) error {
	bw := headerWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		headerWriters.Put(bw)
	}()
	for _, f := range pre {
		bw.Write(f.Raw)
	}
	for _, f := range h.Fields {
		bw.Write(f.Raw)
	}
	if h.sep != "" {
		bw.WriteString(h.sep)
	} else {
		bw.WriteString("\n")
	}
	bw.Write(h.BodyStart)
	return bw.Flush()
}
