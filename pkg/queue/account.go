package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Queue commands by account: "relayd queue list --held --user U --json",
// "release --user U", "delete --user U [--confirm N]", "hold --user U".
// An account is a user name, "uid:N" or a bare UID; its messages are
// those whose kernel UID is that account's.

// Opts are the options of a queue command by account.
type Opts struct {
	Held    bool // list: only held messages
	JSON    bool // list: one JSON array
	User    string
	UID     int // resolved from User; -1 when no --user
	Confirm int // delete: the count the admin confirms; -1 when absent
}

// ParseOpts parses the options of a queue command by account.
func ParseOpts(args []string) (Opts, error) {
	o := Opts{UID: -1, Confirm: -1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		val := func() (string, error) {
			if k, v, ok := strings.Cut(a, "="); ok {
				a = k
				return v, nil
			}
			if i+1 >= len(args) {
				return "", control.Usagef("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--held":
			o.Held = true
		case a == "--json":
			o.JSON = true
		case a == "--user" || strings.HasPrefix(a, "--user="):
			v, err := val()
			if err != nil {
				return o, err
			}
			o.User = v
		case a == "--confirm" || strings.HasPrefix(a, "--confirm="):
			v, err := val()
			if err != nil {
				return o, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, control.Usagef("--confirm %q: want the number of messages", v)
			}
			o.Confirm = n
		default:
			return o, control.Usagef("unknown option %q", a)
		}
	}
	if o.User != "" {
		uid, err := LookupAccount(o.User)
		if err != nil {
			return o, err
		}
		o.UID = uid
	}
	return o, nil
}

// LookupAccount returns the UID of an account given as a user name,
// "uid:N" or a bare number. A user that does not exist is a usage error
// (control.UsageError: relayd queue exits 64); a lookup that failed
// (the user database unreadable) is not.
func LookupAccount(s string) (int, error) {
	n := strings.TrimPrefix(s, "uid:")
	if uid, err := strconv.Atoi(n); err == nil && uid >= 0 {
		return uid, nil
	}
	u, err := user.Lookup(s)
	var unknown user.UnknownUserError
	switch {
	case errors.As(err, &unknown):
		return -1, control.Usagef("no such user %q (give a user name, uid:N or a UID)", s)
	case err != nil:
		return -1, fmt.Errorf("cannot look up user %q: %v", s, err)
	}
	return strconv.Atoi(u.Uid)
}

// AccountName is the name of uid for messages: its user name, else uid:N.
func AccountName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid:" + strconv.Itoa(uid)
}

// AccountOf returns the account (AccountName) of queued message id, false
// when it is not queued: its UID from the queue's index, named once per
// UID for the life of q. No message is read: the metrics and relayd stats
// ask it for each message whose pickup they did not see (queued before a
// restart, bounces).
func (q *Queue) AccountOf(id string) (string, bool) {
	uid, ok := q.sp.UID(id)
	if !ok {
		return "", false
	}
	q.nameMu.Lock()
	defer q.nameMu.Unlock()
	name, ok := q.names[uid]
	if !ok {
		name = AccountName(uid)
		if q.names == nil {
			q.names = map[int]string{}
		}
		q.names[uid] = name
	}
	return name, true
}

// isAccountCommand reports whether args are options (a command by
// account) rather than queue IDs.
func isAccountCommand(args []string) bool {
	return len(args) > 0 && strings.HasPrefix(args[0], "--")
}

// handleAccount runs list, hold, release or delete with options.
func (q *Queue) handleAccount(p control.Peer, verb string, args []string, out io.Writer) error {
	o, err := ParseOpts(args)
	if err != nil {
		return err
	}
	if verb != control.VerbList && o.UID < 0 {
		return control.Usagef("usage: %s --user U", verb)
	}
	switch verb {
	case control.VerbList:
		return q.listOpts(o, out)
	case control.VerbHold:
		n := q.HoldAccount(o.UID, p.UID)
		fmt.Fprintf(out, "%d message(s) of %s held\n", n, AccountName(o.UID))
		return nil
	case control.VerbRelease:
		n, errs := q.eachOfAccount(o.UID, []string{spool.Held}, func(id string) error { return q.change(control.VerbRelease, id, p.UID) })
		q.Kick()
		fmt.Fprintf(out, "%d held message(s) of %s released\n", n, AccountName(o.UID))
		return errs
	case control.VerbDelete:
		states := []string{spool.Held, spool.Incoming, spool.Deferred, spool.Failed}
		ids := q.idsOfAccount(o.UID, states)
		name := AccountName(o.UID)
		kept := 0
		if o.Confirm >= 0 && o.Confirm < len(ids) && q.Frozen != nil && q.Frozen(o.UID) {
			// A frozen account's messages leave the queue only by an
			// admin's hand, and new ones (held) come after them in ID
			// order: the N oldest are the N the admin counted, and the
			// script that still sends must not make the confirmation
			// impossible.
			kept = len(ids) - o.Confirm
			ids = ids[:o.Confirm]
		}
		if o.Confirm != len(ids) {
			if o.Confirm >= 0 {
				return fmt.Errorf("%s has %d message(s) queued now, not %d: nothing deleted; confirm the new count with --confirm %d", name, len(ids), o.Confirm, len(ids))
			}
			// A usage error (relayd(8)): the command wants --confirm.
			return control.Usagef("%s has %d message(s) queued (held, waiting or failed): nothing deleted; add --confirm %d to delete them: relayd queue delete --user %s --confirm %d", name, len(ids), len(ids), o.User, len(ids))
		}
		n := 0
		var errs []string
		for _, id := range ids {
			if err := q.change(control.VerbDelete, id, p.UID); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			n++
		}
		fmt.Fprintf(out, "%d message(s) of %s deleted\n", n, name)
		if kept > 0 {
			fmt.Fprintf(out, "%d newer message(s) of %s, held since you counted, are kept: run relayd queue delete --user %s again for them\n", kept, name, o.User)
		}
		if len(errs) > 0 {
			return errors.New(strings.Join(errs, "; "))
		}
		return nil
	}
	return control.Usagef("%s takes queue IDs, not options", verb)
}

// idsOfAccount lists the IDs of uid's messages in states.
func (q *Queue) idsOfAccount(uid int, states []string) []string {
	want := map[string]bool{}
	for _, s := range states {
		want[s] = true
	}
	var ids []string
	q.eachEntry(func(u int) bool { return u == uid }, func(e Entry) {
		if want[e.State] {
			ids = append(ids, e.ID)
		}
	})
	return ids
}

// eachOfAccount calls fn for each of uid's messages in states and
// returns how many succeeded and the failures joined.
func (q *Queue) eachOfAccount(uid int, states []string, fn func(id string) error) (int, error) {
	n := 0
	var errs []string
	for _, id := range q.idsOfAccount(uid, states) {
		if err := fn(id); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, errors.New(strings.Join(errs, "; "))
	}
	return n, nil
}

// HoldAccount moves every waiting message of uid (incoming, deferred)
// to held and returns how many; byUID is who asked (for the log). A
// message being delivered right now is not stopped.
func (q *Queue) HoldAccount(uid, byUID int) int {
	n, _ := q.eachOfAccount(uid, []string{spool.Incoming, spool.Deferred}, func(id string) error {
		return q.change(control.VerbHold, id, byUID)
	})
	return n
}

// ListEntry is one message in "relayd queue list --json".
type ListEntry struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Size       int64     `json:"size"`
	Arrival    time.Time `json:"arrival"`
	UID        int       `json:"uid"`
	User       string    `json:"user,omitempty"`
	Script     string    `json:"script,omitempty"`
	Via        string    `json:"via,omitempty"`
	From       string    `json:"from"`
	Recipients []string  `json:"recipients"`
	Attempts   int       `json:"attempts"`
	Next       time.Time `json:"next,omitzero"`
	LastReply  string    `json:"last_reply,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

func entryJSON(e Entry) ListEntry {
	le := ListEntry{ID: e.ID, State: e.State, Size: e.Meta.Size, Arrival: e.Meta.Time.UTC(), UID: e.Meta.Origin.UID, User: e.Meta.Origin.User,
		Script: e.Meta.Origin.Script, Via: e.Meta.Origin.Via, From: e.Meta.Env.Sender, Recipients: shownRcpts(e),
		Attempts: e.Del.Attempts, LastReply: e.Del.LastReply, Reason: e.Del.Reason}
	if le.Recipients == nil {
		le.Recipients = []string{}
	}
	if e.State == spool.Deferred && !e.Del.Next.IsZero() {
		le.Next = e.Del.Next.UTC()
	}
	return le
}

// listOpts is list with --held, --user and --json.
func (q *Queue) listOpts(o Opts, out io.Writer) error {
	var keep func(int) bool
	if o.UID >= 0 {
		keep = func(u int) bool { return u == o.UID }
	}
	var list []ListEntry
	if !o.JSON {
		fmt.Fprintf(out, "%-20s %-8s %9s %-20s %-12s %s\n", "ID", "STATE", "SIZE", "ARRIVAL", "USER", "FROM -> RCPTS / REASON")
	}
	n := 0
	q.eachEntry(keep, func(e Entry) {
		if o.Held && e.State != spool.Held {
			return
		}
		n++
		if o.JSON {
			list = append(list, entryJSON(e))
			return
		}
		who := e.Meta.Origin.User
		if who == "" {
			who = "uid:" + strconv.Itoa(e.Meta.Origin.UID)
		}
		fmt.Fprintf(out, "%-20s %-8s %9d %-20s %-12s %s -> %s\n", e.ID, e.State, e.Meta.Size, e.Meta.Time.UTC().Format(time.RFC3339), printable(who),
			printable(e.Meta.Env.Sender), printable(strings.Join(shownRcpts(e), ",")))
		if e.Del.Reason != "" {
			fmt.Fprintf(out, "%64s(%s)\n", "", oneLine(e.Del.Reason))
		}
	})
	if o.JSON {
		if list == nil {
			list = []ListEntry{}
		}
		b, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return err
		}
		out.Write(append(b, '\n'))
		return nil
	}
	fmt.Fprintf(out, "%d message(s)\n", n)
	return nil
}

// mailqJSON is mailq --json: the messages the peer may see (its own UID's
// unless it is an admin), as "relayd queue list --json" prints them.
func (q *Queue) mailqJSON(p control.Peer, out io.Writer) error {
	var keep func(int) bool
	if !p.Admin {
		keep = func(uid int) bool { return uid == p.UID }
	}
	list := []ListEntry{}
	q.eachEntry(keep, func(e Entry) { list = append(list, entryJSON(e)) })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	_, err = out.Write(append(b, '\n'))
	return err
}
