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
//
// Its Go API is not stable.
package message

import (
	"bufio"
	"bytes"
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
// returned).
//
// A Reader of NewReader reads its input into one buffer and normalises it
// there, in place (the output is never longer than the input): the bytes
// are copied once, from the input into the buffer, and WriteTo hands the
// buffer straight to the writer, so io.Copy into a spool file copies
// nothing more. The buffer is 64 KB (a pipe's capacity, what one read
// returns), allocated once: sendmail, its user, runs for one message, and
// the pages of a fresh allocation that a short message does not reach are
// never touched. Past the first 2 MB of a message it becomes 1 MB, and
// WriteTo gathers the output of several reads before it writes: each
// write into a spool file costs the file system a fixed amount (ext4
// updates the inode's size under a journal handle), and 1 MB writes save
// a 100 MB message 1,500 of them, while a 1 MB message does not pay the
// page faults of a 1 MB buffer.
type Reader struct {
	dots bool
	bol  bool // at the beginning of a line
	done bool
	err  error

	// NewReader: buf[r:w] is normalised output not yet returned;
	// buf[h:e] is input held back until more is read (a final CR, or "."
	// or ".\r" at the start of a line: the next bytes decide).
	src        io.Reader
	buf        []byte
	r, w, h, e int
	in         int64 // bytes read from src

	// NewSMTPReader: line by line from the session's reader.
	br        *bufio.Reader
	smtp      bool // SMTP DATA: dot-unstuffing, and EOF before "." is an error
	pendingCR bool // a chunk ended in '\r' and the next byte decides
	bareLF    bool // SMTP: the last line ended in a bare LF
	lastByte  byte // SMTP: the last byte of the previous chunk
	out       []byte
	off       int
}

// A NewReader's buffer: stdinRead (one read: a pipe's capacity), then
// stdinBuf once growAfter bytes have been read.
const (
	stdinRead = 64 << 10
	stdinBuf  = 1 << 20
	growAfter = 2 << 20
)

// NewReader returns a Reader of r. With ignoreDots false (sendmail without
// -i/-oi), a line of a single "." ends the message.
func NewReader(r io.Reader, ignoreDots bool) *Reader {
	return &Reader{src: r, dots: !ignoreDots, bol: true}
}

// Reset makes r a NewReader(src, ignoreDots) that keeps r's buffer when
// it is the first size (a server reading one message after another
// allocates it once, not per message); a buffer grown for a large message
// is dropped.
func (r *Reader) Reset(src io.Reader, ignoreDots bool) {
	buf := r.buf
	if len(buf) != stdinRead || r.br != nil {
		buf = nil
	}
	*r = Reader{src: src, dots: !ignoreDots, bol: true, buf: buf}
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
	return &Reader{br: br, dots: true, smtp: true, bol: true}
}

// Read implements io.Reader. It returns io.EOF at the end of the input or
// after the "." line, and any other error of the underlying reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.br != nil {
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
	for r.r == r.w {
		if r.done {
			return 0, r.err
		}
		r.fillStream()
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

// WriteTo implements io.WriterTo: io.Copy from a Reader writes the
// normalised bytes from the Reader's own buffer.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		var chunk []byte
		if r.br != nil {
			for r.off == len(r.out) && !r.done {
				r.fill()
			}
			chunk = r.out[r.off:]
			r.off = len(r.out)
		} else {
			// Read on while the output is short and a read fits.
			for !r.done && (r.r == r.w || r.w-r.r < len(r.buf)/2 && len(r.buf)-r.e >= stdinRead) {
				r.fillStream()
			}
			chunk = r.buf[r.r:r.w]
			r.r = r.w
		}
		if len(chunk) == 0 {
			if r.err == io.EOF {
				return total, nil
			}
			return total, r.err
		}
		n, err := w.Write(chunk)
		total += int64(n)
		if err != nil {
			return total, err
		}
		if n < len(chunk) {
			return total, io.ErrShortWrite
		}
	}
}

