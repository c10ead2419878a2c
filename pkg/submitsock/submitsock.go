// Package submitsock is the submission socket, both sides: the door into
// the spool for a sendmail that is not running setgid (systemd
// NoNewPrivileges=, a container's no-new-privileges, a package that lost
// the bit). relayd listens on a world-connectable unix socket, identifies
// the caller by SO_PEERCRED — the same kernel guarantee as the owner of a
// maildrop file — and stores the message through the submission pipeline
// (submit.Intake). Send is the client, Server the server; HeaderBudget
// bounds the memory of the headers of all connections.
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
// message durable (its segment and the queue journal fdatasync'd: the
// same promise as spool.Drop.Commit), or
// "error <sysexits code> <text>\n", or "later <sysexits code> <text>\n"
// for a refusal a later try may pass (submit.Error.Temporary: a rate of
// the account's policy), which an SMTP door answers 4xx. A connection
// that ends before the final "0" chunk is an aborted message and is
// never stored.
//
// The server trusts nothing of the header for identity: it overwrites
// Origin.UID, GID and User with the peer's credentials and sets
// Origin.Via = "socket"; it assigns a fresh queue ID and arrival time.
// Nor does it trust the rest: the envelope goes through
// message.ValidateEnvelope (as in sendmail) and the sender policy, unknown
// keys are dropped, the advisory origin is bounded and re-checked
// (origin.Sanitize). A client has HeaderTimeout for the greeting and the
// header (at most MaxSpoolHeader bytes), then BodyTimeout for the body.
// Capping the connections served at once (in all and per UID) is the
// caller's job: relayd does it in its accept loop (sockserve.SubmitLimiter),
// before Serve is called.
package submitsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/sysexits"
	"github.com/mailshim/mailshim/pkg/unixconn"
)

const (
	greeting = "MAILSHIM-SUBMIT 1\n"
	// MaxChunk is the largest body chunk a server accepts.
	MaxChunk = 1 << 20
	// MaxSpoolHeader bounds the spool header a client may send: room for
	// message.MaxRecipientBytes of recipients (escaped) and the origin
	// record that origin.Sanitize keeps.
	MaxSpoolHeader = 4 << 20
	// drainLimit bounds what the server reads and discards after refusing
	// a message, so that the client gets to read the answer.
	drainLimit = 64 << 20
	// HeaderTimeout is how long a client has, from the accept, to send
	// the greeting and the whole spool header.
	HeaderTimeout = 30 * time.Second
	// BodyTimeout is how long a client has to send the whole body after
	// the header (sendmail's own client gives up after 10 minutes).
	BodyTimeout = 10 * time.Minute
	// IdleTimeout is how long the server waits for the next bytes of the
	// body; each read renews it, never past BodyTimeout.
	IdleTimeout = 2 * time.Minute
	// readBuffer is the connection's read buffer, allocated once the peer
	// has passed the limiter.
	readBuffer = 4 << 10
)

// Send submits one message over the unix socket at sockPath: m's envelope
// and advisory origin fields, then body (the message bytes as they are to
// be stored), streamed. It returns the queue ID once the server has stored
// the message durably. A refusal is a *submit.Error carrying the sysexits
// code. Any other error means the socket could not be used: nothing was
// stored, except after the whole message was sent and no answer came back
// (the server may have stored it before it went away; errors.Is(err,
// ErrNoAnswer)).
func Send(ctx context.Context, sockPath string, m *spool.Meta, body io.Reader) (string, error) {
	return SendGuarded(ctx, sockPath, m, body, nil)
}

// SendGuarded is Send whose last step — sending the end of the message,
// from which the server may store it, and reading its answer — runs
// inside guard (when not nil), as a maildrop commit does: sendmail's
// guard keeps a signal from ending it while the message may be stored
// without its caller learning so. guard returns end's error.
func SendGuarded(ctx context.Context, sockPath string, m *spool.Meta, body io.Reader, guard func(end func() error) error) (string, error) {
	conn, err := unixconn.Dial(sockPath, dialTimeout(ctx))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, conn.Abort)
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
	// Until the terminating chunk is sent (it is still in w), the server
	// cannot store the message.
	var id string
	end := func() error {
		w.WriteString("0\n")
		if err := w.Flush(); err != nil {
			id, err = answerAfterWriteError(conn, err)
			return err
		}
		conn.CloseWrite()
		line, err := readAnswer(conn)
		if err != nil {
			return fmt.Errorf("submit: %w: %w", ErrNoAnswer, err)
		}
		id, err = parseAnswer(line)
		if _, refused := err.(*submit.Error); err != nil && !refused {
			return fmt.Errorf("submit: %w: %w", ErrNoAnswer, err)
		}
		return err
	}
	if guard == nil {
		err = end()
	} else {
		err = guard(end)
	}
	if err != nil {
		return "", err
	}
	return id, nil
}

