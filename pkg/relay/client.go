package relay

// The SMTP client under a Session (RFC 5321), with command pipelining
// (RFC 2920). Commands are queued in one buffered writer and flushed once
// per group, so that a group (RSET, MAIL, every RCPT and DATA) leaves in
// one write — one TLS record — and the replies are read back in order from
// one buffered reader. Every write to the connection has its own deadline
// (the command timeout, or the data timeout while the message goes out),
// and so has every reply.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
)

// replyErr is an upstream reply other than the one the command expects.
type replyErr struct {
	Code int
	// Enhanced is the enhanced status code (RFC 3463), "5.1.1", or ""
	// when the reply has none.
	Enhanced string
	// Message is the reply's text without the codes, its lines joined
	// by "\n".
	Message string
}

func (e *replyErr) Error() string {
	s := strconv.Itoa(e.Code)
	if e.Enhanced != "" {
		s += " " + e.Enhanced
	}
	return s + " " + e.Message
}

// reply is one SMTP reply.
type reply struct {
	code int
	// text is the text of its lines (enhanced codes included), joined
	// by "\n".
	text string
}

// err returns the reply as a *replyErr: the enhanced status code, when
// the first line starts with one, is taken out of every line that
// repeats it (RFC 2034 puts it at the start of each line).
func (r reply) err() *replyErr {
	e := &replyErr{Code: r.code, Message: r.text}
	first, rest, _ := strings.Cut(r.text, " ")
	if isEnhanced(first) {
		e.Enhanced = first
		e.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	}
	return e
}

// isEnhanced reports whether s is an enhanced status code: class.subject.detail.
func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || (parts[0][0] != '2' && parts[0][0] != '4' && parts[0][0] != '5') {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// Limits on what the upstream may send us in one reply.
const (
	maxReplyLine  = 4096 // bytes in one line (RFC 5321 says 512)
	maxReplyLines = 100
)

// smtpConn is one SMTP connection to an upstream.
type smtpConn struct {
	nc net.Conn  // what SMTP goes over: the TCP connection, or TLS over it (traced when tr is set)
	tc *tls.Conn // the TLS connection, nil before TLS
	br *bufio.Reader
	bw *bufio.Writer
	tr *tracer
	// ext holds the EHLO keywords, upper-cased, with their parameters.
	ext map[string]string
	// wt bounds each write to the connection, rt each reply.
	wt, rt time.Duration
	// texts are the last one-line reply texts read, given again for the
	// same bytes (text): a session reads the same few replies ("2.1.0
	// Ok", "End data with...") for every message.
	texts     [8]string
	textsNext int
}

// text returns line as a string, one of c.texts when it is the same.
func (c *smtpConn) text(line []byte) string {
	for _, t := range c.texts {
		if t == string(line) {
			return t
		}
	}
	t := string(line)
	c.texts[c.textsNext] = t
	c.textsNext = (c.textsNext + 1) % len(c.texts)
	return t
}

// connIO is the smtpConn's connection as its reader and writer see it:
// each write gets its deadline here, as the writer flushes.
type connIO struct{ c *smtpConn }

func (w connIO) Read(b []byte) (int, error) { return w.c.nc.Read(b) }

func (w connIO) Write(b []byte) (int, error) {
	w.c.nc.SetWriteDeadline(time.Now().Add(w.c.wt))
	return w.c.nc.Write(b)
}

// writeBuf holds a whole group of commands, or a 2 KB message with its
// end of data, or a full TLS record of a larger one.
const writeBuf = 16 << 10

func newSMTPConn(nc net.Conn, tr *tracer, timeout time.Duration) *smtpConn {
	c := &smtpConn{tr: tr, wt: timeout, rt: timeout}
	c.setTransport(nc)
	c.br = bufio.NewReaderSize(connIO{c}, maxReplyLine)
	c.bw = bufio.NewWriterSize(connIO{c}, writeBuf)
	return c
}

// setTransport makes nc the connection SMTP goes over (after STARTTLS:
// the TLS connection).
func (c *smtpConn) setTransport(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		c.tc = tc
	}
	if c.tr != nil {
		nc = &traceConn{Conn: nc, tr: c.tr}
	}
	c.nc = nc
}

// traceConn copies what goes over the connection, in clear text, to the
// protocol trace (which redacts SASL and summarises message data as the
// client marks them: traceSASL, traceData).
type traceConn struct {
	net.Conn
	tr *tracer
}

func (t *traceConn) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	if n > 0 {
		t.tr.write(fromServer, b[:n])
	}
	return n, err
}

func (t *traceConn) Write(b []byte) (int, error) {
	n, err := t.Conn.Write(b)
	if n > 0 {
		t.tr.write(fromClient, b[:n])
	}
	return n, err
}

// cmd queues one command line for the next flush.
func (c *smtpConn) cmd(line string) {
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
}