// fillStream reads once from src and normalises what it got.
func (r *Reader) fillStream() {
	switch {
	case r.buf == nil:
		r.buf = make([]byte, stdinRead)
	case r.r == r.w && r.in >= growAfter && len(r.buf) < stdinBuf:
		held := r.buf[r.h:r.e]
		r.buf = make([]byte, stdinBuf)
		r.r, r.w, r.h, r.e = 0, 0, 0, copy(r.buf, held)
	}
	if r.r == r.w || len(r.buf)-r.e < stdinRead {
		// Move the output not yet returned (WriteTo leaves none) and the
		// held-back input to the start of the buffer.
		n := copy(r.buf, r.buf[r.r:r.w])
		held := copy(r.buf[n:], r.buf[r.h:r.e])
		r.r, r.w, r.h, r.e = 0, n, n, n+held
	}
	n, err := r.src.Read(r.buf[r.e:])
	r.e += n
	r.in += int64(n)
	r.normalise(err != nil)
	if err != nil && !r.done {
		r.done, r.err = true, err
	}
}

// normalise turns the input buf[h:e] into output, in place, from w on.
// At the end of the input (eof) nothing is held back.
func (r *Reader) normalise(eof bool) {
	b := r.buf
	i, o, e := r.h, r.w, r.e
	// Fast path: no CR, and no line that could be a lone ".".
	if seg := b[i:e]; bytes.IndexByte(seg, '\r') < 0 && (!r.dots || !(r.bol && len(seg) > 0 && seg[0] == '.') && bytes.Index(seg, []byte("\n.")) < 0) {
		o += move(b, o, seg)
		if len(seg) > 0 {
			r.bol = seg[len(seg)-1] == '\n'
		}
		r.w, r.h = o, e
		return
	}
	for i < e {
		if r.bol && r.dots && b[i] == '.' {
			rest := b[i:e]
			if string(rest) == "." && eof || bytes.HasPrefix(rest, []byte(".\n")) || bytes.HasPrefix(rest, []byte(".\r\n")) {
				r.done, r.err = true, io.EOF
				r.w, r.h, r.e = o, e, e
				return
			}
			if !eof && (string(rest) == "." || string(rest) == ".\r") {
				break // the next bytes decide
			}
		}
		j := bytes.IndexByte(b[i:e], '\n')
		if j < 0 { // the rest of the input is part of a line
			end := e
			if !eof && b[end-1] == '\r' {
				end-- // a CR, perhaps of a CRLF: held back
			}
			o += move(b, o, b[i:end])
			if end > i {
				r.bol = false
			}
			i = end
			break
		}
		line := b[i : i+j+1]
		if j >= 1 && line[j-1] == '\r' {
			o += move(b, o, line[:j-1])
			b[o] = '\n'
			o++
		} else {
			o += move(b, o, line)
		}
		r.bol = true
		i += j + 1
	}
	r.w, r.h = o, i
}

func (r *Reader) fill() {
	r.out, r.off = r.out[:0], 0
	for len(r.out) < 32<<10 && !r.done {
		c, err := r.br.ReadSlice('\n')
		r.chunk(c, err)
	}
}

// chunk processes one piece of SMTP DATA returned by ReadSlice: a complete
// line, a piece of a long line (bufio.ErrBufferFull), or the last bytes
// before an error.
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
	// A bare CR at the end of a chunk cut by the buffer is judged without
	// the next byte, which this check does not see (a line 64 KiB long is
	// not a smuggling vector worth a state).
	for i := 0; ; {
		j := bytes.IndexByte(c[i:], '\r')
		if j < 0 {
			break
		}
		j += i
		if j+1 == len(c) && !complete || j+1 < len(c) && c[j+1] != '\n' {
			before := r.lastByte
			if r.bol {
				before = 0
			}
			if j > 0 {
				before = c[j-1]
			}
			if before == '.' || j+1 < len(c) && c[j+1] == '.' {
				return true
			}
		}
		i = j + 1
	}
	return false
}

// move copies src, a part of b, to b[o:] and returns its length. Until the
// first CRLF the output is where the input is, and copy does not skip a
// copy onto itself: it would read and write every byte once more.
func move(b []byte, o int, src []byte) int {
	if len(src) > 0 && &b[o] == &src[0] {
		return len(src)
	}
	return copy(b[o:], src)
}
