// Package control is relayd's control socket: a Unix stream socket on which
// a client sends one request (a verb and its arguments) and receives one
// answer (the verb's text output, or an error).
//
// The peer is identified by SO_PEERCRED, never by anything it sends. The
// verbs "mailq" and "flush" are open to every local user (for a user who is
// neither root nor the daemon user, mailq shows and flush retries only the
// messages of their own UID, and flush takes effect once a minute at most:
// FlushEvery); "list", "show", "hold", "release" and "delete" are for root
// and the daemon user only.
//
// Every local user may connect, so the server caps what one user can hold
// (sockserve.Limiter): a few requests at once per UID, a client that sends nothing is
// dropped after RequestTimeout, every UID keeps a floor of slots however
// many others flood, and root and the daemon user have slots of their own.
//
// The wire format is one JSON object each way:
//
//	-> {"verb":"hold","args":["0006270A1B2C3D4E5F60"]}\n   (then the client shuts down its write side)
//	<- {"output":"...","error":""}\n
//
// This file and wire.go are the client; they are linked into the setgid
// sendmail, so they use neither encoding/json (wire.go reads and writes
// the two objects) nor net's dialer (package unixconn), nor crypto/tls,
// net/http or os/exec.
//
// Its Go API is not stable.
package control

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mailshim/mailshim/pkg/unixconn"
)

// Verbs understood by relayd.
const (
	VerbMailq   = "mailq"   // Postfix mailq layout; non-admins see their own UID only
	VerbFlush   = "flush"   // retry deferred messages now: all for admins, the peer's own for other users
	VerbList    = "list"    // admin: one line per message with its state
	VerbShow    = "show"    // admin: one message's envelope, origin and delivery state
	VerbHold    = "hold"    // admin: hold messages
	VerbRelease = "release" // admin: move held messages back to the queue
	VerbDelete  = "delete"  // admin: remove messages
	VerbFreeze  = "freeze"  // admin: hold everything an account sends (--user U)
	VerbThaw    = "thaw"    // admin: undo freeze (--user U)
	VerbStats   = "stats"   // admin: per-account counts of the last hour and day
)

// ErrUnavailable is returned (wrapped) by Request when the socket cannot be
// reached: relayd is not running, or the socket path is wrong.
var ErrUnavailable = errors.New("relayd is not running or its control socket is unreachable")

// ErrDenied is returned (wrapped) when relayd refuses the verb for this
// peer.
var ErrDenied = errors.New("permission denied")

// ErrThrottled is returned (wrapped) when relayd did not act on a flush
// because the user's last one was less than FlushEvery ago.
var ErrThrottled = errors.New("throttled")

// ErrUsage is returned (wrapped) when relayd refused the request as
// used wrongly (a UsageError: an option it does not know, a command
// missing what it needs); relayd's queue command exits 64 (EX_USAGE).
var ErrUsage = errors.New("usage error")

// UsageError is a Handler's error for a request used wrongly: the
// client's Request returns it wrapping ErrUsage.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError saying what was wrong.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// remoteUsage is a UsageError as the client receives it: its text, and
// errors.Is(err, ErrUsage).
type remoteUsage string

func (e remoteUsage) Error() string        { return string(e) }
func (e remoteUsage) Is(target error) bool { return target == ErrUsage }

// Timeout bounds a whole request.
const Timeout = 60 * time.Second

// maxAnswer bounds the answer the client accepts.
const maxAnswer = 256 << 20

type request struct {
	Verb string   `json:"verb"`
	Args []string `json:"args,omitempty"`
}

type answer struct {
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
	Denied bool   `json:"denied,omitempty"`
	// Throttled: a flush not done (FlushEvery); Error says so.
	Throttled bool `json:"throttled,omitempty"`
	// Usage: the request was used wrongly (a UsageError); Error says how.
	Usage bool `json:"usage,omitempty"`
}

// Request sends verb with args to the relayd listening on sockPath and
// copies the answer's output to out. An error from relayd is returned as an
// error (wrapping ErrDenied when the peer may not use the verb,
// ErrThrottled for a flush not done, ErrUsage for a request used
// wrongly); a socket that cannot be reached is
// reported wrapping ErrUnavailable.
func Request(sockPath, verb string, args []string, out io.Writer) error {
	c, err := unixconn.Dial(sockPath, 10*time.Second)
	if err != nil {
		return fmt.Errorf("%w (%s: %v)", ErrUnavailable, sockPath, err)
	}
	defer c.Close()
	if err := c.SetTimeout(Timeout); err != nil {
		return err
	}
	t := time.AfterFunc(Timeout, c.Abort) // the whole request, not each call
	defer t.Stop()
	b := append(encodeRequest(request{Verb: verb, Args: args}), '\n')
	if _, err := c.Write(b); err != nil {
		// A server that refused the connection (busy) has answered and
		// closed: its answer says why.
		if a, err := decodeAnswer(c, 64<<10); err == nil && a.Error != "" {
			return fmt.Errorf("%s: %s", verb, a.Error)
		}
		return fmt.Errorf("control: sending %s to %s: %w", verb, sockPath, err)
	}
	c.CloseWrite()
	a, err := decodeAnswer(c, maxAnswer)
	if err != nil {
		return fmt.Errorf("control: reading the answer to %s from %s: %w", verb, sockPath, err)
	}
	if a.Output != "" {
		if _, err := io.WriteString(out, a.Output); err != nil {
			return err
		}
	}
	switch {
	case a.Denied:
		return fmt.Errorf("%s: %w: %s", verb, ErrDenied, a.Error)
	case a.Throttled:
		return fmt.Errorf("%s: %w: %s", verb, ErrThrottled, a.Error)
	case a.Usage:
		return fmt.Errorf("%s: %w", verb, remoteUsage(a.Error))
	case a.Error != "":
		return fmt.Errorf("%s: %s", verb, a.Error)
	}
	return nil
}
