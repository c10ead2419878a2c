package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"strconv"
	"sync"
	"time"
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
// timestamps, the state is one time per rate, which the queue journal keeps.
//
// A TAT is reckoned in units of its limit's T: the account's backlog
// (TAT − now) is (TAT − now)/T messages or recipients. The limit each
// TAT was reckoned under is kept with it (account.Lim), so that when the
// limit changes (a reload, or a restart with another configuration) the
// backlog is rescaled to keep its count: TAT − now becomes
// (TAT − now)·old/new. Raised from 3 to 6 a minute after 3 messages, an
// account has 3 of its 6 used and may send 3 more at once; lowered, the
// new limit applies at once to what was sent; and the "would be N" of a
// violation is that count, with this message, against the limit in
// force. (A TAT recorded without its limit, by an older relayd, is taken
// as reckoned under the limit in force.)
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
// queued as deferred by the policy, until its time: words for people
// (mailq, queue show); the queue tells such a message by its record's
// Paced flag, never by this text.
const DeferredReason = "deferred by policy"

// NoticeQuiet is how long an account must go without tripping a limit
// before a new trip counts as a new episode (and sends a new notice).
const NoticeQuiet = time.Hour

// account is the persistent state of one UID.
type account struct {
	Name string               `json:"name,omitempty"`
	TAT  map[string]time.Time `json:"tat,omitempty"` // by rate key
	// Lim is the limit each TAT is reckoned under, by rate key (see
	// rescale).
	Lim      map[string]int `json:"lim,omitempty"`
	LastTrip time.Time      `json:"last_trip,omitzero"`
	Trips    int64          `json:"trips,omitempty"` // trips in the current episode
	Frozen   bool           `json:"frozen,omitempty"`
	// Saved is the clock's time when the record was written (see Open).
	Saved time.Time `json:"saved,omitzero"`
}

// stateFile is the former state file's content (read once, to migrate).
type stateFile struct {
	Version int `json:"version"`
	// Saved is the clock's time when the file was written (a file
	// without it: its modification time).
	Saved    time.Time           `json:"saved,omitzero"`
	Accounts map[string]*account `json:"accounts"`
}

// Store keeps the engine's state: relayd's queue journal
// (spool.Queue), one record per account (its JSON), so that the
// counters are made durable by the same Sync as the messages they
// counted, with no file or fsync of their own.
type Store interface {
	// PolicyRecords returns the records kept, by account key.
	PolicyRecords() map[string][]byte
	// AppendPolicy records the accounts' new state (nil: forgotten)
	// without making it durable; critical records may use the space a
	// full disk keeps for an operator's actions.
	AppendPolicy(recs map[string][]byte, critical bool) error
	// Sync makes everything recorded durable.
	Sync() error
}

// Engine decides, counts and remembers. It is safe for concurrent use.
type Engine struct {
	saveMu sync.Mutex // one Save or SetFrozen at a time
	// saveFailing is set while saves fail (under saveMu): see SaveError.
	saveFailing bool
	mu          sync.Mutex
	store       Store
	accts       map[string]*account
	dirty       map[string]bool // accounts changed since their last record
	stored      map[string]bool // accounts the store may have a record of
	swept       time.Time       // the last look for accounts to forget
	now         func() time.Time
}

// StateFile is the name of the state file relayd kept the counters in
// (in its private queue directory) before they moved to the queue
// journal: read once by Open, then removed.
const StateFile = "policy.state"

