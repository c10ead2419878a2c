package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/spool"
)

// abuse is relayd's per-account policy: the gate pickup applies, the
// freeze/thaw verbs of the control socket, and the admin notice.
type abuse struct {
	gate     *policy.Gate
	qu       *queue.Queue
	pk       *pickup.Pickup
	log      *maillog.Logger
	noticeTo atomic.Pointer[string]
	hostname atomic.Pointer[string]
	stats    *metrics.Stats // relayd stats (saved with the policy's state)
	// policyFailing and statsFailing are set while a state file cannot
	// be written (used by run's goroutine only).
	policyFailing, statsFailing bool
}

// newAbuse loads the policy's state from the queue journal (sq; from
// the former state file in the spool's private queue directory, once)
// and builds the gate from cfg.
func newAbuse(cfg *config.Config, hostname string, pk *pickup.Pickup, sq *spool.Queue, qu *queue.Queue, log *maillog.Logger) (*abuse, error) {
	eng, err := policy.Open(sq, filepath.Join(cfg.Spool, spool.DirQueue, policy.StateFile), nil)
	if eng == nil {
		return nil, err
	}
	if err != nil {
		log.Warning("policy state", err)
	}
	a := &abuse{gate: policy.NewGate(policyRules(cfg), eng), qu: qu, pk: pk, log: log}
	a.gate.OnNotice = a.notice
	a.configure(cfg, hostname)
	pk.Gate = a.gate
	pk.Deferred = qu.Schedule
	qu.Frozen = eng.IsFrozen
	return a, nil
}

// configure applies a (re)loaded configuration (at start too): the
// messages the policy deferred are re-timed first when it raises their
// account's rate (retime).
func (a *abuse) configure(cfg *config.Config, hostname string) {
	p := policyRules(cfg)
	a.retime(p)
	a.gate.SetPolicy(p)
	to := noticeTo(cfg)
	a.noticeTo.Store(&to)
	a.hostname.Store(&hostname)
}

// retime gives the messages the policy deferred (action "defer") that
// still wait the times the rule tables p allow, for each account whose
// rate p raises or removes (policy.Engine.Retime): oldest first, those
// that fit now at once, the rest at the new pace. Their records and the
// account's counters are made durable by one Sync before the queue
// applies the new times (queue.Retime). Lowered rates re-time nothing.
func (a *abuse) retime(p *policy.Policy) {
	var rs []queue.Retiming
	type acct struct {
		name string
		uid  int
	}
	of := map[string]acct{}
	// The accounts' counters, re-timed: committed once the messages'
	// records are written, before the Sync (policy.Engine.Retime).
	var commits []func()
	// The queue is read only for the accounts whose rate p raises.
	raised := a.gate.Raised(p)
	if len(raised) == 0 {
		return
	}
	for uid, ms := range a.qu.PacedByAccount(func(uid int) bool { return raised[uid] }) {
		ac := policy.Account{UID: uid, User: ms[0].User}
		w := make([]policy.Waiting, len(ms))
		for i, m := range ms {
			w[i].Rcpts = m.Rcpts
		}
		slots, commit := a.gate.Retime(p, ac, w)
		if commit != nil {
			commits = append(commits, commit)
		}
		for i, sl := range slots {
			if sl.At.Before(ms[i].Next) {
				rs = append(rs, queue.Retiming{ID: ms[i].ID, At: sl.At, Reason: sl.Reason()})
				of[ms[i].ID] = acct{ac.Name(), uid}
			}
		}
	}
	if len(rs) == 0 {
		return
	}
	applied, err := a.qu.Retime(rs, func() error {
		for _, c := range commits {
			c()
		}
		return a.gate.Engine.Save(true)
	})
	if err != nil {
		a.log.Error("cannot re-time the messages deferred by the policy; they keep their times", err)
	}
	type sum struct {
		retimed, due int
		last         time.Time
	}
	sums := map[acct]*sum{}
	now := time.Now()
	for _, r := range applied {
		k := of[r.ID]
		s := sums[k]
		if s == nil {
			s = &sum{}
			sums[k] = s
		}
		s.retimed++
		if !r.At.After(now) {
			s.due++
		}
		if r.At.After(s.last) {
			s.last = r.At
		}
	}
	for k, s := range sums {
		a.log.PolicyRetime(k.name, k.uid, s.retimed, s.due, s.last)
	}
}

// run records the counters every second while they change (in the
// queue journal, made durable by the queue's next Sync; those of the
// messages stored are recorded before their Sync by pickup), and once
// more, synced, when ctx is done.
func (a *abuse) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.save(true)
			return
		case <-t.C:
			a.save(false)
		}
	}
}