// flush sends what was queued.
func (c *smtpConn) flush() error { return c.bw.Flush() }

// readReply reads one reply, within the reply timeout.
func (c *smtpConn) readReply() (reply, error) {
	c.nc.SetReadDeadline(time.Now().Add(c.rt))
	var r reply
	var text []byte
	for n := 0; ; n++ {
		line, err := c.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return r, fmt.Errorf("reply line longer than %d bytes", maxReplyLine)
		}
		if err != nil {
			return r, err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
		code := replyCode(line)
		switch {
		case code == 0:
			return r, fmt.Errorf("malformed reply line %q", line)
		case n == 0:
			r.code = code
		case code != r.code:
			return r, fmt.Errorf("reply line %q within a %d reply", line, r.code)
		case n >= maxReplyLines:
			return r, fmt.Errorf("reply of more than %d lines", maxReplyLines)
		}
		last := len(line) == 3 || line[3] == ' '
		if len(line) > 4 {
			line = line[4:]
		} else {
			line = nil
		}
		if n == 0 && last {
			r.text = c.text(line)
			return r, nil
		}
		if n > 0 {
			text = append(text, '\n')
		}
		text = append(text, line...)
		if last {
			r.text = string(text)
			return r, nil
		}
	}
}

// replyCode is the code of a reply line (200 to 599 followed by nothing,
// a space or a dash), 0 if it is not one.
func replyCode(l []byte) int {
	if len(l) < 3 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
		return 0
	}
	for _, ch := range l[:3] {
		if ch < '0' || ch > '9' {
			return 0
		}
	}
	code := int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
	if code < 200 || code > 599 {
		return 0
	}
	return code
}

// do sends one command and reads its reply, which must have the code
// want (3 digits) or be of its class (one digit), or be any reply (0);
// another reply is returned as a *replyErr.
func (c *smtpConn) do(line string, want int) (reply, error) {
	c.cmd(line)
	if err := c.flush(); err != nil {
		return reply{}, err
	}
	r, err := c.readReply()
	if err != nil {
		return r, err
	}
	if want > 0 && want < 10 && r.code/100 != want || want >= 100 && r.code != want {
		return r, r.err()
	}
	return r, nil
}

// greeting reads the server's greeting.
func (c *smtpConn) greeting() error {
	r, err := c.readReply()
	if err == nil && r.code != 220 {
		err = r.err()
	}
	return err
}

