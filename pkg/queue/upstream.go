package queue

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/relay"
)

// RelayDialer returns the production Dialer: pkg/relay sessions to the
// upstreams that may carry the sender's mail (relay.Candidates), tried in
// order until one connects, negotiates TLS and authenticates.
func RelayDialer(ups []config.Upstream, opts relay.Options) Dialer {
	return func(ctx context.Context, sender string) (Session, error) {
		cands := relay.Candidates(ups, sender)
		if len(cands) == 0 {
			return nil, &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect,
				Cause: "no upstream may carry mail from this sender", Fix: "add an [[upstream]] without sender_domains, or one for this sender's domain"}
		}
		var last error
		var lastUp string
		for _, up := range cands {
			s, err := relay.Dial(ctx, up, opts)
			if err == nil {
				return s, nil
			}
			last, lastUp = err, net.JoinHostPort(up.Host, strconv.Itoa(up.Port))
			if ctx.Err() != nil {
				break
			}
		}
		var re *relay.Error
		if !errors.As(last, &re) {
			re = &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: last}
		}
		return nil, &DialError{Upstream: lastUp, Err: re}
	}
}

// RouteKey returns the function grouping senders by their upstream
// candidates, so that one session carries every message it may carry.
func RouteKey(ups []config.Upstream) func(string) string {
	any := true
	for _, u := range ups {
		if len(u.SenderDomains) > 0 {
			any = false
		}
	}
	if any {
		return nil
	}
	return func(sender string) string {
		var b strings.Builder
		for _, u := range relay.Candidates(ups, sender) {
			b.WriteString(u.Host + ":" + strconv.Itoa(u.Port) + ",")
		}
		return b.String()
	}
}

// SettingsFrom builds the queue settings for cfg (secrets already loaded).
func SettingsFrom(cfg *config.Config, opts relay.Options) Settings {
	return Settings{
		Retry:       cfg.Queue.Retry,
		Lifetime:    cfg.Queue.Lifetime,
		DelayNotice: cfg.Queue.DelayNotice,
		Concurrency: cfg.Queue.Concurrency,
		Hostname:    opts.Hostname,
		Dial:        RelayDialer(cfg.Upstreams, opts),
		RouteKey:    RouteKey(cfg.Upstreams),
	}
}
