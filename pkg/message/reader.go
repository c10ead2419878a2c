// Package message is the header work sendmail does on a message in flight:
// line-end normalisation, the "." terminator, header scanning with bounds,
// -t recipients, Bcc removal, a From: for messages that have none, and
// address validation.
//
// It also holds the rules sendmail and relayd share, so that what one side
// accepts the other can read: the header limits (MaxField, MaxHeader) and
// the field-name syntax (ParseFieldName) of ReadHeader, which pickup reads
// stored messages with, and ValidateEnvelope, the one check of an
// envelope for every door into the spool (sendmail, the submission
// socket, -bs).
//
// Everything here streams: only the header section is buffered (bounded by
// the caller); the body goes from the input to the spool in fixed-size
// chunks, so a 100 MB message costs no more memory than a 2 KB one.
package message

import (
	"bufio"
	"io"
)

// Reader reads a message as a caller hands it to sendmail and returns it
// as it is stored: CRLF line ends become LF (a bare CR stays a bare CR),
// and, unless ignoreDots was set, a line consisting of a single "." ends
// the message (the line itself is not part of it, and nothing after it is
// read).
type Reader struct {
	br        *bufio.Reader
	dots      bool
	smtp      bool // SMTP DATA: dot-unstuffing, and EOF before "." is an error
	bol       bool // at the beginning of a line
	pendingCR bool // a chunk ended in '\r' and the next byte decides
	out       []byte
	off       int
	done      bool
	err       error
}

// NewReader returns a Reader of r. With ignoreDots false (sendmail without
// -i/-oi), a line of a single "." ends the message.
func NewReader(r io.Reader, ignoreDots bool) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), dots: !ignoreDots, bol: true, out: make([]byte, 0, 128<<10)}
}

// NewSMTPReader returns a Reader of an SMTP DATA section (RFC 5321
// 4.5.2): it ends at the line ".", a leading "." of any other line is
// removed, line ends are normalised as for NewReader, and an input that
// ends before the "." line is io.ErrUnexpectedEOF. br is used directly
// (nothing past the "." line is consumed), so the SMTP session can go on
// reading commands from it.
func NewSMTPReader(br *bufio.Reader) *Reader {
	return &Reader{br: br, dots: true, smtp: true, bol: true, out: make([]byte, 0, 128<<10)}
}

// Read implements io.Reader. It returns io.EOF at the end of the input or
// after the "." line, and any other error of the underlying reader.
func (r *Reader) Read(p []byte) (int, error) {
	for r.off == len(r.out) {
		if r.done {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.out[r.off:])
	r.off += n
	return n, nil
}

func (r *Reader) fill() {
	r.out, r.off = r.out[:0], 0
	for len(r.out) < 32<<10 && !r.done {
		c, err := r.br.ReadSlice('\n')
		r.chunk(c, err)
	}
}

// chunk processes one piece returned by ReadSlice: a complete line, a
// piece of a long line (bufio.ErrBufferFull), or the last bytes before an
// error.
func (r *Reader) chunk(c []byte, err error) {
	if r.pendingCR {
		r.pendingCR = false
		if len(c) > 0 && c[0] == '\n' {
			r.out = append(r.out, '\n')
			r.bol = true
			c = c[1:] // ReadSlice stops at the first LF: c is empty now
		} else {
			r.out = append(r.out, '\r')
		}
	}
	complete := len(c) > 0 && c[len(c)-1] == '\n'
	if r.bol && r.dots && (complete && (string(c) == ".\n" || string(c) == ".\r\n") || err == io.EOF && string(c) == ".") {
		r.done, r.err = true, io.EOF
		return
	}
	if r.smtp && r.bol && len(c) > 0 && c[0] == '.' {
		c = c[1:]
	}
	switch {
	case complete:
		if len(c) >= 2 && c[len(c)-2] == '\r' {
			r.out = append(r.out, c[:len(c)-2]...)
			r.out = append(r.out, '\n')
		} else {
			r.out = append(r.out, c...)
		}
		r.bol = true
	case len(c) > 0:
		if c[len(c)-1] == '\r' && err == bufio.ErrBufferFull {
			r.out = append(r.out, c[:len(c)-1]...)
			r.pendingCR = true
		} else {
			r.out = append(r.out, c...)
		}
		r.bol = false
	}
	if err != nil && err != bufio.ErrBufferFull {
		if r.pendingCR {
			r.out = append(r.out, '\r')
			r.pendingCR = false
		}
		if r.smtp && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.done, r.err = true, err
	}
}
