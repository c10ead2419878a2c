package queue

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Entry is one queued message as listed.
type Entry struct {
	ID    string
	State string
	Meta  *spool.Meta
	Del   *spool.Delivery
}

// eachEntry calls fn for each queued message whose UID keep accepts (all
// when keep is nil), oldest first, and returns how many. Only those are
// decoded in full, one at a time (nothing but the IDs is held for the
// whole queue): the UID is the one the queue's index records with each
// message, so a user's mailq over a large queue costs a listing of the
// index and their own messages, not the whole queue.
func (q *Queue) eachEntry(keep func(uid int) bool, fn func(Entry)) int {
	type ref struct{ id, state string }
	var refs []ref
	for _, s := range spool.States {
		ids, err := q.sp.List(s)
		if err != nil {
			continue
		}
		for _, id := range ids {
			refs = append(refs, ref{id, s})
		}
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].id < refs[j].id })
	n := 0
	for _, r := range refs {
		id, s := r.id, r.state
		if keep != nil {
			if uid, ok := q.sp.UID(id); !ok || !keep(uid) {
				continue
			}
		}
		f, m, err := q.sp.OpenMessage(id)
		if err != nil {
			continue
		}
		f.Close()
		q.decodes.Add(1)
		d, err := q.readState(s, id)
		if err != nil {
			d = &spool.Delivery{}
		}
		n++
		fn(Entry{ID: id, State: s, Meta: m, Del: d})
	}
	return n
}

// Handle answers a control request (see package control).
func (q *Queue) Handle(p control.Peer, verb string, args []string, out io.Writer) error {
	if isAccountCommand(args) && verb != control.VerbMailq && verb != control.VerbFlush {
		return q.handleAccount(p, verb, args, out)
	}
	switch verb {
	case control.VerbMailq:
		if len(args) == 1 && args[0] == "--json" {
			return q.mailqJSON(p, out)
		}
		return q.mailq(p, out)
	case control.VerbFlush:
		// Root and the daemon user flush the whole queue; any other
		// user only their own mail, so that no user can make relayd
		// retry (and hammer the upstream with) other users' messages.
		// The answer says what happens (relayd queue flush prints it;
		// sendmail -q does not: its stdout may be a web page).
		var n, paced int
		if p.Admin {
			n = q.Flush()
		} else {
			n, paced = q.flushUID(p.UID)
		}
		q.log.Flush(p.UID, n)
		if n > 0 {
			fmt.Fprintf(out, "%d deferred message(s) made due: relayd tries them now\n", n)
		} else {
			fmt.Fprintln(out, "no deferred message to retry")
		}
		if paced > 0 {
			fmt.Fprintf(out, "%d message(s) deferred by the per-account policy keep their time: they go out at the rate the account is allowed, not now\n", paced)
		}
		if !p.Admin {
			if held := q.sp.CountOf(spool.Held, p.UID); held > 0 {
				fmt.Fprintf(out, "%d held message(s) stay held: a flush does not release them; root does (relayd queue release)\n", held)
			}
		}
		return nil
	case control.VerbList:
		return q.list(out)
	case control.VerbShow:
		if len(args) != 1 {
			return errors.New("usage: show ID")
		}
		return q.show(args[0], out)
	case control.VerbHold, control.VerbRelease, control.VerbDelete:
		if len(args) == 0 {
			return fmt.Errorf("usage: %s ID...", verb)
		}
		var errs []string
		for _, id := range args {
			if err := q.change(verb, id, p.UID); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			fmt.Fprintf(out, "%s: %s\n", id, pastTense(verb))
		}
		if verb == control.VerbRelease {
			q.Kick()
		}
		if len(errs) > 0 {
			return errors.New(strings.Join(errs, "; "))
		}
		return nil
	}
	return fmt.Errorf("unknown verb %q", verb)
}

// flushUID makes uid's deferred messages due now and kicks the queue; it
// returns how many, and how many it left to the policy's pace. A
// message's UID is the one the queue's index records, as for mailq.
func (q *Queue) flushUID(uid int) (int, int) {
	q.mu.Lock()
	ids := make([]string, 0, len(q.deferred))
	for id := range q.deferred {
		ids = append(ids, id)
	}
	q.mu.Unlock()
	var mine []string
	paced := 0
	for _, id := range ids {
		if u, ok := q.sp.UID(id); !ok || u != uid {
			continue
		}
		// Not the messages the per-account policy deferred (action
		// "defer"): they wait for the time the account's rate allows,
		// and a user's flush must not let a flood out at once.
		if q.pacedByPolicy(id) {
			paced++
			continue
		}
		mine = append(mine, id)
	}
	n := 0
	q.mu.Lock()
	for _, id := range mine {
		if _, ok := q.deferred[id]; ok {
			q.deferred[id] = time.Time{}
			n++
		}
	}
	q.mu.Unlock()
	if n > 0 {
		q.Kick()
	}
	return n, paced
}

