package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/mailshim/mailshim/pkg/statefile"
)

// # Rates: a leaky bucket per account and limit
//
// Each rate is a leaky bucket, kept as the generic cell rate algorithm
// (GCRA) keeps it: one time per account and rate, the bucket's
// "theoretical arrival time" (TAT). A limit of L per window W drains at
// one unit every T = W/L and holds W's worth: a message costing n units
// (1, or its recipients for the recipients_per_* rates) fits when
//
//	max(TAT, now) + n·T − now ≤ W
//
// or the bucket is empty (TAT ≤ now: one message larger than the whole
// allowance is let through, and the bucket then stays over until it has
// drained), and then TAT becomes max(TAT, now) + n·T. So an account may send L at
// once (the burst an idle site has earned), then one every T; after W of
// silence the bucket is empty again. Unlike a fixed window, there is no
// boundary at which a site can send 2·L in a moment; unlike a log of
// timestamps, the state is one time per rate, which the state file keeps.
//
// A message that does not fit is, by the account's action:
//
//   - hold or refuse: not counted (the bucket is unchanged), so what the
//     account sends within its rate still goes out at that rate;
//   - defer: counted, and sent when it fits: at the largest
//     TAT + n·T − W over the rates. Each further message gets the next
//     slot, so a flood is spread out at exactly the allowed rate.

// Decision is what Decide says about one message.
type Decision struct {
	Action Action // Accept, Defer, Hold or Refuse
	// At is when a deferred message may be sent.
	At time.Time
	// Violation is the limit that tripped (nil for Accept and Frozen).
	Violation *Violation
	// Frozen is set when the account is frozen (relayd queue freeze):
	// the message is held whatever the rates say.
	Frozen bool
	// Notice is set on the first trip of an episode: the admin is told
	// once, not again until the account has been quiet for NoticeQuiet.
	Notice bool
}

// DeferredReason starts the reason (spool.Delivery.Reason) of a message
// queued in deferred/ by the policy, until its time: the queue tells such
// a message from one an upstream deferred by it (and no attempt yet).
const DeferredReason = "deferred by policy"

// NoticeQuiet is how long an account must go without tripping a limit
// before a new trip counts as a new episode (and sends a new notice).
const NoticeQuiet = time.Hour

// account is the persistent state of one UID.
type account struct {
	Name     string               `json:"name,omitempty"`
	TAT      map[string]time.Time `json:"tat,omitempty"` // by rate key
	LastTrip time.Time            `json:"last_trip,omitzero"`
	Trips    int64                `json:"trips,omitempty"` // trips in the current episode
	Frozen   bool                 `json:"frozen,omitempty"`
}

type stateFile struct {
	Version int `json:"version"`
	// Saved is the clock's time when the file was written (a file
	// without it: its modification time).
	Saved    time.Time           `json:"saved,omitzero"`
	Accounts map[string]*account `json:"accounts"`
}

// Engine decides, counts and remembers. It is safe for concurrent use.
type Engine struct {
	saveMu sync.Mutex // one Save at a time (they share the temporary file)
	// saveFailing is set while saves fail (under saveMu): see SaveError.
	saveFailing bool
	mu          sync.Mutex
	path        string
	accts       map[string]*account
	dirty       bool
	now         func() time.Time
}

// StateFile is the name of the state file in relayd's private queue
// directory.
const StateFile = "policy.state"

