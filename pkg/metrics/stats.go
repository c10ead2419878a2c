package metrics

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/statefile"
)

// Stats is what "relayd stats" shows: per account, over the last hour and
// the last day, the messages picked up, the recipients sent and bounced,
// the messages held, deferred and refused by the policy, and the scripts
// that sent the most. Like the metrics it follows the mail log
// (Observe), for every account (no label bound: it is a table, not a
// time series), in minute buckets for the hour and hour buckets for the
// day, and it is kept in a state file so that a restart does not blank
// it. It is safe for concurrent use.
type Stats struct {
	mu      sync.Mutex
	path    string
	now     func() time.Time
	accts   map[string]*acctStats
	ids     idAccounts
	dirty   bool
	Account func(id string) (string, bool)
}

// Counts are one account's numbers over a period.
type Counts struct {
	PickedUp int64 `json:"picked_up"`
	Sent     int64 `json:"sent"` // recipients
	Bounced  int64 `json:"bounced"`
	Held     int64 `json:"held"`
	Deferred int64 `json:"deferred"` // by the policy
	Refused  int64 `json:"refused"`
}

func (c *Counts) add(o *Counts) {
	c.PickedUp += o.PickedUp
	c.Sent += o.Sent
	c.Bounced += o.Bounced
	c.Held += o.Held
	c.Deferred += o.Deferred
	c.Refused += o.Refused
}

// bucket is one minute or one hour of an account.
type bucket struct {
	Start   int64            `json:"start"` // Unix seconds, aligned
	Counts  Counts           `json:"counts"`
	Scripts map[string]int64 `json:"scripts,omitempty"`
}

// maxScriptsPerBucket bounds the scripts remembered per bucket.
const maxScriptsPerBucket = 50

type acctStats struct {
	Minutes []bucket `json:"minutes"` // the last 60
	Hours   []bucket `json:"hours"`   // the last 24
}

// OpenStats loads the stats state file at path (missing: empty; damaged:
// set aside as path.bad, with the error).
func OpenStats(path string, now func() time.Time) (*Stats, error) {
	if now == nil {
		now = time.Now
	}
	s := &Stats{path: path, now: now, accts: map[string]*acctStats{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &s.accts); err != nil {
		os.Rename(path, path+".bad")
		s.accts = map[string]*acctStats{}
		return s, fmt.Errorf("%s: unreadable (%v); moved to %s.bad, stats start afresh", path, err, path)
	}
	return s, nil
}

// at returns the minute and hour buckets of acct for t (under s.mu).
func (s *Stats) at(acct string, t time.Time) (*bucket, *bucket) {
	a := s.accts[acct]
	if a == nil {
		a = &acctStats{}
		s.accts[acct] = a
	}
	get := func(list *[]bucket, size int64, keep int) *bucket {
		start := t.Unix() / size * size
		l := *list
		if n := len(l); n > 0 && l[n-1].Start == start {
			return &l[n-1]
		}
		l = append(l, bucket{Start: start})
		// Drop what has left the window.
		cut := 0
		for cut < len(l) && l[cut].Start <= start-size*int64(keep) {
			cut++
		}
		l = l[cut:]
		*list = l
		return &l[len(l)-1]
	}
	return get(&a.Minutes, 60, 60), get(&a.Hours, 3600, 24)
}

// Observe counts one mail log event (maillog.Logger.SetObserver).
func (s *Stats) Observe(e *maillog.Entry) {
	t := e.Time
	var acct, script string
	var c Counts
	switch e.Event {
	case "pickup":
		acct, script = accountOf(e), e.Str("script")
		c.PickedUp = 1
		s.ids.learn(e.Str("id"), acct)
	case "delivery":
		switch e.Str("status") {
		case "sent":
			c.Sent = 1
		case "bounced", "failed":
			c.Bounced = 1
		default:
			return
		}
		acct = s.accountOfID(e.Str("id"))
	case "policy":
		acct = accountOf(e)
		switch e.Str("action") {
		case "hold":
			c.Held = 1
		case "defer":
			c.Deferred = 1
		case "refuse":
			c.Refused = 1
		}
	case "hold":
		acct = s.accountOfID(e.Str("id"))
		c.Held = 1
	case "removed", "delete":
		s.ids.forget(e.Str("id"))
		return
	default:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, h := s.at(acct, t)
	for _, b := range []*bucket{m, h} {
		b.Counts.add(&c)
		if script != "" {
			if b.Scripts == nil {
				b.Scripts = map[string]int64{}
			}
			if _, ok := b.Scripts[script]; ok || len(b.Scripts) < maxScriptsPerBucket {
				b.Scripts[script]++
			}
		}
	}
	s.dirty = true
}

func (s *Stats) accountOfID(id string) string { return s.ids.of(id, s.Account) }

// AccountStats is one account's line of "relayd stats".
type AccountStats struct {
	Account string   `json:"account"`
	Hour    Counts   `json:"last_hour"`
	Day     Counts   `json:"last_day"`
	Scripts []Script `json:"top_scripts"` // over the day, busiest first
}

// Script is a script and how many messages it sent.
type Script struct {
	Path     string `json:"script"`
	Messages int64  `json:"messages"`
}

// topScripts is how many scripts "relayd stats" shows per account.
const topScripts = 3

// Snapshot returns every account with something in the last day, the
// busiest (messages picked up in the day) first.
func (s *Stats) Snapshot() []AccountStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	var out []AccountStats
	for name, a := range s.accts {
		as := AccountStats{Account: name, Scripts: []Script{}}
		scripts := map[string]int64{}
		for _, b := range a.Minutes {
			if b.Start > now-3600 {
				as.Hour.add(&b.Counts)
			}
		}
		for _, b := range a.Hours {
			if b.Start > now-24*3600 {
				as.Day.add(&b.Counts)
				for p, n := range b.Scripts {
					scripts[p] += n
				}
			}
		}
		if as.Day == (Counts{}) {
			continue
		}
		for p, n := range scripts {
			as.Scripts = append(as.Scripts, Script{p, n})
		}
		sort.Slice(as.Scripts, func(i, j int) bool {
			if as.Scripts[i].Messages != as.Scripts[j].Messages {
				return as.Scripts[i].Messages > as.Scripts[j].Messages
			}
			return as.Scripts[i].Path < as.Scripts[j].Path
		})
		if len(as.Scripts) > topScripts {
			as.Scripts = as.Scripts[:topScripts]
		}
		out = append(out, as)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Day.PickedUp != out[j].Day.PickedUp {
			return out[i].Day.PickedUp > out[j].Day.PickedUp
		}
		return out[i].Account < out[j].Account
	})
	return out
}