// pacedByPolicy reports whether deferred message id waits for the time
// the per-account policy gave it (spool.Delivery.Paced: not tried since).
func (q *Queue) pacedByPolicy(id string) bool {
	d, err := q.sp.ReadState(spool.Deferred, id)
	return err == nil && d.Paced
}

func pastTense(verb string) string {
	switch verb {
	case control.VerbHold:
		return "held"
	case control.VerbRelease:
		return "released"
	}
	return "deleted"
}

func (q *Queue) change(verb, id string, uid int) error {
	var err error
	switch verb {
	case control.VerbHold:
		// Why it waited (the policy's pace) is not why it is held now.
		if st, lerr := q.sp.Locate(id); lerr == nil && (st == spool.Incoming || st == spool.Deferred) {
			if d, rerr := q.readState(st, id); rerr == nil && d.Reason != "" {
				d.Reason = ""
				// Hold's Sync covers this record's line too.
				if werr := q.recordState(st, id, d); werr != nil {
					return werr
				}
			}
		}
		err = q.sp.Hold(id)
	case control.VerbRelease:
		if st, lerr := q.sp.Locate(id); lerr == nil && (st == spool.Failed || st == spool.Held) {
			// A released failed message is retried to the recipients that
			// had failed; a released message is no longer held (by the
			// policy or anyone), whatever happens to it next.
			if d, rerr := q.readState(st, id); rerr == nil && (st == spool.Failed || d.Reason != "") {
				if st == spool.Failed {
					d.Failed = nil
				}
				d.Reason = ""
				// Release's Sync covers this record's line too.
				if werr := q.recordState(st, id, d); werr != nil {
					return werr
				}
			}
		}
		err = q.sp.Release(id)
	case control.VerbDelete:
		if _, err = q.sp.Delete(id); err == nil {
			q.dropUnsaved(id)
		}
	}
	if err != nil {
		if errors.Is(err, spool.ErrNotFound) {
			if st, lerr := q.sp.Locate(id); lerr == nil {
				return fmt.Errorf("%s: is %s, cannot %s it now", id, st, verb)
			}
			return fmt.Errorf("%s: no such message", id)
		}
		return err
	}
	q.forget(id)
	switch verb {
	case control.VerbHold:
		q.log.Hold(id, uid)
	case control.VerbRelease:
		q.log.Release(id, uid)
	case control.VerbDelete:
		q.log.Delete(id, uid)
	}
	return nil
}

