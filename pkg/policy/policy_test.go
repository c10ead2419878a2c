package policy

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

func ip(n int) *int { return &n }

func TestResolveKeyByKey(t *testing.T) {
	hold, refuse := Hold, Refuse
	p := &Policy{Rules: map[string]Rule{
		"*":           {MaxRecipients: ip(20)},
		"group:shops": {Rates: [NumRates]*int{MessagesPerHour: ip(1000)}, Action: &refuse},
		"uid:33":      {Rates: [NumRates]*int{MessagesPerMinute: ip(5)}},
		"www-data":    {FromDomains: []string{"shop.example"}, Action: &hold},
	}}
	l := p.Resolve(Account{UID: 33, User: "www-data", Groups: []string{"www-data", "shops"}})
	if l.MaxRecipients != 20 || l.Source["max_recipients"] != "*" {
		t.Errorf("max_recipients %d from %s", l.MaxRecipients, l.Source["max_recipients"])
	}
	if l.Rates[MessagesPerMinute] != 5 || l.Source["messages_per_minute"] != "uid:33" {
		t.Errorf("messages_per_minute %d from %s", l.Rates[MessagesPerMinute], l.Source["messages_per_minute"])
	}
	if l.Rates[MessagesPerHour] != 1000 || l.Source["messages_per_hour"] != "group:shops" {
		t.Errorf("messages_per_hour %d from %s", l.Rates[MessagesPerHour], l.Source["messages_per_hour"])
	}
	if l.Rates[MessagesPerDay] != Defaults().Rates[MessagesPerDay] || l.Source["messages_per_day"] != "default" {
		t.Errorf("messages_per_day %d from %s", l.Rates[MessagesPerDay], l.Source["messages_per_day"])
	}
	if l.Action != Hold || l.Source["action"] != "www-data" || strings.Join(l.FromDomains, ",") != "shop.example" {
		t.Errorf("action %s from %s, from_domains %v", l.Action, l.Source["action"], l.FromDomains)
	}
	// Another member of the group gets the group's action.
	if l := p.Resolve(Account{UID: 1001, User: "shop2", Groups: []string{"shops"}}); l.Action != Refuse || l.Rates[MessagesPerMinute] != Defaults().Rates[MessagesPerMinute] {
		t.Errorf("shop2: %+v", l)
	}
	// Root has no rates unless a table for it says so ("*" does not).
	star := p.Rules["*"]
	star.Rates[MessagesPerHour] = ip(3)
	p.Rules["*"] = star
	if l := p.Resolve(Account{UID: 0, User: "root"}); l.Rates[MessagesPerMinute] != 0 || l.Rates[MessagesPerHour] != 0 || l.MaxRecipients != 20 {
		t.Errorf("root: %+v", l)
	}
	p.Rules["root"] = Rule{Rates: [NumRates]*int{MessagesPerMinute: ip(7)}}
	if l := p.Resolve(Account{UID: 0, User: "root"}); l.Rates[MessagesPerMinute] != 7 || l.Rates[MessagesPerHour] != 1000 && l.Rates[MessagesPerHour] != 0 {
		t.Errorf("root with a table: %+v", l)
	}
}

