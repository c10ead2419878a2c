// Package submit is how sendmail hands a message over:
//
//   - Local.Store (local.go): sendmail's store pipeline — complete the
//     header (a From: when missing), write the maildrop file, or fall back
//     to the submission socket when not setgid.
//   - Send and Serve (this file): the submission socket, the door into the
//     spool for a sendmail that is not running setgid (systemd
//     NoNewPrivileges=, a container's no-new-privileges, a package that
//     lost the bit). relayd listens on a world-connectable unix socket,
//     identifies the caller by SO_PEERCRED — the same kernel guarantee as
//     the owner of a maildrop file — and stores the message the same way.
//   - SMTP (smtp.go): the "sendmail -bs" dialogue, a minimal SMTP server
//     on stdin/stdout.
//
// Its Go API is not stable.
//
// # Protocol
//
// One message per connection. The client sends
//
//	MAILSHIM-SUBMIT 1\n
//	<a spool file header (spool.EncodeHeader), size 0, ending in an empty line>
//	<chunks: decimal length, LF, that many bytes>...
//	0\n
//
// and reads one line: "ok <queue id>\n" once the server has made the
// message durable (fsync'd, the same promise as spool.Drop.Commit), or
// "error <sysexits code> <text>\n". A connection that ends before the
// final "0" chunk is an aborted message and is never stored.
//
// The server trusts nothing of the header for identity: it overwrites
// Origin.UID, GID and User with the peer's credentials and sets
// Origin.Via = "socket"; it assigns a fresh queue ID and arrival time.
package submit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/sysexits"
	"golang.org/x/sys/unix"
)

const (
	greeting = "MAILSHIM-SUBMIT 1\n"
	// MaxChunk is the largest body chunk a server accepts.
	MaxChunk = 1 << 20
	// maxHeader bounds the spool header a client may send.
	maxHeader = 16 << 20
	// drainLimit bounds what the server reads and discards after refusing
	// a message, so that the client gets to read the answer.
	drainLimit = 64 << 20
	// IdleTimeout is how long the server waits for the next bytes.
	IdleTimeout = 5 * time.Minute
)

// Error is a refusal with the sysexits code the client should exit with.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Send submits one message over the unix socket at sockPath: m's envelope
// and advisory origin fields, then body (the message bytes as they are to
// be stored), streamed. It returns the queue ID once the server has stored
// the message durably. A refusal is an *Error carrying the sysexits code;
// any other error means the socket could not be used (nothing was stored).
func Send(ctx context.Context, sockPath string, m *spool.Meta, body io.Reader) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sockPath)
	if err != nil {
		return "", err
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	hm := *m
	hm.Size, hm.CRC = 0, 0
	if !spool.ValidID(hm.ID) {
		hm.ID = spool.NewID(time.Now())
	}
	hdr, _ := spool.EncodeHeader(&hm)
	w := bufio.NewWriterSize(conn, 64<<10)
	w.WriteString(greeting)
	w.Write(hdr)
	cw := &chunkWriter{w: w}
	if _, err := io.CopyBuffer(cw, body, make([]byte, 64<<10)); err != nil {
		if cw.err != nil {
			return answerAfterWriteError(conn, cw.err)
		}
		return "", &readError{err}
	}
	w.WriteString("0\n")
	if err := w.Flush(); err != nil {
		return answerAfterWriteError(conn, err)
	}
	conn.CloseWrite()
	line, err := bufio.NewReaderSize(conn, 1024).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("submit: no answer from the server: %w", err)
	}
	return parseAnswer(line)
}

// answerAfterWriteError reads the server's answer after a failed write: a
// server that refused the message early (too large) has answered and
// stopped reading, and its answer says why.
func answerAfterWriteError(conn *net.UnixConn, werr error) (string, error) {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReaderSize(conn, 1024).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("submit: write: %w", werr)
	}
	id, err := parseAnswer(line)
	if err == nil {
		// An "ok" before the end of the message cannot be.
		return "", fmt.Errorf("submit: server answered %q before the end of the message", truncate(line, 100))
	}
	return id, err
}

func parseAnswer(line string) (string, error) {
	line = strings.TrimSuffix(line, "\n")
	if id, ok := strings.CutPrefix(line, "ok "); ok && spool.ValidID(id) {
		return id, nil
	}
	if rest, ok := strings.CutPrefix(line, "error "); ok {
		codeStr, msg, _ := strings.Cut(rest, " ")
		code, err := strconv.Atoi(codeStr)
		if err != nil || code < 64 || code > 78 || code == sysexits.TempFail {
			code = sysexits.IOErr
		}
		return "", &Error{Code: code, Msg: msg}
	}
	return "", fmt.Errorf("submit: bad answer from the server: %q", truncate(line, 100))
}

// readError is a failure to read the message body (the caller's input),
// as opposed to a failure of the socket.
type readError struct{ err error }

