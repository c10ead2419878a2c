package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Session is an open, authenticated connection to one upstream
// (*relay.Session in production).
type Session interface {
	Send(ctx context.Context, m *relay.Message) *relay.Result
	Alive() bool
	Upstream() string
	Close() error
}

// DialFunc opens a session with one upstream. Its error should be a
// *relay.Error (anything else counts as a temporary connect failure).
type DialFunc func(ctx context.Context, up config.Upstream) (Session, error)

// Upstreams is the upstream component: from the resolved configuration it
// says which upstreams may carry a message and in which order (Route), and
// a worker's link (see link) sends through them with failover and session
// reuse. It is immutable; a reload builds a new one.
type Upstreams struct {
	list   []config.Upstream
	routes []config.Route
	dial   DialFunc
	// single: every message has the same candidates (no upstream is
	// limited to sender domains, no route), so the route needs no
	// message data.
	single bool
	// one is the route of every message when single, computed once:
	// its keys are hashes, too costly to compute per message.
	one Route

	groupMu sync.Mutex
	groups  map[int][]string // group names of each UID (routes by group)
}

// NewUpstreams returns the component for the upstreams list (in
// configuration order, secrets loaded). dial opens one session; nil means
// relay.Dial with opts.
func NewUpstreams(list []config.Upstream, opts relay.Options, dial DialFunc) *Upstreams {
	if dial == nil {
		dial = func(ctx context.Context, up config.Upstream) (Session, error) {
			s, err := relay.Dial(ctx, up, opts)
			if err != nil {
				return nil, err
			}
			return s, nil
		}
	}
	u := &Upstreams{list: append([]config.Upstream(nil), list...), dial: dial, single: true}
	for _, up := range list {
		if len(up.SenderDomains) > 0 || up.RoutedOnly {
			u.single = false
		}
	}
	u.one = routeFor(u.list)
	return u
}

// WithRoutes returns u choosing upstreams by the [[route]]s too
// (config.SelectRoute): by the sender's domain and by the local user the
// kernel named.
func (u *Upstreams) WithRoutes(routes []config.Route) *Upstreams {
	n := &Upstreams{list: u.list, routes: append([]config.Route(nil), routes...), dial: u.dial, single: u.single && len(routes) == 0, one: u.one}
	return n
}

// Route is the upstreams that may carry one message, in the order they
// are tried. Messages with the same Key have the same candidates.
type Route struct {
	Key       string
	Upstreams []config.Upstream
	// keys and sess are the upKey and sessionKey of each of Upstreams.
	keys, sess []string
}

// routeFor returns the route through cands, its keys computed.
func routeFor(cands []config.Upstream) Route {
	r := Route{Upstreams: cands, keys: make([]string, len(cands)), sess: make([]string, len(cands))}
	var b strings.Builder
	for i, up := range cands {
		r.sess[i] = sessionKey(up)
		r.keys[i] = up.Name
		if r.keys[i] == "" {
			r.keys[i] = r.sess[i]
		}
		b.WriteString(r.sess[i])
		b.WriteByte(',')
	}
	r.Key = b.String()
	return r
}

// Single reports whether every message has the same route.
func (u *Upstreams) Single() bool { return u.single }

// Route returns the candidates for a message from sender ("" or "<>" for
// the null sender) queued by uid (whose user name is user).
func (u *Upstreams) Route(sender string, uid int, user string) Route {
	if sender == "<>" {
		sender = ""
	}
	if u.single {
		return u.one
	}
	o := config.RouteOrigin{Sender: sender, UID: uid, User: user}
	if config.HasGroupRoutes(u.routes) {
		o.InGroup = func(g string) bool { return slices.Contains(u.groupsOf(uid, user), g) }
	}
	_, cands := config.SelectRoute(u.list, u.routes, o)
	return routeFor(cands)
}

// routeOf is Route for a queued message.
func (u *Upstreams) routeOf(m *spool.Meta) Route {
	return u.Route(m.Env.Sender, m.Origin.UID, m.Origin.User)
}

