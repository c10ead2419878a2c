package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// queueList is -bp / mailq: relayd's queue, as far as this user may see
// it; asJSON asks for the JSON array (mailq --json).
func queueList(cfg *config.Config, asJSON bool) *exitError {
	if asJSON {
		return controlRequest(cfg, "mailq", "--json")
	}
	return controlRequest(cfg, "mailq")
}

// flush is -q: ask relayd to try every deferred message now.
func flush(cfg *config.Config) *exitError {
	return controlRequest(cfg, "flush")
}

// aliases is -bi / newaliases: there is no database to rebuild (relayd
// reads [aliases] and the aliases file directly). It validates them: each
// problem is one warning line on stderr; the exit status is 0 all the
// same, since relayd skips the bad entries and uses the rest.
func aliases(cfg *config.Config) *exitError {
	for _, err := range cfg.LoadAliases() {
		fmt.Fprintf(os.Stderr, "sendmail: warning: %s\n", strings.Map(printable, err.Error()))
	}
	for name, targets := range cfg.Aliases {
		for _, t := range targets {
			if _, err := message.ParseList(t); err != nil {
				fmt.Fprintf(os.Stderr, "sendmail: warning: alias %q: invalid address %q: %v\n", name, t, err)
			}
		}
	}
	return nil
}

// verify is -bv: validate the recipient addresses without sending; one
// line per address on stdout (it is a query, like mailq), exit 67 when one
// is invalid.
func verify(a *args) *exitError {
	if len(a.recipients) == 0 {
		return errorf(sysexits.Usage, "no recipients given to verify")
	}
	bad := 0
	for _, r := range a.recipients {
		list, err := message.ParseList(r)
		if err != nil {
			fmt.Fprintf(os.Stdout, "%s... invalid address: %v\n", r, err)
			bad++
			continue
		}
		for _, addr := range list {
			fmt.Fprintf(os.Stdout, "%s... deliverable: relayed through the upstream\n", addr)
		}
	}
	if bad > 0 {
		return errorf(sysexits.NoUser, "%d invalid address(es)", bad)
	}
	return nil
}
