// Package policy is relayd's per-account abuse control: what each local
// account may send, and how fast.
//
// An account is a UID, taken from the kernel (the owner of a maildrop
// file, SO_PEERCRED on a socket), never from anything the caller wrote.
// Its limits come from rule tables keyed by user name, "uid:N",
// "group:NAME" (any group the user is a member of) and "*", looked up key
// by key in that order over the built-in defaults (Defaults), so that a
// table only names what differs:
//
//   - from_domains: the domains a From: header address may be in;
//   - max_recipients: recipients per message;
//   - max_size: bytes per message;
//   - messages_per_minute/_hour/_day, recipients_per_minute/_hour/_day:
//     rates, each a leaky bucket (see Bucket);
//   - action: what happens to a message over a rate: "defer" (queued,
//     sent later at the allowed rate), "hold" (queued as held for the
//     admin) or "refuse" (not queued; the caller is told, or the sender
//     gets a bounce when the caller has gone);
//   - max_held: the account's held messages at most; one more to hold is
//     refused instead (pickup counts them in the queue).
//   - max_quarantined: the account's files in queue/quarantine/ at most
//     for refused maildrop files whose sender gets no failure notice;
//     beyond it such a file is removed with a log line (pickup counts
//     them by owner).
//
// A message that breaks a static rule (sender domain, recipients, size) is
// always refused: no later time makes it acceptable.
//
// The counters live in memory and in relayd's queue journal (a Store: one
// line per account changed, written with the messages they count and made
// durable by the same Sync; see Engine), so that a restart does not hand a
// compromised site a fresh allowance. The state file an older relayd kept
// them in (StateFile) is read once and removed.
//
// Its Go API is not stable.
package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Action is what happens to a message over a rate limit.
type Action string

// Actions.
const (
	Defer  Action = "defer"
	Hold   Action = "hold"
	Refuse Action = "refuse"
	// Accept is the verdict for a message within every limit (it is not
	// a configurable action).
	Accept Action = "accept"
)

// Rate is one rate limit: messages or recipients per window.
type Rate int

// The rates, in the order they are checked.
const (
	MessagesPerMinute Rate = iota
	MessagesPerHour
	MessagesPerDay
	RecipientsPerMinute
	RecipientsPerHour
	RecipientsPerDay
	NumRates
)

var rateNames = [NumRates]string{
	"messages_per_minute", "messages_per_hour", "messages_per_day",
	"recipients_per_minute", "recipients_per_hour", "recipients_per_day",
}

// String is the rate's configuration key ("messages_per_hour").
func (r Rate) String() string { return rateNames[r] }

// Window is the period the rate counts over.
func (r Rate) Window() time.Duration {
	switch r % 3 {
	case 0:
		return time.Minute
	case 1:
		return time.Hour
	}
	return 24 * time.Hour
}

// Recipients reports whether the rate counts recipients (else messages).
func (r Rate) Recipients() bool { return r >= RecipientsPerMinute }

// RateByName returns the rate whose key is name.
func RateByName(name string) (Rate, bool) {
	for i, n := range rateNames {
		if n == name {
			return Rate(i), true
		}
	}
	return 0, false
}

// Rule is one table of the policy. A nil field is not set by this table:
// the next table in the lookup order decides. A limit of 0 means no limit.
type Rule struct {
	FromDomains    []string
	MaxRecipients  *int
	MaxSize        *int64
	Rates          [NumRates]*int
	Action         *Action
	MaxHeld        *int
	MaxQuarantined *int
}

// Limits are the resolved limits of one account. Each field says which
// table set it (Source) for the messages that name it.
type Limits struct {
	FromDomains   []string // nil: any domain
	MaxRecipients int      // 0: no limit
	MaxSize       int64    // 0: no limit (max_message_size still applies)
	Rates         [NumRates]int
	Action        Action
	MaxHeld       int // held messages at most (0: no limit); see Gate
	// MaxQuarantined: files in quarantine at most for refused maildrop
	// files whose sender gets no notice (0: no limit); see pkg/pickup.
	MaxQuarantined int
	// Source names the table each key came from ("*", "www-data",
	// "uid:33", "group:web", "default"), by key.
	Source map[string]string
}

// Defaults are the built-in limits, which "*" and the per-account tables
// override key by key. See the package documentation of the README
// ("Stopping a compromised site") for why these numbers.
func Defaults() Limits {
	l := Limits{
		MaxRecipients:  1000,
		Action:         Hold,
		MaxHeld:        1000,
		MaxQuarantined: 100,
	}
	l.Rates[MessagesPerMinute] = 60
	l.Rates[MessagesPerHour] = 500
	l.Rates[MessagesPerDay] = 2000
	l.Rates[RecipientsPerMinute] = 120
	l.Rates[RecipientsPerHour] = 1000
	l.Rates[RecipientsPerDay] = 4000
	return l
}