func TestCheckStatic(t *testing.T) {
	l := Defaults()
	l.Source = map[string]string{"from_domains": "www-data", "max_recipients": "default", "max_size": "*"}
	l.FromDomains = []string{"shop.example", "*.example.org"}
	l.MaxSize = 1000
	for _, tc := range []struct {
		from  []string
		nrcpt int
		size  int64
		want  string
	}{
		{[]string{"a@shop.example"}, 1, 10, ""},
		{[]string{"a@SHOP.example", "b@news.example.org"}, 1000, -1, ""},
		{[]string{"a@bank.example"}, 1, 10, `policy: the From: address "a@bank.example" is not in a domain this account may send from (from_domains ([policy.www-data]))`},
		{[]string{"a@shop.example"}, 1001, 10, "policy: 1001 recipients, more than the 1000 allowed per message (max_recipients (built-in default))"},
		{[]string{"a@shop.example"}, 1, 1001, `policy: the message is larger than the 1000 bytes allowed (max_size ([policy."*"]))`},
	} {
		v := l.CheckStatic(tc.from, tc.nrcpt, tc.size)
		got := ""
		if v != nil {
			got = v.Error()
			if !v.Static || v.Action != Refuse {
				t.Errorf("%v: not a static refusal: %+v", tc.from, v)
			}
		}
		if got != tc.want {
			t.Errorf("%v %d %d: %q, want %q", tc.from, tc.nrcpt, tc.size, got, tc.want)
		}
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func limits(action Action, perMin int) *Limits {
	l := Limits{Action: action, Source: map[string]string{}}
	l.Rates[MessagesPerMinute] = perMin
	return &l
}

func TestBucketBurstThenRate(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	e, err := Open(nil, "", c.now)
	if err != nil {
		t.Fatal(err)
	}
	a := Account{UID: 33, User: "www-data"}
	l := limits(Hold, 60)
	for i := 0; i < 60; i++ {
		if d := e.Decide(a, l, 1); d.Action != Accept {
			t.Fatalf("message %d of the burst: %+v", i, d)
		}
	}
	d := e.Decide(a, l, 1)
	if d.Action != Hold || d.Violation == nil || d.Violation.Limit != "messages_per_minute" || !d.Notice {
		t.Fatalf("61st: %+v", d)
	}
	if want := c.t.Add(time.Second); !d.Violation.Until.Equal(want) {
		t.Errorf("until %v, want %v", d.Violation.Until, want)
	}
	if !strings.Contains(d.Violation.Error(), "rate limit messages_per_minute=60 reached (built-in default): messages over the last minute would be 61") {
		t.Errorf("error: %s", d.Violation.Error())
	}
	// Held messages are not counted: a second later one more fits, and
	// the notice is not repeated.
	for i := 0; i < 100; i++ {
		if d := e.Decide(a, l, 1); d.Action != Hold || d.Notice {
			t.Fatalf("flood %d: %+v", i, d)
		}
	}
	c.t = c.t.Add(time.Second)
	if d := e.Decide(a, l, 1); d.Action != Accept {
		t.Fatalf("a second later: %+v", d)
	}
	if d := e.Decide(a, l, 1); d.Action != Hold || d.Notice {
		t.Fatalf("then: %+v", d)
	}
	// An hour of quiet ends the episode: the next trip is noticed again.
	c.t = c.t.Add(NoticeQuiet + time.Minute)
	for i := 0; i < 60; i++ {
		e.Decide(a, l, 1)
	}
	if d := e.Decide(a, l, 1); d.Action != Hold || !d.Notice {
		t.Fatalf("new episode: %+v", d)
	}
	// Another account is not affected.
	if d := e.Decide(Account{UID: 1001}, l, 1); d.Action != Accept {
		t.Fatalf("other account: %+v", d)
	}
}

func TestBucketDeferSpreadsAtTheRate(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	e, _ := Open(nil, "", c.now)
	a := Account{UID: 33}
	l := limits(Defer, 6) // one every 10 s after a burst of 6
	for i := 0; i < 6; i++ {
		if d := e.Decide(a, l, 1); d.Action != Accept {
			t.Fatalf("%d: %+v", i, d)
		}
	}
	for i := 1; i <= 5; i++ {
		d := e.Decide(a, l, 1)
		if d.Action != Defer || !d.At.Equal(c.t.Add(time.Duration(i)*10*time.Second)) {
			t.Fatalf("deferred %d: %+v, want at +%ds", i, d, i*10)
		}
	}
}

func TestRecipientRates(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	e, _ := Open(nil, "", c.now)
	l := Limits{Action: Refuse, Source: map[string]string{"recipients_per_hour": "*"}}
	l.Rates[RecipientsPerHour] = 100
	a := Account{UID: 1000}
	if d := e.Decide(a, &l, 60); d.Action != Accept {
		t.Fatalf("%+v", d)
	}
	d := e.Decide(a, &l, 60)
	if d.Action != Refuse || d.Violation.Limit != "recipients_per_hour" || d.Violation.Got != 120 {
		t.Fatalf("%+v %+v", d, d.Violation)
	}
	if d := e.Decide(a, &l, 40); d.Action != Accept {
		t.Fatalf("40 more: %+v", d)
	}
	// An idle account may send one message with more recipients than the
	// whole allowance; then it waits until the bucket has drained.
	b := Account{UID: 1001}
	if d := e.Decide(b, &l, 250); d.Action != Accept {
		t.Fatalf("250 from an empty bucket: %+v", d)
	}
	if d := e.Decide(b, &l, 1); d.Action != Refuse {
		t.Fatalf("then 1 more: %+v", d)
	}
	c.t = c.t.Add(151 * time.Hour / 100)
	if d := e.Decide(b, &l, 1); d.Action != Accept {
		t.Fatalf("after 1.51 hours (1.5 to drain the excess): %+v", d)
	}
}

// openQueue opens the queue journal of the spool at root (prepared when
// new) as the engine's store.
func openQueue(t *testing.T, root string) *spool.Queue {
	t.Helper()
	if err := spool.Prepare(root, spool.CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	q, err := spool.OpenQueue(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

// The counters, trips and freezes survive a restart (a new Engine over
// the same queue journal), and an account with nothing left to remember
// is forgotten in the journal too.
func TestStatePersists(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	root := filepath.Join(t.TempDir(), "spool")
	q := openQueue(t, root)
	legacy := filepath.Join(root, spool.DirQueue, StateFile)
	e, err := Open(q, legacy, c.now)
	if err != nil {
		t.Fatal(err)
	}
	a := Account{UID: 33, User: "www-data"}
	l := limits(Hold, 10)
	for i := 0; i < 10; i++ {
		e.Decide(a, l, 1)
	}
	if d := e.Decide(a, l, 1); !d.Notice {
		t.Fatal("no notice on the first trip")
	}
	e.Decide(Account{UID: 44}, limits(Hold, 60), 1)
	if changed, err := e.SetFrozen(1001, "alice", true); !changed || err != nil {
		t.Fatalf("SetFrozen: %v %v", changed, err)
	}
	if err := e.Save(false); err != nil {
		t.Fatal(err)
	}
	// No Sync: the queue's Close (as relayd's next Sync) makes them
	// durable.
	q.Close()
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Errorf("a state file was written: %v", err)
	}
	q2 := openQueue(t, root)
	if got := q2.PolicyRecords(); len(got) != 3 {
		t.Errorf("%d accounts recorded in the journal, want 3: %q", len(got), got)
	}
	e2, err := Open(q2, legacy, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if d := e2.Decide(a, l, 1); d.Action != Hold || d.Notice {
		t.Fatalf("after a restart: %+v (the bucket must still be full and the episode known)", d)
	}
	if !e2.IsFrozen(1001) || strings.Join(frozenNames(e2), ",") != "alice" {
		t.Errorf("freeze lost: %v", frozenNames(e2))
	}
	if d := e2.Decide(Account{UID: 1001, User: "alice"}, l, 1); d.Action != Hold || !d.Frozen {
		t.Errorf("frozen account: %+v", d)
	}
	// Two hours later 44's bucket is empty and 33's episode over: both
	// are forgotten, alice's freeze kept.
	c.t = c.t.Add(2 * time.Hour)
	if err := e2.Save(true); err != nil {
		t.Fatal(err)
	}
	if got := q2.PolicyRecords(); len(got) != 1 || got["1001"] == nil {
		t.Errorf("accounts recorded after two quiet hours: %q, want alice's only", got)
	}
}

// A queue without policy records and the former state file: the counters
// are read from the file, recorded in the journal, and the file removed;
// a damaged file is set aside and the counters start afresh.
func TestStateFileMigrated(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	root := filepath.Join(t.TempDir(), "spool")
	q := openQueue(t, root)
	legacy := filepath.Join(root, spool.DirQueue, StateFile)
	tat := c.t.Add(30 * time.Minute).Format(time.RFC3339)
	old := `{"version":1,"saved":"` + c.t.Format(time.RFC3339) + `","accounts":{"33":{"name":"www-data","tat":{"messages_per_minute":"` + tat + `"}},"1001":{"name":"alice","frozen":true}}}`
	if err := os.WriteFile(legacy, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := Open(q, legacy, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if !e.IsFrozen(1001) {
		t.Error("the file's freeze not loaded")
	}
	if d := e.Decide(Account{UID: 33}, limits(Hold, 10), 1); d.Action != Hold {
		t.Errorf("the file's counters not loaded: %+v", d)
	}
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Errorf("the state file is still there after the migration: %v", err)
	}
	q.Close()
	q2 := openQueue(t, root)
	e2, err := Open(q2, legacy, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if !e2.IsFrozen(1001) {
		t.Error("the migrated freeze is not in the journal")
	}
	if d := e2.Decide(Account{UID: 33}, limits(Hold, 10), 1); d.Action != Hold {
		t.Errorf("the migrated counters are not in the journal: %+v", d)
	}

	root2 := filepath.Join(t.TempDir(), "spool")
	q3 := openQueue(t, root2)
	bad := filepath.Join(root2, spool.DirQueue, StateFile)
	os.WriteFile(bad, []byte("{garbage"), 0o600)
	if _, err := Open(q3, bad, c.now); err == nil || !strings.Contains(err.Error(), "afresh") {
		t.Errorf("damaged state: %v", err)
	}
	if _, err := os.Stat(bad + ".bad"); err != nil {
		t.Error(err)
	}
}

// BenchmarkGateAdmit is the policy's cost per message at pickup: the
// limits (cached per UID), the static checks, the six buckets and the
// sample kept for the notice.
func BenchmarkGateAdmit(b *testing.B) {
	e, err := Open(nil, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	g := NewGate(&Policy{Rules: map[string]Rule{"*": {Rates: [NumRates]*int{MessagesPerMinute: ip(0), MessagesPerHour: ip(0), MessagesPerDay: ip(0)}}}}, e)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := &Message{ID: "0006270A1B2C3D4E5F60", Account: Account{UID: 1000 + i%50, User: "site"}, From: []string{"a@example.org"}, Rcpts: 1, Size: 2000,
			Script: "/srv/www/x.php", Subject: "hello", To: "b@example.net"}
		l := g.Limits(m)
		g.Admit(m, &l)
	}
}

// The built-in defaults leave a busy but normal site alone and stop a
// compromised one within its first minute: a shop sending 1,500 messages
// over a day (a steady trickle, plus a burst of 50 order confirmations
// every hour, some to 10 recipients) never trips a limit; a site sending
// 10 messages a second is held within seconds, after about 67.
func TestDefaultsNormalVersusCompromised(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	e, _ := Open(nil, "", c.now)
	p := &Policy{}
	shop := Account{UID: 1001, User: "shop"}
	l := p.Resolve(shop)
	sent := 0
	for hour := 0; hour < 24; hour++ {
		start := c.t
		for i := 0; i < 50; i++ { // the burst
			nrcpt := 1
			if i%10 == 0 {
				nrcpt = 10
			}
			if d := e.Decide(shop, &l, nrcpt); d.Action != Accept {
				t.Fatalf("hour %d, burst message %d: %+v %v", hour, i, d, d.Violation)
			}
			sent++
		}
		for i := 0; i < 12; i++ { // then one every 5 minutes
			c.t = c.t.Add(5 * time.Minute)
			if d := e.Decide(shop, &l, 1); d.Action != Accept {
				t.Fatalf("hour %d, trickle %d: %+v %v", hour, i, d, d.Violation)
			}
			sent++
		}
		c.t = start.Add(time.Hour)
	}
	if sent < 1400 {
		t.Fatalf("only %d sent", sent)
	}
	spam := Account{UID: 33, User: "www-data"}
	l = p.Resolve(spam)
	accepted, firstHeld, notices := 0, -1, 0
	for i := 0; i < 600; i++ { // one minute at 10 a second
		d := e.Decide(spam, &l, 1)
		switch {
		case d.Action == Accept:
			accepted++
		case firstHeld < 0:
			firstHeld = i
		}
		if d.Notice {
			notices++
		}
		c.t = c.t.Add(100 * time.Millisecond)
	}
	// 60 at once, then one a second while the bucket drains: held from
	// about the 67th, 120 out in the whole minute, one notice.
	if firstHeld < 60 || firstHeld > 70 || accepted > 121 || notices != 1 {
		t.Errorf("flood: first held #%d, %d accepted of 600, %d notices", firstHeld+1, accepted, notices)
	}
}

// frozenNames lists the frozen accounts' names, sorted, from the
// engine's state.
func frozenNames(e *Engine) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ac := range e.accts {
		if ac.Frozen {
			out = append(out, ac.Name)
		}
	}
	sort.Strings(out)
	return out
}

// A store that cannot record (here a queue closed under the engine, as
// one that fails its appends): a freeze is not applied, in memory or in
// a later Save; Save's errors say when they repeat the last one; the
// counters are kept for the Save that succeeds.
func TestSaveFailure(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	root := filepath.Join(t.TempDir(), "spool")
	q := openQueue(t, root)
	e, err := Open(q, "", c.now)
	if err != nil {
		t.Fatal(err)
	}
	a := Account{UID: 33}
	e.Decide(a, limits(Hold, 10), 1)
	q.Close()
	if changed, err := e.SetFrozen(1001, "alice", true); changed || err == nil || RepeatedSaveError(err) {
		t.Errorf("SetFrozen on a closed store: %v %v, want a first failure", changed, err)
	}
	if e.IsFrozen(1001) {
		t.Error("a freeze that could not be recorded is applied")
	}
	if err := e.Save(true); err == nil || !RepeatedSaveError(err) {
		t.Errorf("second failing Save: %v, want a repeated failure", err)
	}
	q2 := openQueue(t, root)
	e.store = q2 // the store works again
	if err := e.Save(true); err != nil {
		t.Fatal(err)
	}
	got := q2.PolicyRecords()
	if got["33"] == nil || strings.Contains(string(got["1001"]), `"frozen":true`) {
		t.Errorf("recorded after the failures: %q, want 33's counters and no freeze", got)
	}
}

// The notice's table of the account's limits gives a value for every
// limit it lists: max_held and max_quarantined included (they were
// listed with an empty value).
func TestNoticeLimitsHaveValues(t *testing.T) {
	p := &Policy{Rules: map[string]Rule{}}
	l := p.Resolve(Account{UID: 1000, User: "alice"})
	n := &Notice{Account: Account{UID: 1000, User: "alice"}, Limits: l, Action: Hold, Time: time.Unix(0, 0)}
	text := n.Text()
	for k := range l.Source {
		if v := l.value(k); v == "" {
			t.Errorf("limit %s has no value in the notice", k)
		}
	}
	for _, want := range []string{"max_held               1000 ", "max_quarantined        100 "} {
		if !strings.Contains(text, want) {
			t.Errorf("notice lacks %q:\n%s", want, text)
		}
	}
}

// A changed limit keeps the count the bucket holds: 3 of 3 a minute
// used, raised to 6, 3 more fit and the 7th is counted 7; lowered back
// to 3, the next is counted 7 against 3 (and 3 a minute drains it at 20 s
// a message). Undo takes back in the units the bucket is reckoned in
// now, and the limit is recorded with the counter across a restart.
func TestChangedLimitKeepsTheCount(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	root := filepath.Join(t.TempDir(), "spool")
	q := openQueue(t, root)
	e, err := Open(q, "", c.now)
	if err != nil {
		t.Fatal(err)
	}
	a := Account{UID: 33}
	for i := 0; i < 3; i++ {
		if d := e.Decide(a, limits(Hold, 3), 1); d.Action != Accept {
			t.Fatalf("%d of 3: %+v", i, d)
		}
	}
	for i := 3; i < 6; i++ {
		if d := e.Decide(a, limits(Hold, 6), 1); d.Action != Accept {
			t.Fatalf("%d of 6 after the raise: %+v %v", i, d, d.Violation)
		}
	}
	if d := e.Decide(a, limits(Hold, 6), 1); d.Action != Hold || d.Violation.Got != 7 || d.Violation.Max != 6 {
		t.Fatalf("7th of 6: %+v %+v", d, d.Violation)
	}
	d := e.Decide(a, limits(Hold, 3), 1)
	if d.Action != Hold || d.Violation.Got != 7 || d.Violation.Max != 3 || !d.Violation.Until.Equal(c.t.Add(80*time.Second)) {
		t.Fatalf("lowered to 3: %+v %+v (want got 7, within again in 80 s)", d, d.Violation)
	}
	// Undo of a message decided under 6 after the bucket moved to 3:
	// one message is 20 s of it now, not 10.
	l6 := limits(Hold, 6)
	c.t = c.t.Add(80 * time.Second)
	acc := e.Decide(a, limits(Hold, 3), 1) // now full: 3 of 3
	if acc.Action != Accept {
		t.Fatalf("after 80 s: %+v %v", acc, acc.Violation)
	}
	e.Undo(a, l6, 1, acc)
	if d := e.Decide(a, limits(Hold, 3), 1); d.Action != Accept {
		t.Fatalf("after the undo: %+v %v", d, d.Violation)
	}
	if err := e.Save(true); err != nil {
		t.Fatal(err)
	}
	q.Close()
	// Restarted with 6: the 3 counted under 3 are 3 of 6.
	q2 := openQueue(t, root)
	e2, err := Open(q2, "", c.now)
	if err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 6; i++ {
		if d := e2.Decide(a, limits(Hold, 6), 1); d.Action != Accept {
			t.Fatalf("%d of 6 after a restart: %+v %v", i, d, d.Violation)
		}
	}
	if d := e2.Decide(a, limits(Hold, 6), 1); d.Action != Hold || d.Violation.Got != 7 {
		t.Fatalf("7th of 6 after a restart: %+v %+v", d, d.Violation)
	}
}

// Raised, the waiting messages get the slots the new limit gives, oldest
// first, and a new message comes after them; lowered or unchanged,
// nothing is re-timed; removed, all go at once.
func TestRetimeRaisedRate(t *testing.T) {
	c := &clock{time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	e, _ := Open(nil, "", c.now)
	a := Account{UID: 33}
	l6 := limits(Defer, 6) // a minute: one every 10 s
	for i := 0; i < 6; i++ {
		e.Decide(a, l6, 1)
	}
	var w []Waiting
	for i := 1; i <= 6; i++ {
		if d := e.Decide(a, l6, 1); d.Action != Defer {
			t.Fatalf("deferred %d: %+v", i, d)
		}
		w = append(w, Waiting{Rcpts: 1})
	}
	if s, _ := e.Retime(a, l6, w); s != nil {
		t.Fatalf("unchanged: %+v", s)
	}
	if s, _ := e.Retime(a, limits(Defer, 3), w); s != nil {
		t.Fatalf("lowered: %+v", s)
	}
	// 12 counted (6 sent, 6 waiting) of 6; raised to 10: 6 sent, the
	// first 4 waiting fit, then one every 6 s.
	l10 := limits(Defer, 10)
	s, commit := e.Retime(a, l10, w)
	if len(s) != 6 || commit == nil {
		t.Fatalf("raised: %+v", s)
	}
	for i, sl := range s {
		want := c.t
		if i >= 4 {
			want = c.t.Add(time.Duration(i-3) * 6 * time.Second)
		}
		if !sl.At.Equal(want) || (i < 4) != (sl.Violation == nil) {
			t.Errorf("waiting %d: at +%s (%v), want +%s", i, sl.At.Sub(c.t), sl.Violation, want.Sub(c.t))
		}
	}
	if r := s[5].Reason(); !strings.HasPrefix(r, "deferred by policy until 2026-12-01T10:00:12Z: rate limit messages_per_minute=10 reached") || strings.Count(r, "2026") != 1 {
		t.Errorf("reason: %s", r)
	}
	commit()
	if d := e.Decide(a, l10, 1); d.Action != Defer || !d.At.Equal(c.t.Add(18*time.Second)) {
		t.Errorf("a new message: %+v, want at +18s, after those waiting", d)
	}
	// Removed: everything fits.
	none := limits(Defer, 0)
	s, _ = e.Retime(a, none, append(w[:2:2], Waiting{Rcpts: 1}))
	if len(s) != 3 {
		t.Fatalf("removed: %+v", s)
	}
	for i, sl := range s {
		if !sl.At.Equal(c.t) || sl.Violation != nil {
			t.Errorf("removed, waiting %d: %+v", i, sl)
		}
	}
}
