package maillog

import (
	"log/slog"
	"strings"
	"time"
)

// The events relayd logs, one method each. Each writes its keys in a
// fixed order (tests in the packages that emit them pin the lines); an
// optional value that is empty is left out. The "more" attributes of the
// generic events (error, warning, listen, ...) are written last, in
// their order.

// str, num and opt build attributes.
func str(k, v string) slog.Attr     { return slog.String(k, v) }
func num(k string, v int) slog.Attr { return slog.Int(k, v) }

// opt appends k=v to as when v is not empty.
func opt(as []slog.Attr, kv ...string) []slog.Attr {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			as = append(as, str(kv[i], kv[i+1]))
		}
	}
	return as
}

// errText is err's text ("" for nil).
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// withErr is reason, then error when err is not nil, then more.
func withErr(pre []slog.Attr, reason string, err error, more []slog.Attr) []slog.Attr {
	as := append(pre, str("reason", reason))
	if err != nil {
		as = append(as, str("error", err.Error()))
	}
	return append(as, more...)
}

// Error logs event=error: something relayd could not do. reason says
// what, err why (nil: left out).
func (l *Logger) Error(reason string, err error, more ...slog.Attr) {
	l.emit(slog.LevelError, "error", withErr(nil, reason, err, more)...)
}

// MessageError logs event=error about queued message id.
func (l *Logger) MessageError(id, reason string, err error, more ...slog.Attr) {
	l.emit(slog.LevelError, "error", withErr([]slog.Attr{str("id", id)}, reason, err, more)...)
}

// FileError logs event=error about maildrop file name.
func (l *Logger) FileError(file, reason string, err error, more ...slog.Attr) {
	l.emit(slog.LevelError, "error", withErr([]slog.Attr{str("file", file)}, reason, err, more)...)
}

// Warning logs event=warning: relayd goes on, with less than it should.
func (l *Logger) Warning(reason string, err error, more ...slog.Attr) {
	l.emit(slog.LevelWarn, "warning", withErr(nil, reason, err, more)...)
}

// MessageWarning logs event=warning about queued message id.
func (l *Logger) MessageWarning(id, reason string, err error, more ...slog.Attr) {
	l.emit(slog.LevelWarn, "warning", withErr([]slog.Attr{str("id", id)}, reason, err, more)...)
}

// ConfigWarning logs event=config-warning: a configuration problem
// relayd works around.
func (l *Logger) ConfigWarning(err error) {
	l.emit(slog.LevelWarn, "config-warning", str("error", errText(err)))
}

// SubmitError logs event=submit-error: a submission socket connection
// that ended in err.
func (l *Logger) SubmitError(err error) {
	l.emit(slog.LevelError, "submit-error", str("error", errText(err)))
}

// Recover logs event=recover: what starting relayd did to the queue.
func (l *Logger) Recover(action string) {
	l.emit(slog.LevelInfo, "recover", str("action", action))
}

// Start logs event=start: relayd serves.
func (l *Logger) Start(pid int, spool, config string, upstreams int, hostname string) {
	l.emit(slog.LevelInfo, "start", num("pid", pid), str("spool", spool), str("config", config),
		num("upstreams", upstreams), str("hostname", hostname))
}

// Stop logs event=stop: relayd drains after signal, for up to drain.
func (l *Logger) Stop(signal string, drain time.Duration) {
	l.emit(slog.LevelInfo, "stop", str("signal", signal), str("drain", drain.String()))
}

// StopAbort logs event=stop with the reason relayd cuts the drain short.
func (l *Logger) StopAbort(reason string) {
	l.emit(slog.LevelWarn, "stop", str("reason", reason))
}

// Stopped logs event=stopped: relayd exits.
func (l *Logger) Stopped(pid int) {
	l.emit(slog.LevelInfo, "stopped", num("pid", pid))
}