// groupsOf returns the names of the groups uid is in (its primary group
// and those that list it), looked up once per UID for the life of u (a
// reload makes a new one).
func (u *Upstreams) groupsOf(uid int, name string) []string {
	u.groupMu.Lock()
	defer u.groupMu.Unlock()
	if g, ok := u.groups[uid]; ok {
		return g
	}
	var names []string
	if acct, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		if ids, err := acct.GroupIds(); err == nil {
			for _, id := range ids {
				if gr, err := user.LookupGroupId(id); err == nil {
					names = append(names, gr.Name)
				}
			}
		}
	}
	if u.groups == nil {
		u.groups = map[int][]string{}
	}
	u.groups[uid] = names
	return names
}

// upKey names an upstream for its circuit breaker: its name, else what
// its sessions are bound to (sessionKey: the address and the account).
// Two accounts at one address are two breakers: a refused login is the
// account's trouble, and must not hold the other account's mail. (The
// key holds a hash of the secret: it is never logged, the name and the
// address are.)
func upKey(up config.Upstream) string {
	if up.Name != "" {
		return up.Name
	}
	return sessionKey(up)
}

// sessionKey identifies what a session is bound to: the upstream's address,
// how it was reached (TLS mode, trust, server name) and the identity it
// presented — user name, mechanisms, the secret itself (providers such as
// SendGrid give every account the same user name and tell them apart by
// the password), the client certificate and the OAuth2 account. A session
// may carry any message whose route holds that key, and only those: mail
// must never go out under another route's account. The secret enters as a
// hash, as the key is compared and kept but never shown.
func sessionKey(up config.Upstream) string {
	h := sha256.New()
	for _, v := range []string{up.TLS, up.CAFile, up.ServerName, up.ClientCert, up.ClientKey, up.Password,
		up.OAuthFlow, up.OAuthTokenURL, up.OAuthClientID, up.OAuthClientSecretFile, up.OAuthRefreshTokenFile,
		strings.Join(up.OAuthScopes, " ")} {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	return relay.Addr(up) + "/" + up.Username + "/" + strings.Join(up.Auth, "+") + "/" + hex.EncodeToString(h.Sum(nil)[:12])
}

// healthReport is what a link learned about one upstream (key: upKey):
// err nil means a session was opened or a transaction got an answer (it
// works), else the upstream's own trouble (relay.Error.UpstreamTrouble).
type healthReport struct {
	key, addr, name string
	err             *relay.Error
}

// link is one worker's way to the upstreams: it holds at most one session
// and sends each message through the first candidate that works.
type link struct {
	ups  *Upstreams
	log  *maillog.Logger
	sess Session
	key  string // sessionKey of sess
	// down holds the upstreams that failed during the current job, with
	// their failure: the job's other messages do not try them again.
	// downBy names the message whose send found each one failing.
	down   map[string]*relay.Error
	downBy map[string]string
	// health collects the reports of the current job.
	health []healthReport
	// jobDown is the scheduler's last failure of each upstream its
	// breaker holds (job.down).
	jobDown map[string]*relay.Error
}

func (l *link) close() {
	if l.sess != nil {
		l.sess.Close()
		l.sess = nil
	}
}

// report records what a send learned about up, whose breaker key
// (upKey, computed once per route: route.keys) is key.
func (l *link) report(up config.Upstream, key string, err *relay.Error) {
	l.health = append(l.health, healthReport{key: key, addr: relay.Addr(up), name: up.Name, err: err})
	if err != nil {
		if l.down == nil {
			l.down = map[string]*relay.Error{}
		}
		l.down[key] = err
	}
}

// open returns a session with up: the cached one when it is bound to up
// and alive (reused true), else a new one. waiting (relay.Message.Waiting),
// when set, is called before the cached session is closed and before a
// dial: the caller's work held for the upstream's replies (the outcome of
// the message sent before) is held neither for a dial, which can take its
// whole timeout, nor for the QUIT of the session left.
func (l *link) open(ctx context.Context, up config.Upstream, key string, waiting func()) (s Session, reused bool, err *relay.Error) {
	if l.sess != nil && l.key == key && l.sess.Alive() {
		return l.sess, true, nil
	}
	if waiting != nil {
		waiting()
	}
	l.close()
	s, derr := l.ups.dial(ctx, up)
	if derr != nil {
		re := asRelayError(derr)
		if re.Class == relay.AuthFailure {
			// Loud, once per failed login (not once per message): a
			// rotated password must be noticed, and never bounces mail.
			l.log.AuthFailed("", relay.Addr(up), errReply(re), maillog.Why{Cause: re.Cause, Fix: re.Fix})
		}
		return nil, false, re
	}
	l.sess, l.key = s, key
	return s, false, nil
}

// send delivers m through the first of cands that takes it, skipping
// those in skip and those that failed earlier in this job:
//
//   - a cached session bound to the candidate is reused; if it turns out
//     dead before the data (the upstream closed it: relay.DeadSession),
//     the message is sent again at once on a fresh connection;
//   - a failure that is the upstream's own trouble (relay.FailOver:
//     connect, TLS, greeting, AUTH, 421, 4.3.x/4.4.x before the data) is
//     reported and the next candidate tried;
//   - anything else (delivered, or refused for the message or a
//     recipient) is the result.
//
// upstreamFault is true when no candidate could be used: the failure is
// the upstreams', not the message's. notTried, when its Why is not "",
// says why m was not sent at all: every candidate had failed earlier in
// the job or was held by its breaker (the result then carries that
// failure's class, stage, status, cause and fix, but not the upstream's
// reply, which was no answer to m: notTriedErr). It is false when a candidate
// answered the message's own transaction with a 4xx (relay.RefusedMessage),
// even one that fails over: that attempt was made, and is the message's;
// that candidate is reported working (its breaker does not open, and the
// job's other messages are sent to it).
func (l *link) send(ctx context.Context, route Route, skip map[string]bool, m *relay.Message) (res *relay.Result, upstreamFault bool, nt notTried) {
	cands := route.Upstreams
	// refusal: the last result in which an upstream answered the
	// message's own transaction (RefusedMessage). It is the message's
	// outcome when a later candidate could not be reached: that reply,
	// not a connection error, is why the message waits for its retry.
	var refusal *relay.Result
	for i, up := range cands {
		key := route.keys[i]
		if skip[key] || l.down[key] != nil {
			continue
		}
		addr := relay.Addr(up)
		s, reused, err := l.open(ctx, up, route.sess[i], m.Waiting)
		if err == nil {
			res = s.Send(ctx, m)
			if reused && relay.DeadSession(res) && ctx.Err() == nil {
				// The upstream closed the session while it was idle
				// (a restart, an idle timeout): nothing of the message
				// reached it, so try again at once on a new connection.
				l.close()
				if s, _, err = l.open(ctx, up, route.sess[i], m.Waiting); err == nil {
					res = s.Send(ctx, m)
				}
			}
		}
		if err != nil {
			res = failedResult(m, addr, err)
		}
		if res.Upstream == "" {
			res.Upstream = addr
		}
		if err == nil && !relay.FailOver(res) {
			l.report(up, key, nil)
			return res, false, notTried{}
		}
		if err == nil && relay.RefusedMessage(res) {
			// The upstream answered the message's own transaction: the
			// refusal is the message's (a sender it rate-limits or
			// greylists), and the upstream works. As in Postfix, where
			// only a connection-level failure throttles a site, its
			// breaker stays closed and the job's other messages still go
			// to it; this message may still fail over.
			refusal = res
			l.report(up, key, nil)
		} else {
			l.report(up, key, res.Err)
			if l.downBy == nil {
				l.downBy = map[string]string{}
			}
			l.downBy[key] = m.ID
		}
		if m.Waiting != nil {
			// Not held for the QUIT of a session still alive.
			m.Waiting()
		}
		l.close()
		if ctx.Err() != nil {
			break
		}
	}
	if refusal != nil {
		if !relay.RefusedMessage(res) {
			res = refusal
		}
		return res, false, notTried{}
	}
	if res != nil {
		return res, true, notTried{}
	}
	if len(cands) == 0 {
		e := &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: errors.New("no upstream"),
			Cause: "no upstream may carry mail from this sender", Fix: "add an [[upstream]] without sender_domains, or one for this sender's domain"}
		return failedResult(m, "", e), false, notTried{}
	}
	// Every candidate is down: this job found it (the last failure is
	// the reason), or the circuit breaker says so. m was not sent.
	for i := len(cands) - 1; i >= 0; i-- {
		key := route.keys[i]
		if e := l.down[key]; e != nil {
			addr := relay.Addr(cands[i])
			why := "not tried: " + addr + " failed earlier in this delivery batch"
			log := why
			if id := l.downBy[key]; id != "" {
				log += ", on message " + id
			}
			return failedResult(m, addr, notTriedErr(e, why)), true, notTried{Why: why, Log: log + " (" + errReply(e) + ")"}
		}
	}
	for i := len(cands) - 1; i >= 0; i-- {
		if e := l.jobDown[route.keys[i]]; e != nil {
			addr := relay.Addr(cands[i])
			why := "not tried: " + addr + " is held by its circuit breaker"
			return failedResult(m, addr, notTriedErr(e, why)), true, notTried{Why: why, Log: why + " (" + errReply(e) + ")"}
		}
	}
	e := &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: errors.New("every upstream is down"),
		Cause: "every upstream for this message failed recently; waiting for one to come back"}
	why := "not tried: every upstream for this message failed recently"
	return failedResult(m, "", e), true, notTried{Why: why, Log: why}
}