// save records the policy's state in the queue journal and writes the
// stats' state file (see policy.Engine.Save for sync). What cannot be
// written (a full disk) is retried at every save, and logged once when
// that begins and once when it is written again, not at every retry.
func (a *abuse) save(sync bool) {
	err := a.gate.Engine.Save(sync)
	a.policyFailing = a.saveLogged(policyState, a.policyFailing, err, policy.RepeatedSaveError(err))
	if a.stats != nil {
		err := a.stats.Save(sync)
		a.statsFailing = a.saveLogged("stats state file", a.statsFailing, err, a.statsFailing)
	}
}

// policyState names what the policy's saves write, in log lines.
const policyState = "policy state (queue journal)"

// saveLogged logs a failed save of what unless it repeats a failure
// already reported (failing, or repeat), and its first good save after
// failures; it returns whether the save is failing now.
func (a *abuse) saveLogged(what string, failing bool, err error, repeat bool) bool {
	switch {
	case err != nil && !failing && !repeat:
		a.log.Error("cannot write the "+what, err,
			slog.String("hint", "relayd retries every second and logs again when it is written"))
	case err == nil && failing:
		a.log.Recovered(what + " written again")
	}
	return err != nil
}

// handle answers freeze and thaw, and passes every other verb to the
// queue.
func (a *abuse) handle(p control.Peer, verb string, args []string, out io.Writer) error {
	if verb == control.VerbStats {
		asJSON := false
		for _, x := range args {
			if x != "--json" {
				return control.Usagef("unknown option %q (usage: stats [--json])", x)
			}
			asJSON = true
		}
		return a.stats.Write(out, asJSON)
	}
	if verb != control.VerbFreeze && verb != control.VerbThaw {
		return a.qu.Handle(p, verb, args, out)
	}
	o, err := queue.ParseOpts(args)
	if err != nil {
		return err
	}
	if o.UID < 0 {
		return control.Usagef("usage: %s --user U", verb)
	}
	name := queue.AccountName(o.UID)
	freeze := verb == control.VerbFreeze
	changed, err := a.gate.Engine.SetFrozen(o.UID, name, freeze)
	if err != nil {
		// Nothing changed; the run loop's next save retries the rest of
		// the state (and logs its end).
		if !policy.RepeatedSaveError(err) {
			a.log.Error("cannot write the "+policyState, err,
				slog.String("hint", "relayd retries every second and logs again when it is written"))
		}
		return fmt.Errorf("cannot record the %s, so it is not applied: %v", verb, err)
	}
	if freeze {
		n := a.qu.HoldAccount(o.UID, p.UID)
		a.log.Freeze(name, o.UID, p.UID, n)
		was := ""
		if !changed {
			was = " (it already was)"
		}
		fmt.Fprintf(out, "%s: frozen%s: everything new it sends is held; %d waiting message(s) held\n", name, was, n)
		return nil
	}
	a.log.Thaw(name, o.UID, p.UID)
	was := ""
	if !changed {
		was = " (it was not frozen)"
	}
	fmt.Fprintf(out, "%s: thawed%s; its held messages stay held: relayd queue release --user %s (or delete)\n", name, was, name)
	return nil
}

// notice logs the first trip of an episode and sends the admin notice.
func (a *abuse) notice(n *policy.Notice) {
	to := *a.noticeTo.Load()
	trip := maillog.KV(n.LogKV()...)
	host := *a.hostname.Load()
	if to == "" {
		a.log.LimitTripped(trip, to, "")
		return
	}
	body := fmt.Sprintf("From: mailshim <MAILER-DAEMON@%s>\nTo: %s\nSubject: %s\nAuto-Submitted: auto-generated\nContent-Type: text/plain; charset=utf-8\n\n%s",
		host, to, n.Subject(), n.Text())
	me := "mailshim"
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		me = u.Username
	}
	m := &spool.Meta{
		Env:    spool.Envelope{Sender: "<>", Recipients: []string{to}},
		Origin: spool.Origin{UID: os.Getuid(), GID: os.Getgid(), User: me, Via: "notice"},
	}
	id, err := a.pk.EnqueueOwn(m, strings.NewReader(body))
	if err != nil {
		a.log.LimitTripped(trip, to, "not sent: "+err.Error())
		return
	}
	a.log.LimitTripped(trip, to, id)
}

// pickupHostname is the host name pickup uses for cfg (see
// pickup.NewRewriter).
func pickupHostname(cfg *config.Config) string {
	if cfg.Hostname != "" {
		return cfg.Hostname
	}
	return config.DefaultHostname()
}