// Open loads the state file at path (missing: a fresh state). now is the
// clock (time.Now when nil). A state file that cannot be parsed is
// renamed aside (path + ".bad") and reported: the counters start afresh
// rather than relayd refusing to start.
func Open(path string, now func() time.Time) (*Engine, error) {
	if now == nil {
		now = time.Now
	}
	e := &Engine{path: path, accts: map[string]*account{}, now: now}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return e, nil
	}
	if err != nil {
		return nil, err
	}

	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil || st.Version != 1 {
		if err == nil {
			err = fmt.Errorf("unknown version %d", st.Version)
		}
		os.Rename(path, path+".bad")
		return e, fmt.Errorf("%s: unreadable (%v); moved to %s.bad, counters start afresh", path, err, path)
	}
	for k, a := range st.Accounts {
		if a != nil {
			e.accts[k] = a
		}
	}
	saved := st.Saved
	if fi, err := os.Stat(path); err == nil && saved.IsZero() {
		saved = fi.ModTime()
	}
	// The times are the wall clock's. A file written after now was
	// written while the clock was ahead (a bad RTC at boot, then NTP):
	// its times are taken back by as much, as if they had been counted
	// at the corrected time; else every account that sent then would be
	// over its limits until the clock caught up. A clock that jumped
	// forward only empties buckets early, as time would.
	if ahead := saved.Sub(now()); ahead > clockSlack {
		for _, a := range e.accts {
			for r, t := range a.TAT {
				a.TAT[r] = t.Add(-ahead)
			}
			if !a.LastTrip.IsZero() {
				a.LastTrip = a.LastTrip.Add(-ahead)
			}
		}
		e.dirty = true
		return e, fmt.Errorf("%s was written %s ahead of the clock (the clock was set back since): its counters are taken back by as much", path, ahead.Round(time.Second))
	}
	return e, nil
}

// clockSlack is how far ahead of the clock the state file's time may be
// before Open takes it for a clock that was set back.
const clockSlack = time.Minute

func (e *Engine) get(a Account) *account {
	k := a.Key()
	ac := e.accts[k]
	if ac == nil {
		ac = &account{}
		e.accts[k] = ac
	}
	ac.Name = a.Name()
	return ac
}

// Decide counts a message of nrcpt recipients from a under limits l and
// says what to do with it (see the rates above).
func (e *Engine) Decide(a Account, l *Limits, nrcpt int) Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	ac := e.get(a)
	if ac.Frozen {
		return Decision{Action: Hold, Frozen: true}
	}
	var next [NumRates]time.Time
	var worst *Violation
	at := now
	for r := Rate(0); r < NumRates; r++ {
		lim := l.Rates[r]
		if lim <= 0 {
			continue
		}
		w := r.Window()
		t := w / time.Duration(lim)
		n := 1
		if r.Recipients() {
			n = max(nrcpt, 1)
		}
		tat := ac.TAT[r.String()]
		empty := !tat.After(now)
		if empty {
			tat = now
		}
		next[r] = tat.Add(time.Duration(n) * t)
		fits := next[r].Add(-w)
		if fits.After(at) {
			at = fits
		}
		// An empty bucket takes any one message: a message larger than
		// the whole allowance (more recipients than a rate allows) is
		// max_recipients' business, not the rate's. The bucket then
		// stays over until it has drained.
		if next[r].Sub(now) > w && !empty {
			got := int64((next[r].Sub(now) + t - 1) / t)
			v := &Violation{Limit: r.String(), Source: l.Source[r.String()], Action: l.Action, Max: int64(lim), Got: got, Until: fits}
			if worst == nil || v.Until.After(worst.Until) {
				worst = v
			}
		}
	}
	commit := func() {
		if ac.TAT == nil {
			ac.TAT = map[string]time.Time{}
		}
		for r := Rate(0); r < NumRates; r++ {
			if !next[r].IsZero() {
				ac.TAT[r.String()] = next[r]
			}
		}
		e.dirty = true
	}
	if worst == nil {
		commit()
		return Decision{Action: Accept}
	}
	d := Decision{Action: l.Action, Violation: worst}
	if l.Action == Defer {
		commit()
		d.At = at
		worst.Until = at
	}
	if ac.LastTrip.IsZero() || now.Sub(ac.LastTrip) >= NoticeQuiet {
		d.Notice = true
		ac.Trips = 0
	}
	ac.LastTrip = now
	ac.Trips++
	e.dirty = true
	return d
}

// Undo takes back what Decide counted for a message (d, its decision,
// under limits l with nrcpt recipients) that was not queued after all:
// one whose queue file could not be written is tried again, and each try
// must not use up its account's allowance. Only Accept and Defer count.
func (e *Engine) Undo(a Account, l *Limits, nrcpt int, d Decision) {
	if d.Frozen || (d.Action != Accept && d.Action != Defer) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ac := e.accts[a.Key()]
	if ac == nil {
		return
	}
	for r := Rate(0); r < NumRates; r++ {
		lim := l.Rates[r]
		tat, ok := ac.TAT[r.String()]
		if lim <= 0 || !ok {
			continue
		}
		n := 1
		if r.Recipients() {
			n = max(nrcpt, 1)
		}
		ac.TAT[r.String()] = tat.Add(-time.Duration(n) * (r.Window() / time.Duration(lim)))
	}
	e.dirty = true
}

