package main

import (
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// control sends verb to relayd's control socket and copies its answer to
// stdout. Until pkg/control lands it says relayd cannot be reached.
func control(cfg *config.Config, verb string) *exitError {
	_ = verb
	return errorf(sysexits.Unavailable, "relayd is not running (cannot reach %s)", cfg.ControlSocket).
		withHint("start relayd (systemctl start relayd); queued mail is not lost")
}
