// Package maildrop is sendmail's door into the spool: Local.Store runs the
// submission pipeline's preparation (submit.Prepare) and writes the
// maildrop file with the process's own identity (setgid), or — when
// sendmail is not setgid and the maildrop is not writable — hands the
// message to relayd's submission socket (submitsock.Send).
//
// Its Go API is not stable.
package maildrop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"golang.org/x/sys/unix"
)

// Local stores messages the way sendmail does: into the maildrop, with the
// process's own identity (setgid), or — when Fallback is set and the
// maildrop is not writable — through relayd's submission socket.
type Local struct {
	Spool    string // spool root (maildrop/ inside)
	Hostname string // domain of a From: added to a message without one
	MaxSize  int64  // message size limit, 0 for none
	Socket   string // submission socket
	// Fallback allows the socket. sendmail sets it only when it is not
	// running setgid: a setgid sendmail that cannot write the maildrop
	// has a broken installation, which it reports.
	Fallback bool
	// Guard, if set, is told about the spool file being written, for a
	// signal handler that must remove it (see Guard).
	Guard Guard
}

// Guard coordinates a store with a signal handler.
type Guard interface {
	// Writing is called when a spool file exists, with the function that
	// removes it.
	Writing(abort func())
	// Commit runs commit (which makes the message durable) so that a
	// signal handler sees it either not started or finished, and records
	// the outcome.
	Commit(commit func() error) error
}

// SpoolMissingError is the maildrop directory not existing.
type SpoolMissingError struct{ Path string }

func (e *SpoolMissingError) Error() string {
	return "the spool directory " + e.Path + " does not exist"
}

// UnavailableError is neither door being usable: the maildrop (not
// writable) and the submission socket (unreachable).
type UnavailableError struct {
	Maildrop string
	DropErr  error
	Socket   string
	SockErr  error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("the maildrop %s is not writable (%v) and relayd's submission socket %s is unavailable (%v)",
		e.Maildrop, e.DropErr, e.Socket, e.SockErr)
}

// Store completes the envelope and origin from the header h — PHP's
// X-PHP-Originating-Script, SMTPUTF8 for non-ASCII addresses, a From:
// when the message has none (the full name, and the sender or
// user@Hostname) — and stores the message: h, then body to its end. It
// returns the queue ID once the message is durable; on error nothing was
// stored. Errors: *message.EnvelopeError (message.ValidateEnvelope),
// *SpoolMissingError, *UnavailableError, *submit.Error (relayd refused it
// over the socket), errors of body (the caller's input; see
// submitsock.IsReadError for the socket path), submitsock.ErrNoAnswer
// (relayd went away after the whole message: it may have stored it, the
// one case where an error does not mean that nothing was stored),
// message.ErrHeaderTooLarge
// (the completed header is over message's limits), spool.ErrTooLarge, and
// spool write errors (spool.IsFull tells a full disk).
func (l *Local) Store(env *spool.Envelope, org *spool.Origin, h *message.Header, body io.Reader) (string, error) {
	// The same preparation as relayd's doors (see submit.Prepare): one
	// definition of a valid envelope, origin record and header.
	hdr, err := submit.Prepare(env, org, h, body, l.Hostname)
	if err != nil {
		return "", err
	}
	now := time.Now()
	org.Via = "maildrop"
	m := &spool.Meta{Version: spool.Version, ID: spool.NewID(now), Time: now, Env: *env, Origin: *org}

	id, err := l.maildrop(m, hdr, body)
	var nm *noMaildrop
	if err == nil || !errors.As(err, &nm) {
		return id, err
	}
	// Not setgid and the maildrop is not ours to write: relayd's socket.
	m.Origin.Via = "socket"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var guard func(func() error) error
	if l.Guard != nil {
		guard = l.Guard.Commit // relayd commits once the message has ended
	}
	id, serr := submitsock.SendGuarded(ctx, l.Socket, m, io.MultiReader(bytes.NewReader(hdr), body), guard)
	if serr == nil {
		return id, nil
	}
	var se *submit.Error
	if errors.As(serr, &se) || submitsock.IsReadError(serr) || errors.Is(serr, submitsock.ErrNoAnswer) {
		// The socket was usable: relayd refused the message, the input
		// failed, or relayd went away after the whole message, which it
		// may have stored.
		return "", serr
	}
	return "", &UnavailableError{Maildrop: l.Spool + "/" + spool.DirMaildrop, DropErr: nm.err, Socket: l.Socket, SockErr: serr}
}

// noMaildrop is the maildrop being unusable when Fallback is allowed.
type noMaildrop struct{ err error }

func (e *noMaildrop) Error() string { return "maildrop not writable: " + e.err.Error() }
func (e *noMaildrop) Unwrap() error { return e.err }

func (l *Local) maildrop(m *spool.Meta, hdr []byte, body io.Reader) (string, error) {
	fallback := func(err error) error {
		if l.Fallback && (errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS)) {
			return &noMaildrop{err}
		}
		return err
	}
	dir, err := spool.OpenDir(l.Spool, spool.DirMaildrop)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", &SpoolMissingError{Path: l.Spool + "/" + spool.DirMaildrop}
		}
		return "", fallback(err)
	}
	defer dir.Close()
	d, err := spool.NewDrop(dir, m, l.MaxSize)
	if err != nil {
		return "", fallback(err)
	}
	defer d.Abort() // a no-op after a successful Commit
	if l.Guard != nil {
		l.Guard.Writing(d.Abort)
	}
	if _, err := d.Write(hdr); err != nil {
		return "", err
	}
	// body is usually a bufio.Reader over a message.Reader: io.Copy then
	// writes from the message.Reader's buffer (WriteTo), copying nothing.
	if _, err := io.Copy(d, body); err != nil {
		return "", err
	}
	if l.Guard != nil {
		err = l.Guard.Commit(d.Commit)
	} else {
		err = d.Commit()
	}
	if err != nil {
		return "", err
	}
	return m.ID, nil
}
