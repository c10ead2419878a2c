package main

import (
	"errors"
	"io"
	"os"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// control sends verb ("mailq" or "flush") to relayd's control socket and
// copies its answer to stdout. relayd identifies the caller by SO_PEERCRED
// and shows a user only their own messages. A flush prints nothing (under
// CGI stdout is the web page, and Postfix's sendmail -q is silent too):
// relayd's account of it is for relayd queue flush, and a flush relayd
// did not do because the last one was too recent is not an error here.
func controlRequest(cfg *config.Config, verb string, args ...string) *exitError {
	out := io.Writer(os.Stdout)
	if verb == control.VerbFlush {
		out = io.Discard
	}
	err := control.Request(cfg.ControlSocket, verb, args, out)
	switch {
	case err == nil:
		return nil
	case verb == control.VerbFlush && errors.Is(err, control.ErrThrottled):
		return nil
	case errors.Is(err, control.ErrUnavailable):
		return errorf(sysexits.Unavailable, "relayd is not running (cannot reach %s)", cfg.ControlSocket).
			withHint("start relayd (systemctl start relayd); mail already queued is not lost")
	case errors.Is(err, control.ErrDenied):
		return errorf(sysexits.NoPerm, "relayd refused %s: %v", verb, err)
	}
	return errorf(sysexits.Unavailable, "relayd could not answer %s: %v", verb, err)
}
