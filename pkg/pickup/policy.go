package pickup

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// The per-account policy at pickup.
//
// Every door (the maildrop, the submission socket, the SMTP listener)
// ends in enqueue, so every message passes the gate once, on the kernel's
// UID, with its final envelope (aliases expanded) and header (From:
// rewritten or added), after its body is written but before it is
// committed. The gate's verdict picks the state it is queued in:
//
//   - accept: incoming, as usual;
//   - hold (the account's action, or a frozen account): held, with the
//     reason in the delivery record, for relayd queue release/delete;
//   - defer: deferred with the time the rate allows, which the queue is
//     told (Pickup.Deferred) once the message is durable;
//   - refuse: not queued. A caller still connected (the submission socket,
//     SMTP) is answered at once: sendmail exits 77 with the line saying
//     which limit. A maildrop file was already accepted by sendmail, so
//     its refusal is a bounce to the envelope sender with the same line
//     (Pickup.Reject) — never a silent loss.

// admit passes q (its header h, size bytes) through the gate. It returns
// the state to queue it in and its delivery record (nil: the usual
// empty one in incoming) and how to take back what the gate counted
// should the message not be queued after all, or the refusal.
func (p *Pickup) admit(q *spool.Meta, h *header, size int64) (string, *spool.Delivery, func(), *RejectError) {
	g := p.Gate
	pm := &policy.Message{
		ID:      q.ID,
		Account: policy.Account{UID: q.Origin.UID, User: q.Origin.User},
		Sender:  q.Env.Sender,
		From:    fromAddrs(h),
		Rcpts:   len(q.Env.Recipients),
		Size:    size,
		Script:  q.Origin.Script,
		Subject: sampleField(h, "Subject"),
		To:      sampleField(h, "To"),
		// The envelope's: the notice shows them.
		RcptAddrs: q.Env.Recipients,
	}
	l := g.Limits(pm)
	d := g.Admit(pm, &l)
	undo := func() { g.Undo(pm, &l, d) }
	// The held queue is capped per account (max_held): a message the
	// verdict would hold beyond it is refused instead, so that one
	// account cannot fill the spool's disk with held mail.
	held := 0
	full := d.Action == policy.Hold && l.MaxHeld > 0
	if full {
		held = p.Queue.CountOf(spool.Held, q.Origin.UID)
		full = held >= l.MaxHeld
	}
	if d.Action != policy.Accept {
		pd := maillog.PolicyDecision{ID: q.ID, UID: q.Origin.UID, User: pm.Account.Name(), Action: string(d.Action)}
		switch {
		case full:
			pd.Action, pd.Limit, pd.Max, pd.Got, pd.Source = string(policy.Refuse), "max_held", int64(l.MaxHeld), int64(held), l.Source["max_held"]
		case d.Frozen:
			pd.Limit = "frozen"
		case d.Violation != nil:
			v := d.Violation
			pd.Limit, pd.Max, pd.Got, pd.Source = v.Limit, v.Max, v.Got, v.Source
			if !v.Static {
				pd.Until = v.Until
			}
		}
		p.Log.Policy(pd)
	}
	if full {
		undo()
		return "", nil, nil, errHeldFull(pm.Account.Name(), held, l.MaxHeld)
	}
	switch d.Action {
	case policy.Hold:
		why := "frozen: relayd queue freeze --user " + pm.Account.Name() + " (relayd queue thaw to undo)"
		if !d.Frozen {
			why = d.Violation.Text()
		}
		return spool.Held, &spool.Delivery{Reason: "held by policy: " + why}, undo, nil
	case policy.Defer:
		return spool.Deferred, &spool.Delivery{Next: d.At, Paced: true, Reason: d.Violation.Deferred(d.At)}, undo, nil
	case policy.Refuse:
		return "", nil, nil, errPolicy(d.Violation)
	}
	return spool.Incoming, nil, undo, nil
}

// errPolicy is the RejectError of a message the policy refuses.
func errPolicy(v *policy.Violation) *RejectError {
	fix := "ask the administrator of this host: the limit is set in [policy] of mailshim.conf"
	switch v.Limit {
	case "from_domains":
		fix = "send From: an address in a domain this account may use, or ask the administrator to add the domain to from_domains"
	case "max_recipients":
		fix = "send to fewer recipients per message (split the list), or ask the administrator to raise max_recipients"
	case "max_size":
		fix = "send a smaller message (link to large files instead of attaching them), or ask the administrator to raise max_size"
	default:
		fix = "send again after " + v.Until.UTC().Format(time.RFC3339) + ", more slowly; if this account really sends this much, ask the administrator to raise " + v.Limit
	}
	return &RejectError{
		Code: sysexits.NoPerm, Status: "5.7.1", Cause: v.Error(), Fix: fix,
		Err: v, Temporary: !v.Static,
	}
}

// errHeldFull is the RejectError of a message the policy would hold for
// an account that has max held messages already: EX_CANTCREAT, as for a
// full spool (sendmail exits 73, SMTP 452 4.3.1).
func errHeldFull(account string, held, max int) *RejectError {
	return &RejectError{
		Code: sysexits.CantCreat, Status: "5.3.1",
		Cause: fmt.Sprintf("policy: account %s already has %d held messages, the most allowed (max_held); this one was to be held too and was not stored", account, held),
		Fix:   "ask the administrator to release or delete the account's held mail (relayd queue list --held --user " + account + ") and to find why it sends so much",
		Err:   errors.New("held queue full for this account"),
	}
}

// fromAddrs returns the addresses of the From: fields (all of them, for a
// list, and of every From: field: a message may carry more than one, and
// a reader's program may show any); a value that does not parse is
// returned whole, so that a domain rule refuses it rather than letting it
// by.
func fromAddrs(h *header) []string {
	var out []string
	for i := range h.Fields {
		f := &h.Fields[i]
		if !f.Is("From") {
			continue
		}
		v := f.Value()
		list, err := message.ParseList(v)
		switch {
		case err == nil && len(list) > 0:
			out = append(out, list...)
		default:
			if start, end, ok := addrSpan(v); ok {
				out = append(out, v[start:end])
			} else {
				out = append(out, strings.TrimSpace(v))
			}
		}
	}
	return out
}

// sampleField returns a field's value, cut short, for the admin notice.
func sampleField(h *header, name string) string {
	f, _ := h.Lookup(name)
	if f == nil {
		return ""
	}
	v := f.Value()
	if len(v) > 200 {
		v = v[:200] + "..."
	}
	return v
}

// savePolicy records the gate's counters changed since the last save in
// the queue journal (one line per account, no Sync), just before a
// Queue.Sync (a pickup batch, Store's group commit) that makes them
// durable with the messages they counted: relayd killed or powered off
// after that Sync does not give the accounts their allowance back, and
// the counters cost no file and no fsync of their own. A failure that
// repeats the last one (a full disk) was logged when it began; relayd's
// periodic save retries it.
func (p *Pickup) savePolicy() {
	if p.Gate == nil {
		return
	}
	if err := p.Gate.Engine.Save(false); err != nil && !policy.RepeatedSaveError(err) {
		p.Log.Error("cannot write the policy state (queue journal)", err)
	}
}