// notTried says why a message was not sent at all (link.send). Why is
// the message's own: its record (mailq, relayd queue show), its delay
// notice and its bounce say it. Log is the mail log's reason
// (tried=no), which adds the other message the upstream failed on and
// the upstream's reply to it: those belong to that message's account,
// which may be another user's, and only the administrator reads the log.
type notTried struct{ Why, Log string }

// notTriedErr is the failure of a message not sent because its upstream
// failed on another message (e): e's class, stage, enhanced status,
// cause and fix (about the upstream, not a message), with why as its
// text instead of the upstream's reply, which was an answer to the other
// message and may name its addresses.
func notTriedErr(e *relay.Error, why string) *relay.Error {
	return &relay.Error{Class: e.Class, Stage: e.Stage, Enhanced: e.Enhanced, Cause: e.Cause, Fix: e.Fix, Err: errors.New(why)}
}

func failedResult(m *relay.Message, addr string, e *relay.Error) *relay.Result {
	res := &relay.Result{Upstream: addr, Err: e, Rcpts: make([]relay.RcptResult, len(m.To))}
	for i, to := range m.To {
		res.Rcpts[i] = relay.RcptResult{Rcpt: to, Err: e}
	}
	return res
}

func asRelayError(err error) *relay.Error {
	var re *relay.Error
	if errors.As(err, &re) {
		return re
	}
	return &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: err}
}

// SettingsFrom builds the queue settings for cfg (secrets already loaded).
func SettingsFrom(cfg *config.Config, opts relay.Options) Settings {
	return Settings{
		Retry:       cfg.Queue.Retry,
		Lifetime:    cfg.Queue.Lifetime,
		DelayNotice: cfg.Queue.DelayNotice,
		Concurrency: cfg.Queue.Concurrency,
		Hostname:    opts.Hostname,
		Upstreams:   NewUpstreams(cfg.Upstreams, opts, nil).WithRoutes(cfg.Routes),
	}
}
