package relay

import (
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/mailshim/mailshim/pkg/config"
)

// Addr returns an upstream's host:port, with the port its TLS mode implies
// when none is set. Logs and the queue's per-upstream health use it.
func Addr(up config.Upstream) string {
	return net.JoinHostPort(up.Host, strconv.Itoa(up.WithDefaults().Port))
}

// UpstreamTrouble reports whether e is about the upstream itself — it
// cannot take mail from us right now — rather than about the message or a
// recipient, so that another upstream may do better:
//
//   - any failure to set up the session: connect, TLS, the greeting,
//     EHLO, AUTH (an authentication failure too: another upstream has
//     its own credentials);
//   - 421 at any stage (the service is shutting down);
//   - before the message data: the connection lost, or a refusal that
//     means our AUTH/TLS settings are wrong for this upstream
//     (AuthFailure: "Relay access denied", 530);
//   - at MAIL, at DATA (the command) or in reply to the data: a 4xx
//     whose enhanced code is 4.3.x (mail system: full, not accepting,
//     congested) or 4.4.x (network, routing), or a 451 without an
//     enhanced code (a reply to the data that refuses it says the
//     upstream did not take the message: another may);
//   - at RCPT: 452 4.3.1 (insufficient system storage). Other 4xx at
//     RCPT are about that recipient (a lookup for its domain, greylisting)
//     and would follow the message to any upstream.
//
// A 5xx about the sender, a recipient or the message, a 4xx about a
// mailbox (4.2.x, 4.1.x) or policy (4.7.x greylisting), and a connection
// lost once the data was under way are not: failing over then would
// either not help or risk a duplicate (the upstream may have taken the
// message without our seeing its reply). Whether a message so refused is
// charged an attempt is another question (RefusedMessage; pkg/queue).
func (e *Error) UpstreamTrouble() bool {
	if e == nil || e.Class == Permanent {
		return false
	}
	switch e.Stage {
	case StageConnect, StageTLS, StageEHLO, StageAuth:
		return true
	case StageMail, StageRcpt, StageData:
	default:
		return e.Code == 421
	}
	switch {
	case e.Code == 421, e.Class == AuthFailure:
		return true
	case e.Code == 0:
		// The connection was lost before any data went out (awaiting
		// the reply to DATA included). A connection lost during the
		// data is StageData without a code too: the upstream never
		// acknowledged the message, but some of it went out; keep it
		// on this upstream's schedule.
		return e.Stage != StageData || lostBeforeData(e)
	case e.Stage == StageRcpt:
		return e.Enhanced == "4.3.1"
	case e.Code >= 400 && e.Code < 500:
		return strings.HasPrefix(e.Enhanced, "4.3.") || strings.HasPrefix(e.Enhanced, "4.4.") || (e.Code == 451 && e.Enhanced == "")
	}
	return false
}

// FailOver reports whether another upstream should be tried after res:
// no recipient was accepted and every recipient failed with the upstream's
// own trouble (UpstreamTrouble).
func FailOver(res *Result) bool {
	if res == nil || res.Err == nil || res.Accepted() > 0 {
		return false
	}
	for _, rr := range res.Rcpts {
		if !rr.Err.UpstreamTrouble() {
			return false
		}
	}
	return res.Err.UpstreamTrouble()
}

// RefusedMessage reports whether res is the upstream answering this
// message's own transaction with a temporary refusal: a 4xx other than
// 421 to its MAIL, RCPT or DATA command (for the message or for every
// recipient), or any 4xx after its data, 421 included (the upstream
// read the whole message; providers answer so a message they rate-limit
// or distrust). The session worked and the upstream looked at the
// message; even when the reply says the upstream as a whole is in
// trouble (UpstreamTrouble: 4.3.x, "try again later", 421), the attempt
// was made. The queue charges it to the message and follows the retry
// schedule, so that a refusal that is really about one message (its
// sender, its size, a rate limit) is not retried every few seconds.
func RefusedMessage(res *Result) bool {
	if res == nil || res.Err == nil {
		return false
	}
	if refusedInTransaction(res.Err) {
		return true
	}
	for _, rr := range res.Rcpts {
		if refusedInTransaction(rr.Err) {
			return true
		}
	}
	return false
}

func refusedInTransaction(e *Error) bool {
	if e == nil || e.Class != Temporary || e.Code < 400 || e.Code >= 500 {
		return false
	}
	switch e.Stage {
	case StageDataEnd:
		return true
	case StageMail, StageRcpt, StageData:
		return e.Code != 421
	}
	return false
}

// DeadSession reports whether res is a reused session found dead before
// the message data: the connection was lost (no reply) at RSET, EHLO,
// MAIL, RCPT or awaiting the reply to DATA, or the first reply the
// client read was a 421 (an upstream that timed the idle session out, or
// restarted, says so before it closes, and that reply is read as the
// answer to the next RSET or MAIL). Nothing of the message reached the
// upstream, and it may be sent again at once on a fresh connection.
func DeadSession(res *Result) bool {
	if res == nil || res.Err == nil || res.Accepted() > 0 || res.Err.Class != Temporary {
		return false
	}
	e := res.Err
	if e.Code == 421 {
		return e.Stage == StageMail
	}
	if e.Code != 0 {
		return false
	}
	switch e.Stage {
	case StageConnect, StageEHLO, StageMail, StageRcpt:
		return true
	case StageData:
		return lostBeforeData(e)
	}
	return false
}

// LostInData reports whether res is a connection lost during the message
// data, or after it while awaiting the final reply: some of the message
// went out, the upstream acknowledged none of it, and no recipient was
// accepted. That is a temporary failure, charged to the message (its
// data may be what breaks the connection), but also what an upstream
// going down in the middle of a transaction looks like.
func LostInData(res *Result) bool {
	if res == nil || res.Err == nil || res.Accepted() > 0 {
		return false
	}
	e := res.Err
	if e.Class != Temporary || e.Code != 0 {
		return false
	}
	return e.Stage == StageDataEnd || e.Stage == StageData && !lostBeforeData(e)
}

// beforeData marks a connection lost at the data stage before any of the
// message went out (awaiting the reply to DATA).
type beforeData struct{ err error }

func (b *beforeData) Error() string { return b.err.Error() }
func (b *beforeData) Unwrap() error { return b.err }

// lostBeforeData reports whether e is a connection lost at the data
// stage before any of the message went out.
func lostBeforeData(e *Error) bool {
	var b *beforeData
	return e.Stage == StageData && e.Code == 0 && errors.As(e.Err, &b)
}