// Open loads the state from st (nil: an engine that keeps nothing, for
// tests of the decisions only). When st holds no record and the former
// state file at legacy exists ("": none), the state is read from it,
// recorded in st and made durable, then the file is removed. now is
// the clock (time.Now when nil). An error with an engine is a warning
// (a record or file that cannot be parsed: those counters start
// afresh, a file is renamed aside to legacy + ".bad"); without one,
// relayd cannot start.
func Open(st Store, legacy string, now func() time.Time) (*Engine, error) {
	if now == nil {
		now = time.Now
	}
	e := &Engine{store: st, accts: map[string]*account{}, dirty: map[string]bool{}, stored: map[string]bool{}, now: now}
	if st == nil {
		return e, nil
	}
	recs := st.PolicyRecords()
	if len(recs) == 0 && legacy != "" {
		return e.migrate(legacy)
	}
	var bad []string
	var saved time.Time
	for k, b := range recs {
		e.stored[k] = true
		ac := new(account)
		if err := json.Unmarshal(b, ac); err != nil {
			bad = append(bad, k)
			e.dirty[k] = true // forgotten at the next Save
			continue
		}
		e.accts[k] = ac
		if ac.Saved.After(saved) {
			saved = ac.Saved
		}
	}
	var errs []error
	if len(bad) > 0 {
		errs = append(errs, fmt.Errorf("the queue journal's policy records of account(s) %v are unreadable; their counters start afresh", bad))
	}
	if err := e.clockAhead(saved, "the policy's counters in the queue journal were"); err != nil {
		errs = append(errs, err)
	}
	if legacy != "" {
		// Left by a migration that stopped before it could remove it:
		// the journal has its state, and newer.
		os.Remove(legacy)
	}
	return e, errors.Join(errs...)
}

// migrate reads the former state file at path into e, records it in the
// store, and removes the file once that is durable.
func (e *Engine) migrate(path string) (*Engine, error) {
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
			e.dirty[k] = true
		}
	}
	saved := st.Saved
	if fi, err := os.Stat(path); err == nil && saved.IsZero() {
		saved = fi.ModTime()
	}
	ahead := e.clockAhead(saved, path+" was")
	if err := e.Save(true); err != nil {
		// The file stays, for the next start; the counters are in
		// memory and the next Save records them.
		return e, errors.Join(ahead, fmt.Errorf("moving the counters of %s into the queue journal: %w (the file is kept)", path, err))
	}
	if err := os.Remove(path); err != nil {
		return e, errors.Join(ahead, err)
	}
	return e, ahead
}

// clockAhead takes the counters back when saved, the time they were
// written, is ahead of the clock. The times are the wall clock's. State
// written after now was written while the clock was ahead (a bad RTC at
// boot, then NTP): its times are taken back by as much, as if they had
// been counted at the corrected time; else every account that sent then
// would be over its limits until the clock caught up. A clock that
// jumped forward only empties buckets early, as time would.
func (e *Engine) clockAhead(saved time.Time, what string) error {
	ahead := saved.Sub(e.now())
	if ahead <= clockSlack {
		return nil
	}
	for k, a := range e.accts {
		for r, t := range a.TAT {
			a.TAT[r] = t.Add(-ahead)
		}
		if !a.LastTrip.IsZero() {
			a.LastTrip = a.LastTrip.Add(-ahead)
		}
		e.dirty[k] = true
	}
	return fmt.Errorf("%s written %s ahead of the clock (the clock was set back since): the counters are taken back by as much", what, ahead.Round(time.Second))
}

// clockSlack is how far ahead of the clock the state's time may be
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
		tat, rescaled := ac.rescale(r, lim, now)
		if rescaled {
			e.dirty[a.Key()] = true
		}
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
		for r := Rate(0); r < NumRates; r++ {
			if !next[r].IsZero() {
				ac.setTAT(r, next[r], l.Rates[r])
				e.dirty[a.Key()] = true
			}
		}
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
	e.dirty[a.Key()] = true
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
		// In the units the TAT is reckoned in now (a reload may have
		// rescaled it since Decide).
		if old := ac.Lim[r.String()]; old > 0 {
			lim = old
		}
		ac.TAT[r.String()] = tat.Add(-time.Duration(n) * (r.Window() / time.Duration(lim)))
		e.dirty[a.Key()] = true
	}
}

