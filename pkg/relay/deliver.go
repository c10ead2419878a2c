package relay

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/mailshim/mailshim/pkg/config"
)

// Candidates returns the upstreams that may carry mail from sender, in
// their configured order: config.SelectUpstreams, the rule of
// sender_domains.
func Candidates(ups []config.Upstream, sender string) []config.Upstream {
	return config.SelectUpstreams(ups, sender)
}

// Deliver sends m through the first of ups that works: it dials each in
// order and fails over to the next on a failure to connect, TLS, EHLO or
// AUTH, or on a temporary refusal before any recipient was accepted (MAIL,
// or every RCPT). Once the message data has been sent, it never tries
// another upstream (that could duplicate the message). ups is usually
// Candidates(cfg.Upstreams, m.From). The Result is the last one tried.
func Deliver(ctx context.Context, ups []config.Upstream, opts Options, m *Message) *Result {
	var res *Result
	for _, up := range ups {
		s, err := Dial(ctx, up, opts)
		if err != nil {
			res = failed(m, upstreamAddr(up), err.(*Error))
			if ctx.Err() != nil {
				return res
			}
			continue
		}
		res = s.Send(ctx, m)
		s.Close()
		if !failover(res) || ctx.Err() != nil {
			return res
		}
	}
	if res == nil {
		res = failed(m, "", &Error{Class: Temporary, Stage: StageConnect, Err: errors.New("no upstream"),
			Cause: "no upstream is configured for this sender", Fix: "add an [[upstream]] (without sender_domains, or with this sender's domain)"})
	}
	return res
}

// failover reports whether another upstream may be tried after res: a
// temporary failure before the data was sent.
func failover(res *Result) bool {
	if res.Err == nil || res.Err.Class == Permanent || res.Accepted() > 0 {
		return false
	}
	switch res.Err.Stage {
	case StageConnect, StageTLS, StageEHLO, StageAuth, StageMail, StageRcpt:
		return true
	}
	return false
}

func upstreamAddr(up config.Upstream) string {
	return net.JoinHostPort(up.Host, strconv.Itoa(up.WithDefaults().Port))
}

func failed(m *Message, addr string, e *Error) *Result {
	res := &Result{Upstream: addr, Err: e, Rcpts: make([]RcptResult, len(m.To))}
	for i, to := range m.To {
		res.Rcpts[i] = RcptResult{Rcpt: to, Err: e}
	}
	return res
}
