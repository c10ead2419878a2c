package relay

import (
	"context"
	"errors"

	"github.com/mailshim/mailshim/pkg/config"
)

var errNotImplemented = errors.New("relay: not implemented yet")

// Session is one connection to one upstream, authenticated and ready for
// Send. It is not safe for concurrent use; use one Session per goroutine.
type Session struct {
	upstream string
	dead     bool
}

// Dial connects to up (its Password filled by config.LoadSecrets): TCP,
// TLS (STARTTLS or implicit), EHLO with opts.Hostname, AUTH. A failure is
// an *Error (returned as error) with Stage connect, tls, ehlo or auth.
func Dial(ctx context.Context, up config.Upstream, opts Options) (*Session, error) {
	return nil, &Error{Class: Temporary, Stage: StageConnect, Err: errNotImplemented}
}

// Upstream returns the upstream's host:port.
func (s *Session) Upstream() string { return s.upstream }

// Alive reports whether the session can take another Send.
func (s *Session) Alive() bool { return !s.dead }

// Send delivers one message. It never returns a nil Result; see Result
// for the meaning of its fields.
func (s *Session) Send(ctx context.Context, m *Message) *Result {
	return &Result{Upstream: s.upstream, Err: &Error{Class: Temporary, Stage: StageConnect, Err: errNotImplemented}}
}

// Close says QUIT (bounded by the command timeout) and closes the
// connection.
func (s *Session) Close() error { return nil }