// ErrNoAnswer is the server's answer missing, or not valid, after the
// whole message was sent (the server went away, the exchange timed out,
// or the server answered something else than its protocol's line): the
// server may have stored the message, and nobody can tell its sender
// whether it did.
var ErrNoAnswer = errors.New("no valid answer from the server after the end of the message")

// maxAnswer bounds the server's answer line: a line longer than that is
// not an answer, and is not read to its end.
const maxAnswer = 1024

// readAnswer reads the server's answer line, at most maxAnswer bytes.
func readAnswer(conn io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(conn, maxAnswer).ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", fmt.Errorf("an answer longer than %d bytes", maxAnswer)
	}
	return string(line), err
}

// dialTimeout is how long Dial waits for a listener with a full backlog:
// what is left of ctx, at most a minute.
func dialTimeout(ctx context.Context) time.Duration {
	d := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl), time.Millisecond))
	}
	return d
}

// answerAfterWriteError reads the server's answer after a failed write: a
// server that refused the message early (too large) has answered and
// stopped reading, and its answer says why.
func answerAfterWriteError(conn *unixconn.Conn, werr error) (string, error) {
	conn.SetTimeout(5 * time.Second)
	line, err := readAnswer(conn)
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
	kind, rest, _ := strings.Cut(line, " ")
	if kind == "error" || kind == "later" {
		codeStr, msg, _ := strings.Cut(rest, " ")
		code, err := strconv.Atoi(codeStr)
		if err != nil || code < 64 || code > 78 || code == sysexits.TempFail {
			code = sysexits.IOErr
		}
		return "", &submit.Error{Code: code, Msg: msg, Temporary: kind == "later"}
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

// Server serves the submission socket. The zero value with Store set
// works; relayd sets Policy too (both through the shared Intake).
type Server struct {
	// Intake is the submission pipeline the socket shares with the SMTP
	// listener: the envelope check, the sender policy and the store.
	submit.Intake
	// Timeouts; zero means HeaderTimeout, BodyTimeout, IdleTimeout.
	HeaderTimeout, BodyTimeout, IdleTimeout time.Duration
	// Budget bounds the memory of the headers of all connections at
	// once (nil: only MaxSpoolHeader per connection).
	Budget *HeaderBudget
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Serve handles one connection on the submission socket: it takes the
// peer's identity from the kernel (SO_PEERCRED), overwriting whatever the
// client claimed, passes the limiter, reads the spool header (within
// HeaderTimeout and MaxSpoolHeader), validates the envelope exactly as
// sendmail does (message.ValidateEnvelope, then the sender policy), drops
// unknown header keys and re-checks the advisory origin fields
// (origin.Sanitize), calls Store with the body (within BodyTimeout, no
// IdleTimeout without a byte), and answers. It returns the error to log,
// if any (the client has been told).
func (s *Server) Serve(conn *net.UnixConn) error {
	defer conn.Close()
	start := time.Now()
	cred, err := sockserve.PeerCred(conn)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	answerAs := func(kind string, code int, msg string) {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if code == 0 {
			fmt.Fprintf(conn, "ok %s\n", msg)
			return
		}
		fmt.Fprintf(conn, "%s %d %s\n", kind, code, submit.ReplyLine(msg))
	}
	answer := func(code int, msg string) { answerAs("error", code, msg) }
	// refuse answers e and drains a bounded amount, so that a client
	// still sending gets to read the answer instead of a reset.
	refuse := func(e *submit.Error) {
		kind := "error"
		if e.Temporary {
			kind = "later"
		}
		answerAs(kind, e.Code, e.Msg)
		conn.CloseWrite()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, io.LimitReader(conn, drainLimit))
	}
	headerTimeout := orDefault(s.HeaderTimeout, HeaderTimeout)
	bodyTimeout := orDefault(s.BodyTimeout, BodyTimeout)
	idleTimeout := orDefault(s.IdleTimeout, IdleTimeout)
	dl := &deadlineReader{c: conn, idle: idleTimeout, hard: start.Add(headerTimeout)}
	// The header is charged to the budget while it is read, and stays
	// charged until the connection ends (the decoded header lives that
	// long).
	bud := &budgetReader{r: dl, b: s.Budget, uid: cred.Uid, on: true}
	if sockserve.Admin(int(cred.Uid)) {
		bud.b = nil // root and the daemon user are never refused for others' load
	}
	defer bud.release()
	br := bufio.NewReaderSize(bud, readBuffer)
	g, err := br.ReadSlice('\n')
	if err == io.EOF && len(g) == 0 {
		// Nothing sent: a sendmail that connects first and was killed
		// while its caller was still writing the message.
		return fmt.Errorf("submit: uid=%d: the client went away before sending a message; nothing stored", cred.Uid)
	}
	if err != nil || string(g) != greeting {
		answer(sysexits.Protocol, "not a mailshim submission")
		return fmt.Errorf("submit: uid=%d: bad greeting", cred.Uid)
	}
	m, err := spool.DecodeHeader(br, MaxSpoolHeader)
	bud.on = false
	if errors.Is(err, ErrHeaderBudget) {
		refuse(&submit.Error{Code: sysexits.IOErr, Msg: "relayd is busy: " + err.Error()})
		return fmt.Errorf("submit: uid=%d: header refused: %w", cred.Uid, err)
	}
	if err != nil {
		msg := "bad message header: " + err.Error()
		if isTimeout(err) {
			// Out of time: answered, not drained.
			msg = fmt.Sprintf("the header did not arrive within %v", headerTimeout)
			answer(sysexits.DataErr, msg)
			return fmt.Errorf("submit: uid=%d: %s", cred.Uid, msg)
		}
		refuse(&submit.Error{Code: sysexits.DataErr, Msg: msg})
		return fmt.Errorf("submit: uid=%d: %s", cred.Uid, msg)
	}
	m.Origin.UID, m.Origin.GID = int(cred.Uid), int(cred.Gid)
	m.Origin.User = origin.UserName(int(cred.Uid))
	m.Origin.Via = "socket"
	// What only the SMTP listener records is no client's to claim here.
	m.Origin.Client, m.Origin.Helo, m.Origin.AuthUser = "", "", ""
	if err := s.Accept(m); err != nil {
		refuse(submit.Classify(err))
		return fmt.Errorf("submit: uid=%d: %w", cred.Uid, err)
	}

	dl.hard = time.Now().Add(bodyTimeout)
	body := &chunkReader{br: br}
	id, err := s.Store(m, body)
	if err == nil && !body.done {
		err = errors.New("store returned before the end of the message")
	}
	if err != nil {
		refused := errors.As(err, new(*submit.Error)) || errors.Is(err, spool.ErrTooLarge) || spool.IsFull(err)
		switch {
		case !refused && body.err != nil && isTimeout(body.err):
			answer(sysexits.IOErr, fmt.Sprintf("message incomplete: no data for %v, or the body took longer than %v", idleTimeout, bodyTimeout))
		case !refused && errors.Is(body.err, io.ErrUnexpectedEOF):
			// Answered, for a client that only closed its side.
			refuse(&submit.Error{Code: sysexits.IOErr, Msg: "message incomplete: " + body.err.Error()})
			return fmt.Errorf("submit: uid=%d: the client went away in the middle of the message; nothing stored", cred.Uid)
		case !refused && body.err != nil:
			refuse(&submit.Error{Code: sysexits.IOErr, Msg: "message incomplete: " + body.err.Error()})
		default:
			refuse(submit.Classify(err))
		}
		return fmt.Errorf("submit: uid=%d: %w", cred.Uid, err)
	}
	answer(0, id)
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// deadlineReader sets the read deadline before every read: idle from
// now, but never past hard. A client trickling a byte at a time
// cannot hold the connection past hard.
type deadlineReader struct {
	c    *net.UnixConn
	idle time.Duration
	hard time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	dl := time.Now().Add(d.idle)
	if d.hard.Before(dl) {
		dl = d.hard
	}
	d.c.SetReadDeadline(dl)
	return d.c.Read(p)
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