func (e *readError) Error() string { return "read message: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// IsReadError reports whether err from Send was a failure to read body.
func IsReadError(err error) bool {
	var r *readError
	return errors.As(err, &r)
}

type chunkWriter struct {
	w   *bufio.Writer
	err error
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		q := p[:min(len(p), 64<<10)] // well under MaxChunk
		c.w.WriteString(strconv.Itoa(len(q)))
		c.w.WriteByte('\n')
		n, err := c.w.Write(q)
		written += n
		if err != nil {
			c.err = err
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Store stores one message: it reads body to its end (an error from body
// means the message is incomplete and must not be stored), makes it
// durable, and returns its queue ID. Returning an *Error chooses the code
// the client exits with; spool.ErrTooLarge maps to EX_DATAERR, a full
// spool (spool.IsFull) to EX_CANTCREAT, anything else to EX_IOERR.
type Store func(m *spool.Meta, body io.Reader) (id string, err error)

// Serve handles one connection on the submission socket: it reads the
// message, takes the peer's identity from the kernel (SO_PEERCRED),
// overwriting whatever the client claimed, calls store, and answers. It
// returns the error to log, if any (the client has been told).
func Serve(conn *net.UnixConn, store func(m *spool.Meta, body io.Reader) (id string, err error)) error {
	defer conn.Close()
	cred, err := peerCred(conn)
	if err != nil {
		return fmt.Errorf("submit: SO_PEERCRED: %w", err)
	}
	dl := &deadlineReader{c: conn}
	br := bufio.NewReaderSize(dl, 64<<10)
	answer := func(code int, msg string) {
		conn.SetWriteDeadline(time.Now().Add(IdleTimeout))
		if code == 0 {
			fmt.Fprintf(conn, "ok %s\n", msg)
			return
		}
		msg = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, msg)
		fmt.Fprintf(conn, "error %d %s\n", code, truncate(msg, 400))
	}
	g, err := br.ReadString('\n')
	if err != nil || g != greeting {
		answer(sysexits.Protocol, "not a mailshim submission")
		return fmt.Errorf("submit: uid=%d: bad greeting", cred.Uid)
	}
	hdr, err := readHeader(br)
	if err != nil {
		answer(sysexits.DataErr, err.Error())
		return fmt.Errorf("submit: uid=%d: %w", cred.Uid, err)
	}
	m, err := spool.Decode(bytes.NewReader(hdr), int64(len(hdr)))
	if err != nil {
		answer(sysexits.DataErr, "bad message header: "+err.Error())
		return fmt.Errorf("submit: uid=%d: %w", cred.Uid, err)
	}
	now := time.Now()
	m.ID, m.Time = spool.NewID(now), now
	m.Origin.UID, m.Origin.GID = int(cred.Uid), int(cred.Gid)
	m.Origin.User = origin.UserName(int(cred.Uid))
	m.Origin.Via = "socket"
	m.Size, m.CRC, m.BodyOffset = 0, 0, 0

	body := &chunkReader{br: br}
	id, err := store(m, body)
	if err == nil && !body.done {
		err = errors.New("store returned before the end of the message")
	}
	if err != nil {
		// Let a client still sending read the answer: stop reading only
		// after it, draining a bounded amount so that closing does not
		// reset the connection under the answer.
		defer func() {
			conn.CloseWrite()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, io.LimitReader(conn, drainLimit))
		}()
		var e *Error
		switch {
		case errors.As(err, &e):
			answer(e.Code, e.Msg)
		case errors.Is(err, spool.ErrTooLarge):
			answer(sysexits.DataErr, "message too large")
		case spool.IsFull(err):
			answer(sysexits.CantCreat, "the spool is full")
		case body.err != nil:
			answer(sysexits.IOErr, "message incomplete: "+body.err.Error())
		default:
			answer(sysexits.IOErr, "could not store the message")
		}
		return fmt.Errorf("submit: uid=%d: %w", cred.Uid, err)
	}
	answer(0, id)
	return nil
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// deadlineReader renews the read deadline before every read, so an idle
// client is dropped while a slow but steady one is not.
type deadlineReader struct{ c *net.UnixConn }

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.c.SetReadDeadline(time.Now().Add(IdleTimeout))
	return d.c.Read(p)
}

func readHeader(br *bufio.Reader) ([]byte, error) {
	var hdr []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return nil, fmt.Errorf("header: %w", err)
		}
		hdr = append(hdr, line...)
		if len(hdr) > maxHeader {
			return nil, errors.New("header too large")
		}
		if err == nil && len(line) == 1 {
			return hdr, nil
		}
	}
}

// chunkReader decodes the body chunks. It returns io.EOF only after the
// final "0" chunk; a connection that ends earlier is io.ErrUnexpectedEOF.
type chunkReader struct {
	br   *bufio.Reader
	left int
	done bool
	err  error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.done {
		return 0, io.EOF
	}
	for c.left == 0 {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.err = err
			return 0, err
		}
		n, err := strconv.Atoi(string(line[:len(line)-1]))
		if err != nil || n < 0 || n > MaxChunk {
			c.err = errors.New("bad chunk length")
			return 0, c.err
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= n
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.err = err
		return n, err
	}
	return n, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