// hello says EHLO (HELO to a server that does not know EHLO) and records
// the extensions offered.
func (c *smtpConn) hello(name string) error {
	c.ext = nil
	r, err := c.do("EHLO "+name, 2)
	if err != nil {
		var re *replyErr
		if errors.As(err, &re) && (re.Code == 500 || re.Code == 502) {
			_, err = c.do("HELO "+name, 2)
		}
		return err
	}
	c.ext = map[string]string{}
	lines := strings.Split(r.text, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// has reports whether the server offers ext (upper case).
func (c *smtpConn) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// SupportsAuth reports whether the server offers the SASL mechanism mech.
func (c *smtpConn) SupportsAuth(mech string) bool {
	for _, m := range strings.Fields(c.ext["AUTH"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// maxSize is the server's SIZE limit; ok is false when it gives none.
func (c *smtpConn) maxSize() (int64, bool) {
	v := c.ext["SIZE"]
	if v == "" {
		// SIZE without a limit (or not offered): nothing to parse.
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// tlsState returns the state of the TLS connection, ok false without TLS.
func (c *smtpConn) tlsState() (tls.ConnectionState, bool) {
	if c.tc == nil {
		return tls.ConnectionState{}, false
	}
	return c.tc.ConnectionState(), true
}

// startTLS sends STARTTLS and, on 220, returns the TLS client of raw
// (the handshake is the caller's). Nothing may follow the 220 in the
// same read: bytes sent before the handshake would be taken as replies
// after it (a command injection).
func (c *smtpConn) startTLS(raw net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	if _, err := c.do("STARTTLS", 220); err != nil {
		return nil, err
	}
	if c.br.Buffered() > 0 {
		return nil, errors.New("the upstream sent data after its 220 reply to STARTTLS, before the TLS handshake")
	}
	return tls.Client(raw, cfg), nil
}

// maxSASLRounds bounds the challenges of one SASL exchange: the
// mechanisms relayd uses need at most two (LOGIN, an OAuth error
// challenge), and an upstream that goes on is cut short, not answered
// with the password again and again.
const maxSASLRounds = 8

// auth runs the SASL exchange with a (RFC 4954). An error of the SASL
// client itself (an OAUTHBEARER error challenge) is returned as it is,
// after the exchange is cancelled with "*".
func (c *smtpConn) auth(a sasl.Client) error {
	mech, resp, err := a.Start()
	if err != nil {
		return err
	}
	c.traceSASL(true)
	defer c.traceSASL(false)
	line := "AUTH " + mech
	if resp != nil {
		line += " " + b64(resp)
	}
	for round := 0; ; round++ {
		r, err := c.do(line, 0)
		if err != nil {
			return err
		}
		switch r.code {
		case 235:
			return nil
		case 334:
			var chal []byte
			if round >= maxSASLRounds {
				err = fmt.Errorf("the upstream sent more than %d SASL challenges", maxSASLRounds)
			} else {
				chal, err = base64.StdEncoding.DecodeString(r.text)
			}
			if err == nil {
				resp, err = a.Next(chal)
			}
			if err != nil {
				c.do("*", 0) // cancel; the server answers 501
				return err
			}
			line = base64.StdEncoding.EncodeToString(resp)
		default:
			return r.err()
		}
	}
}

// traceSASL marks the start and the end of a SASL exchange for the
// protocol trace, which redacts the client's lines in between.
func (c *smtpConn) traceSASL(on bool) {
	if c.tr != nil {
		c.tr.sasl(on)
	}
}

// traceData marks the start of message data (up to its end of data) for
// the protocol trace, which summarises it.
func (c *smtpConn) traceData() {
	if c.tr != nil {
		c.tr.startData()
	}
}

// b64 is a SASL initial response: base64, or "=" for an empty one.
func b64(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}

// xtext encodes s as RFC 3461 xtext (ENVID).
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if ch := s[i]; ch < '!' || ch > '~' || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
		} else {
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// dotWriter writes message data with dot-stuffing (RFC 5321 4.5.2): a
// line that starts with "." gets another. The data it is given has CRLF
// line ends (the wire transformer's output).
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the start of a line
}

// writeError is a failure to write to the connection (as opposed to one
// reading the stored message).
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (d *dotWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if d.bol && b[0] == '.' {
			d.w.WriteByte('.')
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			d.w.Write(b)
			d.bol = false
			break
		}
		d.w.Write(b[:i+1])
		d.bol = true
		b = b[i+1:]
	}
	// The writer's error is sticky: an empty write returns it.
	if _, err := d.w.Write(nil); err != nil {
		return 0, &writeError{err}
	}
	return n, nil
}

// writeData writes the message wr gives (the wire transformer's output),
// dot-stuffed, and the end of data to w, and flushes w: an error writing
// to w is a *writeError, one reading wr is returned as it is. wr is
// closed.
func writeData(w *bufio.Writer, wr io.ReadCloser) error {
	dw := &dotWriter{w: w, bol: true}
	_, err := io.Copy(dw, wr)
	wr.Close()
	if err != nil {
		return err
	}
	dw.end()
	if err := w.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

// rendered is a message ready for the wire, held in memory.
type rendered struct {
	b bytes.Buffer
	w *bufio.Writer // into b
}

// renderedMax bounds the buffer a rendered keeps in its pool.
const renderedMax = 64 << 10

var renderedPool = sync.Pool{New: func() any {
	r := &rendered{}
	r.w = bufio.NewWriterSize(&r.b, 4<<10)
	return r
}}

// render returns the message of src (scanned as p) as writeData would
// write it, or nil when it is not held in memory or cannot be read (the
// caller then streams it, and meets the error there).
func render(src *source, p *plan, mode WireMode) *rendered {
	if src.held == nil {
		return nil
	}
	if p.clean {
		return renderPlain(*src.held)
	}
	wr, err := openWire(src, p, mode)
	if err != nil {
		return nil
	}
	r := renderedPool.Get().(*rendered)
	r.b.Reset()
	r.w.Reset(&r.b)
	if err := writeData(r.w, wr); err != nil {
		r.release()
		return nil
	}
	return r
}

// renderPlain is render of a plain message (plan.clean): its lines with
// CRLF ends, dot-stuffed, and the end of data, as writeData writes what
// the walker makes of it, without walking it.
func renderPlain(msg []byte) *rendered {
	r := renderedPool.Get().(*rendered)
	r.b.Reset()
	r.b.Grow(len(msg) + len(msg)/16 + 8)
	for len(msg) > 0 {
		line := msg
		i := bytes.IndexByte(msg, '\n')
		if i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(line) > 0 && line[0] == '.' {
			r.b.WriteByte('.')
		}
		r.b.Write(line)
		r.b.WriteString("\r\n")
	}
	r.b.WriteString(".\r\n")
	return r
}

// release returns r to its pool (nil: nothing).
func (r *rendered) release() {
	if r != nil && r.b.Cap() <= renderedMax {
		renderedPool.Put(r)
	}
}

// end writes the end of data: a line end if the data did not end with
// one, and ".".
func (d *dotWriter) end() {
	if !d.bol {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
}
