package relay

import (
	"context"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
)

// Candidates returns the upstreams that may carry mail from sender, in
// order: those whose SenderDomains contain sender's domain, then those
// without SenderDomains. The null sender "" (bounces) may use any
// upstream without SenderDomains, else the first upstream.
func Candidates(ups []config.Upstream, sender string) []config.Upstream {
	domain := ""
	if i := strings.LastIndexByte(sender, '@'); i >= 0 {
		domain = strings.ToLower(sender[i+1:])
	}
	var matched, open []config.Upstream
	for _, up := range ups {
		if len(up.SenderDomains) == 0 {
			open = append(open, up)
			continue
		}
		for _, d := range up.SenderDomains {
			if domain != "" && strings.EqualFold(strings.TrimPrefix(d, "@"), domain) {
				matched = append(matched, up)
				break
			}
		}
	}
	out := append(matched, open...)
	if len(out) == 0 && len(ups) > 0 && sender == "" {
		out = ups[:1]
	}
	return out
}

// Deliver sends m through the first of ups that works: it dials each in
// order and fails over to the next on a failure to connect, TLS, EHLO or
// AUTH, or on a temporary refusal before any recipient was accepted (MAIL,
// or every RCPT). Once the message data has been sent, it never tries
// another upstream (that could duplicate the message). ups is usually
// Candidates(cfg.Upstreams, m.From). The Result is the last one tried.
func Deliver(ctx context.Context, ups []config.Upstream, opts Options, m *Message) *Result {
	return &Result{Err: &Error{Class: Temporary, Stage: StageConnect, Err: errNotImplemented}}
}