// Write prints the snapshot as a table, or as JSON.
func (s *Stats) Write(out io.Writer, asJSON bool) error {
	snap := s.Snapshot()
	if asJSON {
		if snap == nil {
			snap = []AccountStats{}
		}
		b, err := json.MarshalIndent(snap, "", "  ")
		if err != nil {
			return err
		}
		_, err = out.Write(append(b, '\n'))
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tPERIOD\tPICKED UP\tSENT\tBOUNCED\tHELD\tDEFERRED\tREFUSED\tTOP SCRIPTS (DAY)")
	for _, a := range snap {
		var sc []string
		for _, x := range a.Scripts {
			sc = append(sc, fmt.Sprintf("%s (%d)", printable(x.Path), x.Messages))
		}
		for i, p := range []struct {
			name string
			c    Counts
		}{{"hour", a.Hour}, {"day", a.Day}} {
			name, scripts := printable(a.Account), strings.Join(sc, ", ")
			if i > 0 {
				name, scripts = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", name, p.name, p.c.PickedUp, p.c.Sent, p.c.Bounced, p.c.Held, p.c.Deferred, p.c.Refused, scripts)
		}
	}
	if len(snap) == 0 {
		fmt.Fprintln(tw, "(nothing sent in the last day)")
	}
	return tw.Flush()
}

// printable quotes a value with control bytes or blanks (a script path is
// the caller's to choose).
func printable(v string) string {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c == 0x7f {
			return fmt.Sprintf("%q", v)
		}
	}
	return v
}

// Save writes the state file if anything changed (statefile.Write;
// with sync fsync'd, its directory too). Buckets older than a day are
// dropped first.
func (s *Stats) Save(sync bool) error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	now := s.now().Unix()
	for name, a := range s.accts {
		keep := a.Hours[:0]
		for _, b := range a.Hours {
			if b.Start > now-24*3600 {
				keep = append(keep, b)
			}
		}
		a.Hours = keep
		km := a.Minutes[:0]
		for _, b := range a.Minutes {
			if b.Start > now-3600 {
				km = append(km, b)
			}
		}
		a.Minutes = km
		if len(a.Hours) == 0 && len(a.Minutes) == 0 {
			delete(s.accts, name)
		}
	}
	b, err := json.Marshal(s.accts)
	s.dirty = false
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := statefile.Write(s.path, b, statefile.Options{Perm: 0o600, NoSync: !sync}); err != nil {
		// Written by the next Save (a full disk: when space returns).
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return err
	}
	return nil
}
