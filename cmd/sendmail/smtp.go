package main

import (
	"github.com/mailshim/mailshim/pkg/config"
)

func smtpSession(cfg *config.Config, a *args, env map[string]string) (int, *exitError) {
	return 0, errorf(70, "-bs not implemented yet")
}