// rescale returns the TAT of rate r reckoned under the limit lim at
// now, and whether it had to be rescaled: the backlog recorded under
// another limit keeps its count (see Rates above). The rescaled TAT is
// kept, so that the backlog drains at the new limit's pace from now on
// whether or not this message counts.
func (ac *account) rescale(r Rate, lim int, now time.Time) (time.Time, bool) {
	tat, rescaled := ac.rescaled(r, lim, now)
	if rescaled {
		ac.setTAT(r, tat, lim)
	}
	return tat, rescaled
}

// rescaled is rescale without keeping the result.
func (ac *account) rescaled(r Rate, lim int, now time.Time) (time.Time, bool) {
	k := r.String()
	tat := ac.TAT[k]
	old := ac.Lim[k]
	if old <= 0 || old == lim || !tat.After(now) {
		return tat, false
	}
	// float64: a backlog of days times a large limit overflows an
	// int64 of nanoseconds; a nanosecond's rounding does not matter.
	backlog := time.Duration(float64(tat.Sub(now)) * float64(old) / float64(lim))
	return now.Add(backlog), true
}

// setTAT records the TAT of rate r, reckoned under the limit lim.
func (ac *account) setTAT(r Rate, tat time.Time, lim int) {
	if ac.TAT == nil {
		ac.TAT = map[string]time.Time{}
	}
	if ac.Lim == nil {
		ac.Lim = map[string]int{}
	}
	ac.TAT[r.String()] = tat
	ac.Lim[r.String()] = lim
}