// Reloaded logs event=reload status=ok: the configuration at config is in
// force; needsRestart names the keys that take a restart.
func (l *Logger) Reloaded(config string, upstreams int, needsRestart []string) {
	as := []slog.Attr{str("status", "ok"), str("config", config), num("upstreams", upstreams)}
	if len(needsRestart) > 0 {
		as = append(as, str("needs_restart", strings.Join(needsRestart, ",")))
	}
	l.emit(slog.LevelInfo, "reload", as...)
}

// ReloadRefused logs event=reload status=refused: the new configuration
// is wrong (msg), the one from kept stays.
func (l *Logger) ReloadRefused(msg, kept string) {
	l.emit(slog.LevelError, "reload", str("status", "refused"), str("error", msg), str("kept", kept))
}

// MetricsListen logs event=metrics: the metrics endpoint's address.
func (l *Logger) MetricsListen(addr string) {
	l.emit(slog.LevelInfo, "metrics", str("listen", addr))
}

// Listening logs event=listen: the SMTP listener serves addr, a socket
// from systemd or one it bound (from).
func (l *Logger) Listening(addr, from string) {
	l.emit(slog.LevelInfo, "listen", str("addr", addr), str("from", from))
}

// ListenUnavailable logs event=listen status=unavailable: addr could not
// be bound (err); fix is optional.
func (l *Logger) ListenUnavailable(addr string, err error, fix string) {
	as := []slog.Attr{str("status", "unavailable"), str("addr", addr), str("error", errText(err))}
	l.emit(slog.LevelWarn, "listen", opt(as, "fix", fix)...)
}

// ListenStatus logs event=listen with the listener's status (disabled,
// none) and why; fix is optional.
func (l *Logger) ListenStatus(status, reason, fix string) {
	l.emit(slog.LevelWarn, "listen", opt([]slog.Attr{str("status", status), str("reason", reason)}, "fix", fix)...)
}

// ListenProcessLookup logs event=listen process_lookup=mode: how far the
// listener can find its clients' processes, and why; fix is optional.
func (l *Logger) ListenProcessLookup(mode, reason, fix string) {
	l.emit(slog.LevelWarn, "listen", opt([]slog.Attr{str("process_lookup", mode), str("reason", reason)}, "fix", fix)...)
}

// ListenTLSOn logs event=listen tls=on: STARTTLS is offered with cert.
func (l *Logger) ListenTLSOn(cert string) {
	l.emit(slog.LevelInfo, "listen", str("tls", "on"), str("cert", cert))
}

// ListenTLSOff logs event=listen tls=off: STARTTLS is not offered, with
// the certificate's load error (nil: none configured), the reason and the
// fix (optional).
func (l *Logger) ListenTLSOff(err error, reason, fix string) {
	as := []slog.Attr{str("tls", "off")}
	if err != nil {
		as = append(as, str("error", err.Error()))
	}
	as = append(as, str("reason", reason))
	l.emit(slog.LevelWarn, "listen", opt(as, "fix", fix)...)
}

// Pickup is what event=pickup says of a message pickup queued.
type Pickup struct {
	ID     string
	UID    int
	User   string
	Script string
	From   string
	Rcpts  int
	Size   int64
	Via    string // the door: maildrop, socket, smtp
	Caller string // optional
	// The SMTP listener's client (Via "smtp" only).
	Client    string
	PID       int // 0: no process found
	Process   string
	AuthClaim string // optional
	Ignored   []string
}

// Pickup logs event=pickup: a message entered the queue.
func (l *Logger) Pickup(p Pickup) {
	// Room for every attribute: no allocation to grow it.
	as := append(make([]slog.Attr, 0, 16), str("id", p.ID), num("uid", p.UID), str("user", p.User), str("script", p.Script),
		str("from", p.From), num("nrcpt", p.Rcpts), slog.Int64("size", p.Size), str("via", p.Via))
	as = opt(as, "caller", p.Caller)
	if p.Via == "smtp" {
		as = append(as, str("client", p.Client))
		if p.PID > 0 {
			as = append(as, num("pid", p.PID), str("process", p.Process))
		}
		as = opt(as, "auth_claim", p.AuthClaim)
	}
	if len(p.Ignored) > 0 {
		as = append(as, str("ignored", strings.Join(p.Ignored, " ")))
	}
	// The line may wait (emitLazy): nobody waits for it from maildrop/
	// (sendmail's caller was told when the file was written), and the
	// doors whose client is told (the SMTP listener, the submission
	// socket: pickup.Pickup.Store) write it out (WriteOut) before the
	// answer, once for all the messages of a group commit instead of a
	// write(2) for each.
	l.emitLazy(slog.LevelInfo, "pickup", as...)
}

