package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/smtpbs"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// smtpSession is -bs: an SMTP dialogue on stdin/stdout. Replies go to
// stdout (the only mode that writes there besides the queries); a message
// that could not be stored is reported in the reply to DATA, and the exit
// status is that of the last failure (0 when every message was stored).
func smtpSession(cfg *config.Config, a *args, envVars map[string]string) (int, *exitError) {
	handled = true
	go catchSignals()
	org := origin.Collect(envVars)
	org.Mode = "bs"
	org.Ignored = a.ignored
	in := &errReader{r: os.Stdin}
	lastCode := 0
	br := bufio.NewReaderSize(nil, headerBuf) // one for the session's messages
	srv := &smtpbs.Server{
		Hostname: cfg.Hostname,
		MaxSize:  cfg.MaxMessageSize,
		CheckSender: func(sender string) error {
			if e := checkSender(cfg, &org, sender); e != nil {
				lastCode = e.code
				report(e)
				return refusal(e)
			}
			return nil
		},
		Deliver: func(env spool.Envelope, data io.Reader) (string, error) {
			o := org
			br.Reset(data)
			// fail reports e, unless the rest of DATA, read first, has a
			// smuggled end: the server answers that (521) whatever the
			// refusal, so the status and the line say the same.
			fail := func(e *exitError) (string, error) {
				if _, err := io.Copy(io.Discard, br); errors.Is(err, message.ErrBareDataEnd) {
					e = inputError(err, in)
				}
				lastCode = e.code
				report(e)
				return "", refusal(e)
			}
			h, err := message.ReadHeader(br, headerLimit(cfg))
			if err != nil {
				return fail(inputError(err, in))
			}
			id, e := store(cfg, &env, &o, h, br, in)
			if e != nil {
				return fail(e)
			}
			return id, nil
		},
	}
	_, failed, err := srv.Serve(bufio.NewReaderSize(in, 64<<10), os.Stdout)
	// The session is over and every message in it answered: a signal
	// now has nothing to cut short, and sendmail exits with the
	// session's status.
	signal.Ignore(stopSignals...)
	if err != nil {
		return 0, sessionBroken(err)
	}
	if failed > 0 && lastCode != 0 {
		return lastCode, nil
	}
	return 0, nil
}

// sessionBroken is the failure of the session's own streams: a client
// that went away (its end of stdout closed) or whose input failed. The
// messages the session stored stay queued, answered or not, and the line
// says so, as the signal handler's does, so that nobody sends them again.
func sessionBroken(err error) *exitError {
	msg := fmt.Sprintf("SMTP session: %v", err)
	n, maybe := stores.Load(), maybeStores.Load()
	switch {
	case n == 0 && maybe == 0:
		msg += "; no message of this session was stored"
	case n > 0:
		msg += fmt.Sprintf("; the %d message(s) stored in this session (answered or not) stay queued, any other was not sent", n)
	}
	if maybe > 0 {
		msg += fmt.Sprintf("; %d more may have been stored (relayd gave no answer; mailq shows whether it is queued)", maybe)
	}
	return errorf(sysexits.IOErr, "%s", msg)
}

// refusal is a failure as the SMTP server answers it: its exit code
// and text, which submit.SMTPReply maps to the reply both SMTP servers
// give.
func refusal(e *exitError) error {
	return &submit.Error{Code: e.code, Msg: e.msg, Temporary: e.temporary}
}

// headerBuf is the buffer ReadHeader reads the header section through
// (longer lines are read in pieces). The body is not copied through it:
// io.Copy hands message.Reader's own buffer to the spool file (WriteTo).
const headerBuf = 8 << 10

func headerLimit(cfg *config.Config) int {
	maxHdr := message.MaxHeader
	if cfg.MaxMessageSize > 0 && cfg.MaxMessageSize < int64(maxHdr) {
		maxHdr = int(cfg.MaxMessageSize)
	}
	return maxHdr
}