// SetFrozen freezes (holds everything new from) or thaws the account
// with UID uid, and reports whether that changed anything. All or
// nothing: the change is recorded in the store and made durable (Sync)
// before it takes effect, and a failed write (its error is a
// *SaveError) changes nothing, in memory or in a later Save.
func (e *Engine) SetFrozen(uid int, name string, frozen bool) (bool, error) {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	a := Account{UID: uid, User: name}
	k := a.Key()
	e.mu.Lock()
	ac := e.accts[k]
	if (ac != nil && ac.Frozen) == frozen {
		e.mu.Unlock()
		return false, nil
	}
	var c account
	if ac != nil {
		c = copyAccount(ac)
	}
	c.Name, c.Frozen, c.Saved = a.Name(), frozen, e.now()
	if e.store == nil {
		e.get(a).Frozen = frozen
		e.mu.Unlock()
		return true, nil
	}
	e.stored[k] = true
	e.mu.Unlock()
	err := e.record(map[string][]byte{k: marshalAccount(&c)}, true, true)
	if err != nil {
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

// Save records the accounts changed since the last Save in the store
// (one record each) and, with sync, makes them durable; without, the
// caller's next Sync of the store does (pickup saves just before the
// Sync of each maildrop batch and of each group of Pickup.Store, so the
// counters are durable with the messages they counted; relayd's
// periodic save leaves it to the queue's housekeeping). Accounts with
// nothing left to remember (empty buckets, no freeze, no recent trip)
// are forgotten. A failed Save leaves the state for the next one to
// write; its error is a *SaveError.
func (e *Engine) Save(sync bool) error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	if e.store == nil {
		return nil
	}
	e.mu.Lock()
	recs := e.changesLocked()
	e.mu.Unlock()
	return e.record(recs, false, sync)
}

// sweepEvery is how often Save looks through every account for those
// with nothing left to remember (a changed account is looked at when it
// is saved).
const sweepEvery = time.Minute

// changesLocked returns the records of the accounts changed since their
// last record (nil for one forgotten) and marks them clean (under e.mu).
func (e *Engine) changesLocked() map[string][]byte {
	now := e.now()
	if now.Sub(e.swept) >= sweepEvery || now.Before(e.swept) {
		e.swept = now
		for k, ac := range e.accts {
			if !live(ac, now) {
				e.dirty[k] = true
			}
		}
	}
	if len(e.dirty) == 0 {
		return nil
	}
	recs := make(map[string][]byte, len(e.dirty))
	for k := range e.dirty {
		ac := e.accts[k]
		if ac == nil || !live(ac, now) {
			delete(e.accts, k)
			if e.stored[k] {
				recs[k] = nil
			}
			continue
		}
		c := copyAccount(ac)
		c.Saved = now
		recs[k] = marshalAccount(&c)
		e.stored[k] = true
	}
	clear(e.dirty)
	return recs
}

// live reports whether ac has anything left to remember at now.
func live(ac *account, now time.Time) bool {
	if ac.Frozen || now.Sub(ac.LastTrip) < NoticeQuiet {
		return true
	}
	for _, t := range ac.TAT {
		if t.After(now) {
			return true
		}
	}
	return false
}

func copyAccount(ac *account) account {
	c := *ac
	c.TAT = make(map[string]time.Time, len(ac.TAT))
	for r, t := range ac.TAT {
		c.TAT[r] = t
	}
	c.Lim = maps.Clone(ac.Lim)
	return c
}

// marshalAccount returns the record of c (json.Marshal of a struct of
// strings, times and numbers: it cannot fail).
func marshalAccount(c *account) []byte {
	b, _ := json.Marshal(c)
	return b
}

// record appends recs to the store and Syncs when sync is set (under
// saveMu); on failure the accounts are marked changed again, for the
// next Save, and the error is a *SaveError.
func (e *Engine) record(recs map[string][]byte, critical, sync bool) error {
	var err error
	if len(recs) > 0 {
		err = e.store.AppendPolicy(recs, critical)
	}
	if err == nil && sync {
		err = e.store.Sync()
	}
	if err != nil {
		e.mu.Lock()
		for k := range recs {
			e.dirty[k] = true
		}
		e.mu.Unlock()
		se := &SaveError{Err: err, Repeat: e.saveFailing}
		e.saveFailing = true
		return se
	}
	e.saveFailing = false
	return nil
}

// # Re-timing what waits, when a rate is raised
//
// A message deferred (action defer) was counted when it came and given
// the slot its bucket allowed then. When the limit is raised (or
// removed) by a reload or a restart, the slots given under the old
// limit are later than the new one allows: Retime gives the account's
// waiting messages the slots they would have had under the new limit,
// in their queue order (the oldest first). The bucket is rescaled (see
// Rates), the waiting messages are taken out of it, and they are
// counted again one by one as Decide would count them now: those that
// fit go at once, the rest get the next slots at the new pace, and a
// message that comes after them gets a slot after theirs. A limit that
// was only lowered re-times nothing: what waits keeps its slot (it was
// counted, and a reload does not make mail already given a time wait
// longer), and the rescaled bucket holds the next messages back at once.

// Waiting is a message that the policy deferred and that still waits,
// for Retime.
type Waiting struct {
	Rcpts int // its recipients (for the recipients_per_* rates)
}

// Slot is when a waiting message may go after Retime.
type Slot struct {
	At time.Time
	// Violation is the limit that holds it back until At (nil: it fits
	// now).
	Violation *Violation
}

// Reason is the reason (spool.Delivery.Reason) of a message re-timed to
// s.
func (s Slot) Reason() string {
	if s.Violation != nil {
		return s.Violation.Deferred(s.At)
	}
	return DeferredReason + " until " + s.At.UTC().Format(time.RFC3339) + ": within its account's rates since they were raised"
}

// Retime gives msgs, the messages of account a that the policy deferred
// and that still wait, oldest first, their slots under the limits l
// (see Re-timing above). It changes nothing itself: commit counts them
// so (the bucket rescaled to l, holding them at the new pace), and is to
// be called once their new records are written, so that the counters
// that name the new limit never reach the queue journal ahead of them
// (else a Sync between the two and a power loss would leave messages at
// their old times under counters that say there is nothing to re-time).
// It returns nil, nil when no rate of a that holds a backlog has been
// raised or removed since it was counted.
func (e *Engine) Retime(a Account, l *Limits, msgs []Waiting) (slots []Slot, commit func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ac := e.accts[a.Key()]
	if ac == nil || len(msgs) == 0 {
		return nil, nil
	}
	now := e.now()
	if !ac.raised(l, now) {
		return nil, nil
	}
	units := func(r Rate, m Waiting) int {
		if r.Recipients() {
			return max(m.Rcpts, 1)
		}
		return 1
	}
	total := func(r Rate) int {
		n := 0
		for _, m := range msgs {
			n += units(r, m)
		}
		return n
	}
	// Each rate's bucket without the waiting messages.
	var base [NumRates]time.Time
	for r := Rate(0); r < NumRates; r++ {
		lim := l.Rates[r]
		if lim <= 0 {
			continue
		}
		t := r.Window() / time.Duration(lim)
		tat, _ := ac.rescaled(r, lim, now)
		n := total(r)
		// In units of t, as float64: n·t may overflow a Duration.
		if held := float64(tat.Sub(now)) / float64(t); float64(n) < held {
			base[r] = tat.Add(-time.Duration(n) * t)
		} else {
			base[r] = now
		}
	}
	// Counted again, oldest first, as Decide counts.
	slots = make([]Slot, len(msgs))
	for i, m := range msgs {
		at := now
		var worst *Violation
		for r := Rate(0); r < NumRates; r++ {
			lim := l.Rates[r]
			if lim <= 0 {
				continue
			}
			w := r.Window()
			t := w / time.Duration(lim)
			empty := !base[r].After(now)
			next := base[r].Add(time.Duration(units(r, m)) * t)
			base[r] = next
			if next.Sub(now) <= w || empty {
				continue
			}
			fits := next.Add(-w)
			at = latest(at, fits)
			got := int64((next.Sub(now) + t - 1) / t)
			v := &Violation{Limit: r.String(), Source: l.Source[r.String()], Action: l.Action, Max: int64(lim), Got: got, Until: fits}
			if worst == nil || v.Until.After(worst.Until) {
				worst = v
			}
		}
		if worst != nil {
			worst.Until = at
		}
		slots[i] = Slot{At: at, Violation: worst}
	}
	// The bucket after them is the rescaled one, or (when they are more
	// than its backlog, some having waited past their time) now plus
	// them: taken out and counted again, they end where they were.
	// Committed later, it is reckoned then, with what Decide counted
	// meanwhile (under the tables in force: rescaled too).
	commit = func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		ac := e.get(a)
		now := e.now()
		for r := Rate(0); r < NumRates; r++ {
			lim := l.Rates[r]
			if lim <= 0 {
				continue
			}
			t := r.Window() / time.Duration(lim)
			tat, _ := ac.rescaled(r, lim, now)
			// float64: n·t may overflow a Duration.
			held := time.Duration(min(float64(total(r))*float64(t), float64(math.MaxInt64/2)))
			ac.setTAT(r, latest(tat, now.Add(held)), lim)
		}
		e.dirty[a.Key()] = true
	}
	return slots, commit
}

// raised reports whether l raises or removes a rate of ac that holds a
// backlog at now (one Retime would re-time).
func (ac *account) raised(l *Limits, now time.Time) bool {
	for r := Rate(0); r < NumRates; r++ {
		k := r.String()
		tat, ok := ac.TAT[k]
		old, lim := ac.Lim[k], l.Rates[r]
		if ok && old > 0 && tat.After(now) && (lim <= 0 || lim > old) {
			return true
		}
	}
	return false
}

// backlogs returns a copy of each account whose counters hold a backlog
// at now, reckoned under a known limit (those raised can check), by UID.
func (e *Engine) backlogs() (map[int]account, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	out := map[int]account{}
	for k, ac := range e.accts {
		uid, err := strconv.Atoi(k)
		if err != nil {
			continue
		}
		for r, tat := range ac.TAT {
			if ac.Lim[r] > 0 && tat.After(now) {
				out[uid] = copyAccount(ac)
				break
			}
		}
	}
	return out, now
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
