package policy

import (
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Message is what the gate looks at: who sent it and what it is, once
// pickup has resolved the envelope and the header.
type Message struct {
	ID      string
	Account Account // UID and user name from the kernel; Groups filled in by Admit
	Sender  string
	From    []string // the From: header's addresses
	Rcpts   int
	Size    int64 // -1 when not known yet (a stream): see CheckSize
	Script  string
	Subject string
	To      string
	// RcptAddrs are the envelope recipients (for the notice: a message
	// may have no To: header, or one that names none of them).
	RcptAddrs []string
}

// Sample is one recent message of an account, for the admin notice.
type Sample struct {
	Time    time.Time
	ID      string
	Script  string
	Subject string
	To      string // the To: header, "" when it has none
	// Rcpts are its first envelope recipients (at most sampleRcpts), of
	// NRcpts.
	Rcpts  []string
	NRcpts int
	Action Action
}

// sampleRcpts is how many envelope recipients a Sample keeps.
const sampleRcpts = 3

// samplesKept is how many recent messages per account the gate keeps.
const samplesKept = 10

// Notice is the first trip of an episode, for the admin.
type Notice struct {
	Time      time.Time
	Account   Account
	Violation *Violation
	Limits    Limits
	Action    Action
	Recent    []Sample // oldest first
}

// Gate is the policy as pickup applies it: the rule tables in force
// (replaced on reload), the engine's counters, a short memory of each
// account's recent messages, and the notice hook. It is safe for
// concurrent use.
type Gate struct {
	Engine *Engine
	// OnNotice is called (in its own goroutine) on the first trip of an
	// episode.
	OnNotice func(*Notice)

	rules  atomic.Pointer[Policy]
	mu     sync.Mutex
	recent map[int][]Sample
	// limits caches each UID's resolved limits and groups (read-only
	// once made) for limitsTTL, so that a flood costs no resolution or
	// group lookup per message; SetPolicy empties it.
	limits map[int]limitsEntry
}

type limitsEntry struct {
	user   string
	groups []string
	l      Limits
	at     time.Time
}

// limitsTTL is how long an account's limits and group list are cached.
const limitsTTL = time.Minute

// NewGate returns a gate applying p with e's counters.
func NewGate(p *Policy, e *Engine) *Gate {
	g := &Gate{Engine: e, recent: map[int][]Sample{}, limits: map[int]limitsEntry{}}
	g.SetPolicy(p)
	return g
}

// SetPolicy replaces the rule tables (config reload).
func (g *Gate) SetPolicy(p *Policy) {
	if p == nil {
		p = &Policy{}
	}
	g.mu.Lock()
	g.rules.Store(p)
	g.limits = map[int]limitsEntry{}
	g.mu.Unlock()
}

// Policy returns the rule tables in force.
func (g *Gate) Policy() *Policy { return g.rules.Load() }

// fillGroups sets a.Groups when a group table could apply (Limits
// caches the result).
func fillGroups(p *Policy, a *Account) {
	if a.User == "" || !p.HasGroupRules() {
		return
	}
	u, err := user.LookupId(strconv.Itoa(a.UID))
	if err != nil {
		return
	}
	ids, err := u.GroupIds()
	if err != nil {
		return
	}
	var names []string
	for _, id := range ids {
		if gr, err := user.LookupGroupId(id); err == nil {
			names = append(names, gr.Name)
		}
	}
	a.Groups = names
}

// Limits resolves the limits of m's account (filling in its groups). The
// result is shared: do not modify it.
func (g *Gate) Limits(m *Message) Limits {
	now := g.Engine.now()
	uid := m.Account.UID
	g.mu.Lock()
	e, ok := g.limits[uid]
	p := g.rules.Load()
	g.mu.Unlock()
	if ok && e.user == m.Account.User && now.Sub(e.at) < limitsTTL {
		m.Account.Groups = e.groups
		return e.l
	}
	fillGroups(p, &m.Account)
	l := p.Resolve(m.Account)
	g.mu.Lock()
	if g.rules.Load() == p {
		g.limits[uid] = limitsEntry{user: m.Account.User, groups: m.Account.Groups, l: l, at: now}
	}
	g.mu.Unlock()
	return l
}

// Admit applies the static limits, then the account's freeze and rates,
// to m under l (from Limits), and remembers m for the notice. A static
// violation is a Refuse whatever the action.
func (g *Gate) Admit(m *Message, l *Limits) Decision {
	var d Decision
	if v := l.CheckStatic(m.From, m.Rcpts, m.Size); v != nil {
		d = Decision{Action: Refuse, Violation: v}
	} else {
		d = g.Engine.Decide(m.Account, l, m.Rcpts)
	}
	now := g.Engine.now()
	g.mu.Lock()
	s := append(g.recent[m.Account.UID], Sample{Time: now, ID: m.ID, Script: m.Script, Subject: m.Subject, To: m.To,
		Rcpts: slices.Clone(m.RcptAddrs[:min(len(m.RcptAddrs), sampleRcpts)]), NRcpts: len(m.RcptAddrs), Action: d.Action})
	if len(s) > samplesKept {
		s = s[len(s)-samplesKept:]
	}
	g.recent[m.Account.UID] = s
	var n *Notice
	if d.Notice && g.OnNotice != nil {
		n = &Notice{Time: now, Account: m.Account, Violation: d.Violation, Limits: *l, Action: d.Action, Recent: append([]Sample(nil), s...)}
	}
	g.mu.Unlock()
	if n != nil {
		go g.OnNotice(n)
	}
	return d
}

// Undo takes back what Admit counted for m (its decision d under l), a
// message that was not queued after all (see Engine.Undo).
func (g *Gate) Undo(m *Message, l *Limits, d Decision) {
	if d.Violation != nil && d.Violation.Static {
		return
	}
	g.Engine.Undo(m.Account, l, m.Rcpts, d)
}

// Raised returns the UIDs of the accounts whose waiting messages Retime
// would re-time under the rule tables p: those whose counters hold a
// backlog under a rate that p raises or removes. It looks at the
// engine's counters only, so that a reload that raises nothing reads
// nothing of the queue.
func (g *Gate) Raised(p *Policy) map[int]bool {
	accts, now := g.Engine.backlogs()
	out := map[int]bool{}
	for uid, ac := range accts {
		a := Account{UID: uid}
		if !strings.HasPrefix(ac.Name, "uid:") {
			a.User = ac.Name
		}
		fillGroups(p, &a)
		l := p.Resolve(a)
		if ac.raised(&l, now) {
			out[uid] = true
		}
	}
	return out
}

// Retime re-times the waiting messages of account a (see
// Engine.Retime, and its commit) under the rule tables p, the ones about
// to be put in force (SetPolicy after it: a message the gate admits
// meanwhile is counted under the tables in force, and the bucket keeps
// its count either way).
func (g *Gate) Retime(p *Policy, a Account, msgs []Waiting) ([]Slot, func()) {
	fillGroups(p, &a)
	l := p.Resolve(a)
	return g.Engine.Retime(a, &l, msgs)
}