// rootRule is the built-in rule for root (uid 0): no rate limits. Root
// can change this configuration, so limiting it protects nothing, and a
// limit that holds a system's alerts during an incident does harm. A
// [policy.root] or [policy."uid:0"] table (or a group's) still applies;
// "*" does not.
func rootRule() Rule {
	var r Rule
	zero := 0
	for i := range r.Rates {
		r.Rates[i] = &zero
	}
	return r
}

// Account is who sent a message.
type Account struct {
	UID    int
	User   string   // "" when the UID has no passwd entry
	Groups []string // the names of the groups the user is a member of
}

// Name is the account's name in logs, notices, stats and metrics: the
// user name, else "uid:N".
func (a Account) Name() string {
	if a.User != "" {
		return a.User
	}
	return "uid:" + strconv.Itoa(a.UID)
}

// Key is the account's key in the queue journal's pol lines: its UID.
func (a Account) Key() string { return strconv.Itoa(a.UID) }

// Policy is the set of rule tables, by key ("*", a user name, "uid:N",
// "group:NAME").
type Policy struct {
	Rules map[string]Rule
}

// keys returns the tables that apply to a, most specific first.
func (p *Policy) keys(a Account) []string {
	var ks []string
	if a.User != "" {
		ks = append(ks, a.User)
	}
	ks = append(ks, "uid:"+strconv.Itoa(a.UID))
	for _, g := range a.Groups {
		ks = append(ks, "group:"+g)
	}
	return append(ks, "*")
}

// HasGroupRules reports whether any table is keyed by a group, so that
// looking up an account's groups is worth it.
func (p *Policy) HasGroupRules() bool {
	for k := range p.Rules {
		if strings.HasPrefix(k, "group:") {
			return true
		}
	}
	return false
}

// Named returns the accounts the policy names (user names and "uid:N"),
// for the metrics' account label.
func (p *Policy) Named() []string {
	var out []string
	for k := range p.Rules {
		if k != "*" && !strings.HasPrefix(k, "group:") {
			out = append(out, k)
		}
	}
	return out
}

// Resolve returns a's limits: for each key, the first table (user name,
// uid:N, group:NAME in the order of a.Groups, then "*") that sets it, else
// the built-in default.
func (p *Policy) Resolve(a Account) Limits {
	l := Defaults()
	l.Source = map[string]string{}
	chain := p.keys(a)
	var rules []Rule
	var names []string
	for _, k := range chain {
		if a.UID == 0 && k == "*" {
			// Below root's own tables, above "*" (which is every
			// other account's) and the built-in defaults.
			rules = append(rules, rootRule())
			names = append(names, "default (root)")
		}
		if r, ok := p.Rules[k]; ok {
			rules = append(rules, r)
			names = append(names, k)
		}
	}
	pick := func(key string, set func(r Rule) bool) {
		for i, r := range rules {
			if set(r) {
				l.Source[key] = names[i]
				return
			}
		}
		l.Source[key] = "default"
	}
	pick("from_domains", func(r Rule) bool {
		if r.FromDomains != nil {
			l.FromDomains = r.FromDomains
			return true
		}
		return false
	})
	pick("max_recipients", func(r Rule) bool {
		if r.MaxRecipients != nil {
			l.MaxRecipients = *r.MaxRecipients
			return true
		}
		return false
	})
	pick("max_size", func(r Rule) bool {
		if r.MaxSize != nil {
			l.MaxSize = *r.MaxSize
			return true
		}
		return false
	})
	for i := Rate(0); i < NumRates; i++ {
		pick(i.String(), func(r Rule) bool {
			if r.Rates[i] != nil {
				l.Rates[i] = *r.Rates[i]
				return true
			}
			return false
		})
	}
	pick("action", func(r Rule) bool {
		if r.Action != nil {
			l.Action = *r.Action
			return true
		}
		return false
	})
	pick("max_held", func(r Rule) bool {
		if r.MaxHeld != nil {
			l.MaxHeld = *r.MaxHeld
			return true
		}
		return false
	})
	pick("max_quarantined", func(r Rule) bool {
		if r.MaxQuarantined != nil {
			l.MaxQuarantined = *r.MaxQuarantined
			return true
		}
		return false
	})
	return l
}