// ForgedTrace logs event=forged-trace: trace fields a caller wrote were
// renamed (action).
func (l *Logger) ForgedTrace(id string, uid int, user string, fields []string, action string) {
	l.emit(slog.LevelWarn, "forged-trace", str("id", id), num("uid", uid), str("user", user),
		str("fields", strings.Join(fields, ",")), str("action", action))
}

// PickupDuplicate logs event=pickup-duplicate: maildrop file id was
// already queued (in state).
func (l *Logger) PickupDuplicate(id, state string) {
	l.emit(slog.LevelInfo, "pickup-duplicate", str("id", id), str("state", state),
		str("reason", "already queued; maildrop copy removed"))
}

// UIDMismatch logs event=uid-mismatch: the maildrop file's owner and the
// UID its header claims differ; the owner is used.
func (l *Logger) UIDMismatch(id string, fileUID, headerUID int) {
	l.emit(slog.LevelWarn, "uid-mismatch", str("id", id), num("file_uid", fileUID), num("header_uid", headerUID),
		num("used", fileUID))
}

// TempRemoved logs event=temp-removed: a leftover temporary maildrop file
// of uid, age old, was removed.
func (l *Logger) TempRemoved(file string, uid int, age time.Duration) {
	l.emit(slog.LevelInfo, "temp-removed", str("file", file), num("uid", uid), str("age", age.String()))
}

// QuarantineFile logs event=quarantine: maildrop file name was moved to
// to, for reason.
func (l *Logger) QuarantineFile(file, reason, to string, more ...slog.Attr) {
	l.emit(slog.LevelError, "quarantine", append([]slog.Attr{str("file", file), str("reason", reason), str("to", to)}, more...)...)
}

// QuarantineMessage logs event=quarantine: queued message id was moved to
// to, for reason.
func (l *Logger) QuarantineMessage(id, reason, to string) {
	l.emit(slog.LevelError, "quarantine", str("id", id), str("reason", reason), str("to", to))
}

// Rejection is a maildrop message pickup refused to queue.
type Rejection struct {
	ID    string
	UID   int
	User  string
	From  string
	Rcpts int
	Cause string
	Fix   string
}

func (r *Rejection) attrs() []slog.Attr {
	return []slog.Attr{str("id", r.ID), num("uid", r.UID), str("user", r.User), str("from", r.From),
		num("nrcpt", r.Rcpts), str("cause", r.Cause), str("fix", r.Fix)}
}

// Rejected logs event=rejected: what became of r (action), and the
// bounce's queue ID (dsn, "" for none).
func (l *Logger) Rejected(r Rejection, action, dsn string) {
	l.emit(slog.LevelWarn, "rejected", opt(append(r.attrs(), str("action", action)), "dsn", dsn)...)
}

// RejectionError logs event=error: r's bounce could not be queued.
func (l *Logger) RejectionError(r Rejection, reason string, err error) {
	l.emit(slog.LevelError, "error", withErr(r.attrs(), reason, err, nil)...)
}

// PolicyDecision is a policy decision other than accept, as event=policy
// writes it.
type PolicyDecision struct {
	ID     string
	UID    int
	User   string // the account
	Action string // hold, defer, refuse
	Limit  string // the limit tripped, or "frozen"
	// Of a tripped limit (Limit not "frozen"):
	Max, Got int64
	Source   string
	Until    time.Time // when it fits again; zero: never (a static limit)
}

