package main

import (
	"errors"
	"os"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// control sends verb ("mailq" or "flush") to relayd's control socket and
// copies its answer to stdout. relayd identifies the caller by SO_PEERCRED
// and shows a user only their own messages.
func controlRequest(cfg *config.Config, verb string, args ...string) *exitError {
	err := control.Request(cfg.ControlSocket, verb, args, os.Stdout)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, control.ErrUnavailable):
		return errorf(sysexits.Unavailable, "relayd is not running (cannot reach %s)", cfg.ControlSocket).
			withHint("start relayd (systemctl start relayd); mail already queued is not lost")
	case errors.Is(err, control.ErrDenied):
		return errorf(sysexits.NoPerm, "relayd refused %s: %v", verb, err)
	}
	return errorf(sysexits.Unavailable, "relayd could not answer %s: %v", verb, err)
}
