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
	"errors"
	"io"
)

// ErrBareDataEnd is the error of an SMTP DATA reader (NewSMTPReader) that
// met a bare CR or LF next to a "." at the start of a line: "\n.\n",
// "\r\n.\n", "\n.\r\n", "\r.\r\n" and kin. Some servers take these for the
// end of DATA, so a client that sends them is trying to smuggle a second
// message past the first one's end (SMTP smuggling, CVE-2023-51764's
// class). Only <CR><LF>.<CR><LF> ends DATA (RFC 5321 4.1.1.4); the message
// is refused, and the session must not read on (what follows is the
// smuggled transaction).
var ErrBareDataEnd = errors.New("bare CR or LF next to a \".\" in the message data (only <CR><LF>.<CR><LF> ends it); message refused")

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
	bareLF    bool // SMTP: the last line ended in a bare LF
	lastByte  byte // SMTP: the last byte of the previous chunk
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
// 4.5.2): it ends at the line "." (ended by CRLF, after a line ended by
// CRLF), a leading "." of any other line is removed, line ends are
// normalised as for NewReader, and an input that ends before the "." line
// is io.ErrUnexpectedEOF. A bare CR or LF next to a "." at the start of a
// line is ErrBareDataEnd (see there): every SMTP server of the product
// reads DATA with this reader so that they all have the one rule. br is
// used directly (nothing past the "." line is consumed), so the SMTP
// session can go on reading commands from it.
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
			r.bareLF = false
			c = c[1:] // ReadSlice stops at the first LF: c is empty now
		} else {
			r.out = append(r.out, '\r')
		}
	}
	complete := len(c) > 0 && c[len(c)-1] == '\n'
	if r.smtp {
		if r.smuggling(c, complete) {
			r.done, r.err = true, ErrBareDataEnd
			return
		}
		if r.bol && string(c) == ".\r\n" {
			r.done, r.err = true, io.EOF
			return
		}
		if complete {
			r.bareLF = len(c) < 2 || c[len(c)-2] != '\r'
		}
		if len(c) > 0 {
			r.lastByte = c[len(c)-1]
		}
	} else if r.bol && r.dots && (complete && (string(c) == ".\n" || string(c) == ".\r\n") || err == io.EOF && string(c) == ".") {
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

// smuggling reports whether chunk c of SMTP DATA (with whether it ends a
// line) puts a bare CR or LF next to a "." that starts a line or follows a
// bare CR: the end-of-data variants other servers may honour.
func (r *Reader) smuggling(c []byte, complete bool) bool {
	if r.bol && len(c) > 0 && c[0] == '.' {
		// A line that starts with ".": its next byte may not be a bare CR
		// or LF, and a "." line may not follow a bare LF.
		switch rest := c[1:]; {
		case len(rest) == 0:
		case rest[0] == '\n':
			return true
		case rest[0] == '\r' && (len(rest) < 2 || rest[1] != '\n'):
			return true
		case string(rest) == "\r\n" && r.bareLF:
			return true
		}
	}
	// A bare CR next to a "." anywhere: "\r." and ".\r" (not ".\r\n").
	prev := r.lastByte
	if r.bol {
		prev = 0
	}
	for i, b := range c {
		if b == '\r' && (i+1 == len(c) && !complete || i+1 < len(c) && c[i+1] != '\n') {
			// A bare CR (one at the end of a chunk cut by the buffer is
			// judged with the next byte, which this check does not see;
			// a line 64 KiB long is not a smuggling vector worth a state).
			if i+1 < len(c) && c[i+1] == '.' || prev == '.' {
				return true
			}
		}
		prev = b
	}
	return false
}