// Policy logs event=policy: the policy did not simply accept a message.
func (l *Logger) Policy(d PolicyDecision) {
	as := []slog.Attr{str("id", d.ID), num("uid", d.UID), str("user", d.User), str("action", d.Action)}
	if d.Limit != "" {
		as = append(as, str("limit", d.Limit))
		if d.Limit != "frozen" {
			as = append(as, slog.Int64("max", d.Max), slog.Int64("got", d.Got), str("source", d.Source))
			if !d.Until.IsZero() {
				as = append(as, slog.Time("until", d.Until))
			}
		}
	}
	l.emit(slog.LevelWarn, "policy", as...)
}

// LimitTripped logs event=limit-tripped: an account's first trip of an
// episode (the policy's notice as attributes), the admin the notice goes
// to (noticeTo, "" for none) and what became of it (notice: its queue ID,
// or why it was not sent; "" when there is no admin to tell).
func (l *Logger) LimitTripped(trip []slog.Attr, noticeTo, notice string) {
	as := append(append([]slog.Attr(nil), trip...), str("notice_to", noticeTo))
	l.emit(slog.LevelWarn, "limit-tripped", opt(as, "notice", notice)...)
}

// Freeze logs event=freeze: byUID froze account (uid); held messages.
func (l *Logger) Freeze(account string, uid, byUID, held int) {
	l.emit(slog.LevelWarn, "freeze", str("account", account), num("uid", uid), num("by_uid", byUID), num("held", held))
}

// Thaw logs event=thaw: byUID thawed account (uid).
func (l *Logger) Thaw(account string, uid, byUID int) {
	l.emit(slog.LevelInfo, "thaw", str("account", account), num("uid", uid), num("by_uid", byUID))
}

// PolicyRetime logs event=policy-retime: a reload or a restart raised a
// rate of account (uid), and retimed of the messages the policy had
// deferred got earlier times: due of them at once, the last at last
// (left out when all are due).
func (l *Logger) PolicyRetime(account string, uid, retimed, due int, last time.Time) {
	as := []slog.Attr{str("account", account), num("uid", uid), num("retimed", retimed), num("due", due)}
	if due < retimed {
		as = append(as, slog.Time("last", last))
	}
	l.emit(slog.LevelInfo, "policy-retime", as...)
}

// Flush logs event=flush: uid made deferred messages due now.
func (l *Logger) Flush(uid, deferred int) {
	l.emit(slog.LevelInfo, "flush", num("uid", uid), num("deferred", deferred))
}

// Hold logs event=hold: byUID held message id.
func (l *Logger) Hold(id string, byUID int) { l.admin("hold", id, byUID) }

// Release logs event=release: byUID released message id.
func (l *Logger) Release(id string, byUID int) { l.admin("release", id, byUID) }

// Delete logs event=delete: byUID deleted message id.
func (l *Logger) Delete(id string, byUID int) { l.admin("delete", id, byUID) }

func (l *Logger) admin(verb, id string, byUID int) {
	l.emit(slog.LevelInfo, verb, str("id", id), num("by_uid", byUID))
}

// Status is a recipient's outcome in event=delivery.
type Status string

// The outcomes of a delivery attempt for one recipient.
const (
	Sent     Status = "sent"
	Deferred Status = "deferred"
	Bounced  Status = "bounced"
	Failed   Status = "failed" // failed for good, and no notice sent (a bounce, or NOTIFY without FAILURE)
)

// Why explains a failure: the SMTP stage, the cause and the fix.
type Why struct {
	Stage, Cause, Fix string
}

// Delivery logs event=delivery status=sent: rcpt accepted by upstream
// with reply; upstreamID is the upstream's queue ID ("" when it gave none,
// written all the same).
func (l *Logger) Delivery(id, rcpt, upstream, reply, upstreamID string) {
	l.emitLazy(slog.LevelInfo, "delivery", str("id", id), str("to", rcpt), str("upstream", upstream),
		str("status", string(Sent)), str("reply", reply), str("upstream_id", upstreamID))
}