// Violation is a message a limit refuses, defers or holds.
type Violation struct {
	Limit  string // the key: "max_recipients", "messages_per_hour", ...
	Source string // the table that set it
	Action Action // Refuse for the static limits
	// Max is the limit, Got what the message (or the account's rate,
	// counted with this message) came to.
	Max, Got int64
	// Until is when the account is within the rate again (rates only).
	Until time.Time
	// Static is true for a limit no later time can satisfy (sender domain,
	// recipients, size): such a message is refused whatever the action.
	Static bool
	Detail string // e.g. the From: domain refused
}

// Error says which limit, in one line: what sendmail prints and the bounce
// tells ("policy: " and Text).
func (v *Violation) Error() string { return "policy: " + v.Text() }

// Text is Error without its "policy: " prefix, for text that already
// says the policy did it (a held message's reason: "held by policy: rate
// limit ..."; a deferred one's is Deferred).
func (v *Violation) Text() string { return v.text(true) }

// Deferred is the reason (spool.Delivery.Reason) of a message the policy
// deferred for v until at: "deferred by policy until T: rate limit ...
// would be N", the time once (Text's "within the limit again at" is that
// same time).
func (v *Violation) Deferred(at time.Time) string {
	return DeferredReason + " until " + at.UTC().Format(time.RFC3339) + ": " + v.text(false)
}

// text is Text, with the time the rate allows again when until is set.
func (v *Violation) text(until bool) string {
	who := ""
	if v.Source != "" && v.Source != "default" {
		who = fmt.Sprintf(" ([policy.%s])", quoteKey(v.Source))
	} else {
		who = " (built-in default)"
	}
	switch v.Limit {
	case "from_domains":
		return fmt.Sprintf("the From: address %s is not in a domain this account may send from (from_domains%s)", v.Detail, who)
	case "max_recipients":
		return fmt.Sprintf("%d recipients, more than the %d allowed per message (max_recipients%s)", v.Got, v.Max, who)
	case "max_size":
		return fmt.Sprintf("the message is larger than the %d bytes allowed (max_size%s)", v.Max, who)
	}
	r, _ := RateByName(v.Limit)
	unit := "messages"
	if r.Recipients() {
		unit = "recipients"
	}
	t := fmt.Sprintf("rate limit %s=%d reached%s: %s over the last %s would be %d",
		v.Limit, v.Max, who, unit, windowText(r.Window()), v.Got)
	if until {
		t += "; within the limit again at " + v.Until.UTC().Format(time.RFC3339)
	}
	return t
}

func windowText(d time.Duration) string {
	switch d {
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	}
	return "day"
}

func quoteKey(k string) string {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

// CheckStatic applies the limits no later time can change: the From:
// header's domains (fromAddrs, the addresses of From:), the number of
// recipients, and the size (size < 0: not known yet). It returns nil or a
// Static violation, which is always refused.
func (l *Limits) CheckStatic(fromAddrs []string, nrcpt int, size int64) *Violation {
	if l.FromDomains != nil {
		for _, a := range fromAddrs {
			at := strings.LastIndexByte(a, '@')
			dom := ""
			if at >= 0 {
				dom = a[at+1:]
			}
			if !domainIn(dom, l.FromDomains) {
				return &Violation{Limit: "from_domains", Source: l.Source["from_domains"], Action: Refuse, Static: true, Detail: strconv.Quote(a)}
			}
		}
	}
	if l.MaxRecipients > 0 && nrcpt > l.MaxRecipients {
		return &Violation{Limit: "max_recipients", Source: l.Source["max_recipients"], Action: Refuse, Static: true, Max: int64(l.MaxRecipients), Got: int64(nrcpt)}
	}
	if size >= 0 {
		if v := l.CheckSize(size); v != nil {
			return v
		}
	}
	return nil
}

// CheckSize applies max_size to a message of size bytes.
func (l *Limits) CheckSize(size int64) *Violation {
	if l.MaxSize > 0 && size > l.MaxSize {
		return &Violation{Limit: "max_size", Source: l.Source["max_size"], Action: Refuse, Static: true, Max: l.MaxSize, Got: size}
	}
	return nil
}

// domainIn reports whether dom is one of list; "*.example.com" matches any
// subdomain of example.com, "*" any domain.
func domainIn(dom string, list []string) bool {
	dom = strings.ToLower(strings.TrimSuffix(dom, "."))
	for _, d := range list {
		d = strings.ToLower(d)
		switch {
		case d == "*":
			return true
		case strings.HasPrefix(d, "*."):
			if strings.HasSuffix(dom, d[1:]) {
				return true
			}
		case d == dom:
			return true
		}
	}
	return false
}