// SetFrozen freezes (holds everything new from) or thaws the account
// with UID uid, and reports whether that changed anything. All or
// nothing: the change is written to the state file (fsync'd, with the
// rest of the state) before it takes effect, and a failed write (its
// error is a *SaveError) changes nothing, in memory or in a later Save.
func (e *Engine) SetFrozen(uid int, name string, frozen bool) (bool, error) {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	a := Account{UID: uid, User: name}
	k := a.Key()
	e.mu.Lock()
	if ac := e.accts[k]; (ac != nil && ac.Frozen) == frozen {
		e.mu.Unlock()
		return false, nil
	}
	st := e.snapshot()
	c := st.Accounts[k]
	if c == nil {
		c = &account{}
		st.Accounts[k] = c
	}
	c.Name, c.Frozen = a.Name(), frozen
	e.mu.Unlock()
	if err := e.write(&st, true); err != nil {
		return false, err
	}
	e.mu.Lock()
	e.get(a).Frozen = frozen
	e.mu.Unlock()
	return true, nil
}

// IsFrozen reports whether the account with UID uid is frozen.
func (e *Engine) IsFrozen(uid int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ac := e.accts[Account{UID: uid}.Key()]
	return ac != nil && ac.Frozen
}

// SaveError is the error of a Save that failed. A full disk fails every
// save until space returns; Repeat is set when the Save before this one
// failed too, so that callers report the first failure of such an
// episode, not every retry.
type SaveError struct {
	Err    error
	Repeat bool
}

func (e *SaveError) Error() string { return e.Err.Error() }
func (e *SaveError) Unwrap() error { return e.Err }

// RepeatedSaveError reports whether err is a SaveError that repeats the
// failure of the Save before it.
func RepeatedSaveError(err error) bool {
	var se *SaveError
	return errors.As(err, &se) && se.Repeat
}

// Save writes the state file if anything changed since the last Save:
// a temporary file beside it, then rename(2), so that a crash leaves the
// old state or the new one, never half of one. With sync the file and
// its directory are fsync'd; without, the caller's next Queue.Sync makes
// it durable (pickup saves just before the Sync of each maildrop batch
// and of each group of Pickup.Store, so the counters are durable with
// the messages they counted). Accounts with nothing left to remember
// (empty buckets, no freeze, no recent trip) are dropped. A failed Save
// leaves the state for the next one to write; its error is a *SaveError.
func (e *Engine) Save(sync bool) error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	e.mu.Lock()
	if !e.dirty {
		e.mu.Unlock()
		return nil
	}
	st := e.snapshot()
	e.mu.Unlock()
	return e.write(&st, sync)
}

// snapshot returns a copy of the state to write, the accounts with
// nothing left to remember dropped, and marks it clean (under e.mu).
func (e *Engine) snapshot() stateFile {
	now := e.now()
	st := stateFile{Version: 1, Saved: now, Accounts: map[string]*account{}}
	for k, ac := range e.accts {
		live := ac.Frozen || now.Sub(ac.LastTrip) < NoticeQuiet
		for _, t := range ac.TAT {
			if t.After(now) {
				live = true
			}
		}
		if !live {
			delete(e.accts, k)
			continue
		}
		c := *ac
		c.TAT = map[string]time.Time{}
		for r, t := range ac.TAT {
			c.TAT[r] = t
		}
		st.Accounts[k] = &c
	}
	e.dirty = false
	return st
}

// write writes st to the state file (under saveMu); on failure the state
// is marked dirty again, for the next Save, and the error is a
// *SaveError.
func (e *Engine) write(st *stateFile, sync bool) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := statefile.Write(e.path, b, statefile.Options{Perm: 0o600, NoSync: !sync}); err != nil {
		e.mu.Lock()
		e.dirty = true
		e.mu.Unlock()
		se := &SaveError{Err: err, Repeat: e.saveFailing}
		e.saveFailing = true
		return se
	}
	e.saveFailing = false
	return nil
}