// DeliveryFailed logs event=delivery for a recipient not sent: status,
// the reply, the reason (optional) and why.
func (l *Logger) DeliveryFailed(id, rcpt, upstream string, status Status, reply, reason string, why Why) {
	l.deliveryFailed(id, rcpt, upstream, status, reply, reason, why, false)
}

// DeliveryNotTried is DeliveryFailed for a recipient of a message that
// was not sent at all (its upstreams failed on another message of the
// batch, or are held by their breakers): the line ends with tried=no, so
// that neither a reader nor the metrics take it for the upstream's answer.
func (l *Logger) DeliveryNotTried(id, rcpt, upstream string, status Status, reply, reason string, why Why) {
	l.deliveryFailed(id, rcpt, upstream, status, reply, reason, why, true)
}

func (l *Logger) deliveryFailed(id, rcpt, upstream string, status Status, reply, reason string, why Why, notTried bool) {
	as := []slog.Attr{str("id", id), str("to", rcpt), str("upstream", upstream), str("status", string(status)), str("reply", reply)}
	as = opt(as, "reason", reason, "stage", why.Stage, "cause", why.Cause, "fix", why.Fix)
	if notTried {
		as = append(as, str("tried", "no"))
	}
	l.emit(slog.LevelWarn, "delivery", as...)
}

// AuthFailed logs event=auth-failed: upstream refused relayd's login
// (reply). id is the message that was to be sent ("": the login alone).
func (l *Logger) AuthFailed(id, upstream, reply string, why Why) {
	as := opt(nil, "id", id)
	as = append(as, str("upstream", upstream), str("reply", reply))
	l.emit(slog.LevelError, "auth-failed", opt(as, "cause", why.Cause, "fix", why.Fix)...)
}

// Deferred logs event=deferred: message id waits for attempt number
// attempts+1 at next, for rcpts recipients, after reason.
func (l *Logger) Deferred(id string, attempts int, next time.Time, rcpts int, reason string, why Why) {
	as := []slog.Attr{str("id", id), num("attempts", attempts), slog.Time("next", next), num("nrcpt", rcpts), str("reason", reason)}
	l.emit(slog.LevelInfo, "deferred", opt(as, "cause", why.Cause, "fix", why.Fix)...)
}

// Bounced logs event=bounced: a bounce (dsn) for rcpts recipients of id
// was queued to to.
func (l *Logger) Bounced(id, dsn, to string, rcpts int) {
	l.emit(slog.LevelWarn, "bounced", str("id", id), str("dsn", dsn), str("to", to), num("nrcpt", rcpts))
}

// DelayNotice logs event=delay-notice: a delay notice (dsn) for rcpts
// recipients of id, waiting since waited, was queued to to.
func (l *Logger) DelayNotice(id, dsn, to string, rcpts int, waited string) {
	l.emit(slog.LevelInfo, "delay-notice", str("id", id), str("dsn", dsn), str("to", to), num("nrcpt", rcpts), str("waited", waited))
}

// Failed logs event=failed: undeliverable message id (a bounce, from
// "<>") was kept, for reason.
func (l *Logger) Failed(id, from string, rcpts int, reason string) {
	l.emit(slog.LevelError, "failed", str("id", id), str("from", from), num("nrcpt", rcpts), str("reason", reason))
}

// Removed logs event=removed: message id is done, with sent and bounced
// recipients.
func (l *Logger) Removed(id string, sent, bounced int) {
	l.emitLazy(slog.LevelInfo, "removed", str("id", id), num("sent", sent), num("bounced", bounced))
}

// UpstreamUp logs event=upstream-up: upstream addr (name, optional)
// answers again after downFor and failures failed attempts.
func (l *Logger) UpstreamUp(addr, name string, downFor time.Duration, failures int) {
	as := opt([]slog.Attr{str("upstream", addr)}, "name", name)
	l.emit(slog.LevelInfo, "upstream-up", append(as, str("down_for", downFor.String()), num("failures", failures))...)
}