// mailq writes the queue in Postfix's mailq layout. A peer that is not an
// admin sees only its own UID's messages.
func (q *Queue) mailq(p control.Peer, out io.Writer) error {
	var keep func(int) bool
	if !p.Admin {
		keep = func(uid int) bool { return uid == p.UID }
	}
	var total int64
	n := q.eachEntry(keep, func(e Entry) {
		if total == 0 {
			fmt.Fprintf(out, "%-20s  %8s %-20s  %s\n", "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
			total = -1 // header written (sizes are added below)
		}
		mark := " "
		switch e.State {
		case spool.Active:
			mark = "*"
		case spool.Held:
			mark = "!"
		}
		sender := e.Meta.Env.Sender
		if sender == "<>" || sender == "" {
			sender = "MAILER-DAEMON"
		}
		if total < 0 {
			total = 0
		}
		total += e.Meta.Size
		fmt.Fprintf(out, "%-20s%s %8d %20.20s  %s\n", e.ID, mark, e.Meta.Size, e.Meta.Time.Local().Format("Mon Jan _2 15:04:05"), printable(sender))
		switch {
		case e.State == spool.Failed:
			fmt.Fprintf(out, "%43s(%s)\n", "", oneLine(e.Del.Reason))
		case e.Del.LastReply != "":
			fmt.Fprintf(out, "%43s(%s)\n", "", oneLine(e.Del.LastReply))
		}
		for _, r := range shownRcpts(e) {
			fmt.Fprintf(out, "%43s%s\n", "", printable(r))
		}
		fmt.Fprintln(out)
	})
	if n == 0 {
		fmt.Fprintln(out, "Mail queue is empty")
		return nil
	}
	fmt.Fprintf(out, "-- %d Kbytes in %d Request%s.\n", (total+1023)/1024, n, plural(n, "", "s"))
	return nil
}

func (q *Queue) list(out io.Writer) error {
	fmt.Fprintf(out, "%-20s %-8s %9s %-20s %8s %-20s %s\n", "ID", "STATE", "SIZE", "ARRIVAL", "ATTEMPTS", "NEXT", "FROM -> RCPTS")
	n := q.eachEntry(nil, func(e Entry) {
		next := "-"
		if e.State == spool.Deferred && !e.Del.Next.IsZero() {
			next = e.Del.Next.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%-20s %-8s %9d %-20s %8d %-20s %s -> %s\n", e.ID, e.State, e.Meta.Size,
			e.Meta.Time.UTC().Format(time.RFC3339), e.Del.Attempts, next, printable(e.Meta.Env.Sender),
			printable(strings.Join(shownRcpts(e), ",")))
	})
	fmt.Fprintf(out, "%d message(s)\n", n)
	return nil
}

func (q *Queue) show(id string, out io.Writer) error {
	st, err := q.sp.Locate(id)
	if err != nil {
		return fmt.Errorf("%s: no such message", id)
	}
	f, m, err := q.sp.OpenMessage(id)
	if err != nil {
		return err
	}
	f.Close()
	d, err := q.readState(st, id)
	if err != nil {
		d = &spool.Delivery{}
	}
	o := m.Origin
	kv := func(k string, v any) { fmt.Fprintf(out, "%-14s %s\n", k+":", printable(fmt.Sprint(v))) }
	kv("id", id)
	kv("state", st)
	kv("arrival", m.Time.UTC().Format(time.RFC3339))
	kv("size", m.Size)
	kv("from", m.Env.Sender)
	for _, r := range m.Env.Recipients {
		kv("rcpt", r)
	}
	kv("uid", o.UID)
	kv("user", o.User)
	kv("via", o.Via)
	if o.Script != "" {
		kv("script", o.Script+" (advisory, from "+o.ScriptSource+")")
	}
	if o.PHPHeader != "" {
		v := o.PHPHeader
		if o.PHPUIDMismatch {
			v += " (its uid is not the caller's: not believed)"
		}
		kv("php header", v)
	}
	if o.Caller != "" {
		kv("caller", o.Caller)
	}
	// For the SMTP listener the Parent fields describe the client's own
	// process (the holder of its socket), not a parent.
	proc := "parent"
	if o.Via == "smtp" {
		proc = "process"
		kv("client", o.Client)
		if o.Helo != "" {
			kv("helo", o.Helo)
		}
		if o.AuthUser != "" {
			kv("auth claim", o.AuthUser+" (a claim, not checked)")
		}
	}
	if o.ParentPID != 0 {
		kv(proc, fmt.Sprintf("pid %d %s", o.ParentPID, o.ParentExe))
	}
	if o.ParentCmdline != "" {
		// Masked when recorded; again here for a record queued by an
		// older relayd.
		kv(proc+" cmd", origin.MaskCmdline(o.ParentCmdline))
	}
	if o.ParentCwd != "" {
		kv(proc+" cwd", o.ParentCwd)
	}
	if o.Cgroup != "" {
		kv("cgroup", o.Cgroup)
	}
	if len(o.Ignored) > 0 {
		kv("ignored opts", strings.Join(o.Ignored, " "))
	}
	kv("attempts", d.Attempts)
	if !d.First.IsZero() {
		kv("first", d.First.UTC().Format(time.RFC3339))
		kv("last", d.Last.UTC().Format(time.RFC3339))
	}
	if st == spool.Deferred {
		kv("next", d.Next.UTC().Format(time.RFC3339))
	}
	if d.Upstream != "" {
		kv("upstream", d.Upstream)
	}
	if d.LastReply != "" {
		kv("last reply", d.LastReply)
	}
	for _, r := range d.Sent {
		kv("sent", r)
	}
	for _, fl := range d.Failed {
		kv("failed", fl.Rcpt+": "+fl.Reply)
	}
	for _, b := range d.Bounces {
		kv("bounce", b)
	}
	if d.Reason != "" {
		kv("reason", d.Reason)
	}
	return nil
}

// shownRcpts are the recipients a listing shows for e: those still to
// deliver; for a failed message (a bounce that could not be delivered,
// kept in failed) those that failed, which are why it is there.
func shownRcpts(e Entry) []string {
	if e.State == spool.Failed {
		return remaining(e.Meta.Env.Recipients, &spool.Delivery{Sent: e.Del.Sent})
	}
	return remaining(e.Meta.Env.Recipients, e.Del)
}

// printable quotes a value that holds control characters (message.HasControl:
// C0, DEL, C1, line separators, bidi controls) or invalid UTF-8, so that data
// a caller chose (a command line, a script path) cannot drive the admin's
// terminal.
func printable(s string) string {
	if message.HasControl(s) || !utf8.ValidString(s) {
		return strconv.QuoteToASCII(s)
	}
	return s
}

// Schedule tells the queue that id, just queued in deferred by the
// per-account policy (never attempted), is due at at. Before Load it does
// nothing: Load reads the time from the message's delivery record.
func (q *Queue) Schedule(id string, at time.Time) {
	q.mu.Lock()
	if q.deferred != nil {
		q.deferred[id] = at
	}
	q.mu.Unlock()
	q.Kick()
}
