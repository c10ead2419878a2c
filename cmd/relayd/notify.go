package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/mailshim/mailshim/pkg/maillog"
)

// systemd's service notification (sd_notify(3)), for Type=notify: READY=1
// once relayd serves its sockets and has started picking up and
// delivering, STATUS= lines, WATCHDOG=1 while it runs when the unit sets
// WatchdogSec=, and STOPPING=1 on SIGTERM. Outside systemd (no
// NOTIFY_SOCKET) every call does nothing.

// notifyFailing is set while notifications fail, so that a socket that
// does not answer is logged once, not at every watchdog ping.
var notifyFailing atomic.Bool

// sdNotify sends state to systemd, logging a failure (never fatal: the
// unit's timeouts deal with a relayd systemd did not hear from) when it
// begins, and the first notification that works again.
func sdNotify(log *maillog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		if !notifyFailing.Swap(true) {
			log.Warning("sd_notify failed", err, slog.String("state", state))
		}
		return
	}
	if notifyFailing.Swap(false) {
		log.Recovered("sd_notify works again")
	}
}

// watchdog sends WATCHDOG=1 at half the unit's WatchdogSec= until ctx is
// done; without a watchdog it returns at once. The pings come from their
// own goroutine, so they say that the process runs and its scheduler is
// not stuck; a relayd that stops (SIGSTOP, a deadlock of the runtime) is
// killed and restarted by systemd after WatchdogSec.
func watchdog(ctx context.Context, log *maillog.Logger) {
	every, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		log.Warning("watchdog", err)
		return
	}
	if every <= 0 {
		return
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sdNotify(log, sd.SdNotifyWatchdog)
		}
	}
}