// UpstreamDown logs event=upstream-down: upstream addr (name, optional)
// failed (reason, why); it is tried again in retryIn.
func (l *Logger) UpstreamDown(addr, name string, retryIn time.Duration, reason string, why Why) {
	as := opt([]slog.Attr{str("upstream", addr)}, "name", name)
	as = append(as, str("retry_in", retryIn.String()), str("reason", reason))
	l.emit(slog.LevelWarn, "upstream-down", opt(as, "cause", why.Cause, "fix", why.Fix)...)
}

// SMTPRefused logs event=smtp-refused: the SMTP listener refused client's
// connection, for reason.
func (l *Logger) SMTPRefused(client, reason string, more ...slog.Attr) {
	l.emit(slog.LevelWarn, "smtp-refused", append([]slog.Attr{str("client", client), str("reason", reason)}, more...)...)
}

// SMTPRefusedN logs event=smtp-refused for refused connections refused
// for one reason since the last such line.
func (l *Logger) SMTPRefusedN(reason string, refused int, more ...slog.Attr) {
	l.emit(slog.LevelWarn, "smtp-refused", append([]slog.Attr{str("reason", reason), num("refused", refused)}, more...)...)
}

// SMTPError logs event=smtp-error: an error of the SMTP listener's server
// outside a session (a TLS handshake that failed, ...).
func (l *Logger) SMTPError(err string) {
	l.emit(slog.LevelWarn, "smtp-error", str("error", err))
}

// SMTPSessionError logs event=smtp-error: client's session (uid, user,
// envelope sender from) was refused err; more comes before the error.
func (l *Logger) SMTPSessionError(client string, uid int, user, from, err string, more ...slog.Attr) {
	as := []slog.Attr{str("client", client), num("uid", uid), str("user", user), str("from", from)}
	as = append(as, more...)
	l.emit(slog.LevelWarn, "smtp-error", append(as, str("error", err))...)
}

// ControlAcceptFailed logs event=error: the control socket's accept
// failed failures times since the last line; it backs off.
func (l *Logger) ControlAcceptFailed(err error, failures int) {
	l.Error("control socket accept failed; backing off", err, num("failures", failures))
}

// ControlBusy logs event=warning: refused control socket peers since the
// last line, then the last one's key/value pairs.
func (l *Logger) ControlBusy(refused int, peer ...any) {
	l.Warning("control socket busy: peer refused", nil, append([]slog.Attr{num("refused", refused)}, KV(peer...)...)...)
}

// FlushThrottled logs event=flush: uid's flushes came too soon after its
// last and did nothing, refused of them since the last such line (the
// control socket logs them at most once a minute per user).
func (l *Logger) FlushThrottled(uid, refused int) {
	l.emit(slog.LevelInfo, "flush", num("uid", uid), num("deferred", 0), str("throttled", "one flush a minute per user"), num("refused", refused))
}

// Recovered logs event=recovered: what failed and was reported works
// again (reason says what).
func (l *Logger) Recovered(reason string) {
	l.emit(slog.LevelInfo, "recovered", str("reason", reason))
}

// SMTPRefusedRepeat logs event=smtp-refused for connections refused for
// one cause since the last such line: the last one's details (client,
// reason), then how many were refused.
func (l *Logger) SMTPRefusedRepeat(last []slog.Attr, refused int) {
	l.emit(slog.LevelWarn, "smtp-refused", append(append([]slog.Attr(nil), last...), num("refused", refused))...)
}

// SMTPConnErrors logs event=smtp-error for connections that ended in an
// error since the last such line: the last one's details, then how many.
func (l *Logger) SMTPConnErrors(last []slog.Attr, errors int) {
	l.emit(slog.LevelWarn, "smtp-error", append(append([]slog.Attr(nil), last...), num("errors", errors))...)
}
