package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// statsCmd prints relayd stats: per account, the last hour and day.
func statsCmd(path string, args []string) int {
	for _, a := range args {
		if a != "--json" {
			return usageError("stats takes only --json, not %q", a)
		}
	}
	cfg, err := config.Load(path)
	if err != nil {
		printConfigErr(err)
		return sysexits.Config
	}
	if err := control.Request(cfg.ControlSocket, control.VerbStats, args, os.Stdout); err != nil {
		// relayd's answers already start with the verb; a socket that
		// cannot be reached does not.
		if msg := err.Error(); strings.HasPrefix(msg, control.VerbStats+": ") {
			fmt.Fprintf(os.Stderr, "relayd: %s\n", msg)
		} else {
			fmt.Fprintf(os.Stderr, "relayd: stats: %s\n", msg)
		}
		switch {
		case errors.Is(err, control.ErrUnavailable):
			return sysexits.Unavailable
		case errors.Is(err, control.ErrDenied):
			return sysexits.NoPerm
		}
		return 1
	}
	return sysexits.OK
}
