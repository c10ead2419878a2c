package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

var t0 = time.Date(2026, 11, 23, 14, 40, 0, 0, time.UTC)

// clock is the injected clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// sent is one message as the fake upstream received it.
type sent struct {
	From string
	To   []string
	Body string
}

// fakeUp is a scripted upstream: respond decides each recipient's fate.
type fakeUp struct {
	mu      sync.Mutex
	msgs    []sent
	dials   int
	dialErr error
	// respond returns the error for rcpt (nil = accepted).
	respond func(from, rcpt string) *relay.Error
	onDial  func()
	// onSend, when set, sees each message the upstream is given.
	onSend func(m *relay.Message)
	// dropNext: that many sessions find the connection closed at MAIL
	// when they are reused (an upstream that restarted).
	dropNext int
}

func (f *fakeUp) dial(ctx context.Context, up config.Upstream) (Session, error) {
	f.mu.Lock()
	f.dials++
	err, hook := f.dialErr, f.onDial
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err != nil {
		return nil, err
	}
	return &fakeSess{up: f}, nil
}

func (f *fakeUp) sent() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sent(nil), f.msgs...)
}

type fakeSess struct {
	up   *fakeUp
	used int
	dead bool
}

func (s *fakeSess) Alive() bool      { return !s.dead }
func (s *fakeSess) Upstream() string { return "fake.example:587" }
func (s *fakeSess) Close() error     { return nil }
func (s *fakeSess) Send(ctx context.Context, m *relay.Message) *relay.Result {
	s.used++
	s.up.mu.Lock()
	drop := s.used > 1 && s.up.dropNext > 0
	if drop {
		s.up.dropNext--
	}
	s.up.mu.Unlock()
	if drop {
		s.dead = true
		return failedResult(m, "fake.example:587", &relay.Error{Class: relay.Temporary, Stage: relay.StageMail, Err: io.EOF, Cause: "the upstream closed the connection at mail"})
	}
	if s.up.onSend != nil {
		s.up.onSend(m)
	}
	// The caller's work while the replies are awaited, as relay.Session
	// calls it: after the commands, after the message.
	if m.Waiting != nil {
		m.Waiting()
	}
	r, err := m.Body()
	if err != nil {
		return &relay.Result{Err: &relay.Error{Class: relay.Temporary, Stage: relay.StageMessage, Err: err}}
	}
	b, err := io.ReadAll(r)
	if m.Waiting != nil {
		m.Waiting()
	}
	if err != nil {
		return &relay.Result{Err: &relay.Error{Class: relay.Temporary, Stage: relay.StageMessage, Err: err}}
	}
	res := &relay.Result{Upstream: "fake.example:587"}
	var ok []string
	for _, rc := range m.To {
		var e *relay.Error
		if s.up.respond != nil {
			e = s.up.respond(m.From, rc)
		}
		res.Rcpts = append(res.Rcpts, relay.RcptResult{Rcpt: rc, Err: e})
		if e == nil {
			ok = append(ok, rc)
		}
	}
	if len(ok) > 0 {
		s.up.mu.Lock()
		s.up.msgs = append(s.up.msgs, sent{From: m.From, To: ok, Body: string(b)})
		n := len(s.up.msgs)
		s.up.mu.Unlock()
		res.QueueID = fmt.Sprintf("UP%d", n)
		res.Reply = "250 2.0.0 Ok: queued as " + res.QueueID
	} else {
		res.Err = res.Rcpts[0].Err
	}
	return res
}

// fakeUpstream is the configured upstream of newEnv's queue (fakeUp).
var fakeUpstream = config.Upstream{Host: "fake.example", Port: 587}

type env struct {
	t   *testing.T
	sp  *spool.Queue
	q   *Queue
	up  *fakeUp
	clk *clock
	log *bytes.Buffer
	r   *runner // Run, once e.run started it
}

func newEnv(t *testing.T, set Settings) *env {
	t.Helper()
	return newEnvAt(t, filepath.Join(t.TempDir(), "spool"), set)
}

func newEnvAt(t *testing.T, root string, set Settings) *env {
	t.Helper()
	if err := spool.Prepare(root, spool.CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.OpenQueue(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	e := &env{t: t, sp: sp, up: &fakeUp{}, clk: &clock{now: t0}, log: &bytes.Buffer{}}
	if set.Upstreams == nil {
		set.Upstreams = NewUpstreams([]config.Upstream{fakeUpstream}, relay.Options{}, e.up.dial)
	}
	if set.Hostname == "" {
		set.Hostname = "web1.example.com"
	}
	if set.Retry == nil {
		set.Retry = []time.Duration{time.Minute, 5 * time.Minute}
	}
	if set.Lifetime == 0 {
		set.Lifetime = time.Hour
	}
	if set.Concurrency == 0 {
		set.Concurrency = 2
	}
	e.q = New(sp, maillog.New(&syncBuf{b: e.log}, e.clk.Now), e.clk.Now, set)
	if err := e.q.Load(); err != nil {
		t.Fatal(err)
	}
	return e
}

type syncBuf struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }

// enqueue puts a message into incoming/ as pickup would.
func (e *env) enqueue(t *testing.T, uid int, sender string, rcpts ...string) string {
	t.Helper()
	id := spool.NewID(e.clk.Now())
	m := &spool.Meta{ID: id, Time: e.clk.Now(), Env: spool.Envelope{Sender: sender, Recipients: rcpts}, Origin: spool.Origin{UID: uid, User: "u"}}
	d, err := e.sp.NewMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(d, "From: %s\nTo: %s\nSubject: test %s\nMessage-ID: <%s@web1.example.com>\n\nHello.\n", sender, strings.Join(rcpts, ", "), id, id)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := e.sp.Sync(); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) state(t *testing.T, id string) string {
	t.Helper()
	st, err := e.sp.Locate(id)
	if errors.Is(err, spool.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// run drives the loop relayd runs, Queue.Run, with the injected clock:
// the first call starts Run, every call kicks it (as pickup and flush do)
// and returns once the loop has nothing left to start or wait for — every
// message due at the clock's time handed out and its outcome applied —
// with the time of the next deferred attempt (zero if none). Run stops at
// the end of the test.
func (e *env) run() time.Time {
	e.t.Helper()
	if e.r == nil {
		e.r = startRun(e.t, e.q)
	}
	return e.r.pass(e.t)
}

// runUntilStopped runs q until its Run returns, which a Stop from the
// test's hooks makes it do; it fails t if Run has not returned after a
// minute.
func runUntilStopped(t *testing.T, q *Queue) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- q.Run(context.Background(), context.Background()) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
}

// runner is a Queue.Run in the background, observed through onIdle.
type runner struct {
	q      *Queue
	mu     sync.Mutex
	seen   uint64    // the Kick count the loop's last idle covers
	next   time.Time // its next deferred attempt
	idle   chan struct{}
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startRun starts q.Run until the end of the test.
func startRun(tb testing.TB, q *Queue) *runner {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{q: q, idle: make(chan struct{}, 1), cancel: cancel, done: make(chan error, 1)}
	q.onIdle = func(kicks uint64, next time.Time) {
		r.mu.Lock()
		r.seen, r.next = kicks, next
		r.mu.Unlock()
		select {
		case r.idle <- struct{}{}:
		default:
		}
	}
	go func() { r.done <- q.Run(ctx, ctx) }()
	tb.Cleanup(r.stop)
	return r
}

// pass kicks the loop and waits until it is idle after that kick.
func (r *runner) pass(tb testing.TB) time.Time {
	tb.Helper()
	r.q.Kick()
	k := r.q.kicks.Load()
	limit := time.After(60 * time.Second)
	for {
		r.mu.Lock()
		seen, next := r.seen, r.next
		r.mu.Unlock()
		if seen >= k {
			return next
		}
		select {
		case <-r.idle:
		case err := <-r.done:
			r.once.Do(r.cancel) // stop has nothing left to wait for
			tb.Fatalf("Run returned during a pass: %v", err)
		case <-limit:
			tb.Fatalf("the scheduler did not settle within 60 s")
		}
	}
}

// stop ends Run and waits for its deliveries.
func (r *runner) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
	})
}

func temp(text string) *relay.Error {
	return &relay.Error{Class: relay.Temporary, Stage: relay.StageRcpt, Code: 451, Enhanced: "4.3.0", Text: text}
}

func perm(text string) *relay.Error {
	return &relay.Error{Class: relay.Permanent, Stage: relay.StageRcpt, Code: 550, Enhanced: "5.1.1", Text: text,
		Cause: "the recipient's address does not exist at the upstream", Fix: "check the address"}
}

func TestDeliverAll(t *testing.T) {
	e := newEnv(t, Settings{})
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, e.enqueue(t, 1001, "a@example.org", "b@example.org", "c@example.org"))
	}
	if next := e.run(); !next.IsZero() {
		t.Errorf("next attempt %v, want none", next)
	}
	if got := len(e.up.sent()); got != 5 {
		t.Fatalf("upstream got %d messages, want 5", got)
	}
	for _, id := range ids {
		if st := e.state(t, id); st != "" || e.sp.HasMessage(id) {
			t.Errorf("%s left in %q", id, st)
		}
	}
	// The per-recipient line's format is pinned.
	line := "ts=2026-11-23T14:40:00.000Z event=delivery id=" + ids[0] + " to=b@example.org upstream=fake.example:587 status=sent reply=\"250 2.0.0 Ok: queued as UP"
	if !strings.Contains(e.log.String(), line) {
		t.Errorf("log lacks\n%s\nin:\n%s", line, e.log)
	}
	if !strings.Contains(e.log.String(), "event=removed id="+ids[0]+" sent=2 bounced=0\n") {
		t.Errorf("log:\n%s", e.log)
	}
	// Five messages over at most two sessions (concurrency 2).
	if e.up.dials > 2 {
		t.Errorf("%d dials for 5 messages with concurrency 2", e.up.dials)
	}
}

func TestAttemptRecordedBeforeDial(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1})
	id := e.enqueue(t, 1001, "a@example.org", "b@example.org")
	var seen *spool.Delivery
	e.up.onDial = func() {
		d, err := e.sp.ReadState(spool.Active, id)
		if err != nil {
			t.Errorf("no state in active at dial time: %v", err)
			return
		}
		seen = d
	}
	e.run()
	if seen == nil || seen.Attempts != 1 || !seen.Next.Equal(t0.Add(time.Minute)) || !seen.Last.Equal(t0) {
		t.Fatalf("state at dial time: %+v", seen)
	}
}

func TestRetryScheduleLifetimeAndDSN(t *testing.T) {
	e := newEnv(t, Settings{Retry: []time.Duration{time.Minute, 5 * time.Minute}, Lifetime: 20 * time.Minute})
	e.up.respond = func(from, rcpt string) *relay.Error {
		if from == "" {
			return nil // the bounce goes through
		}
		return temp("4.3.0 mailbox busy")
	}
	id := e.enqueue(t, 1001, "sender@example.org", "busy@example.net")
	// attempt 1 at t0, then t0+1m, +5m, +5m... until 20m after arrival.
	wantAttempts := []time.Duration{0, time.Minute, 6 * time.Minute, 11 * time.Minute, 16 * time.Minute}
	for i, at := range wantAttempts {
		e.clk.Set(t0.Add(at))
		next := e.run()
		d, err := e.sp.ReadState(spool.Deferred, id)
		if err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		if d.Attempts != i+1 {
			t.Fatalf("at +%v: %d attempts, want %d", at, d.Attempts, i+1)
		}
		wait := 5 * time.Minute
		if i == 0 {
			wait = time.Minute
		}
		if !next.Equal(t0.Add(at+wait)) || !d.Next.Equal(next) {
			t.Fatalf("at +%v: next %v (state %v), want %v", at, next, d.Next, t0.Add(at+wait))
		}
		// Nothing happens before the next attempt is due.
		e.clk.Set(next.Add(-time.Second))
		e.run()
		if d2, _ := e.sp.ReadState(spool.Deferred, id); d2 == nil || d2.Attempts != i+1 {
			t.Fatalf("attempted before it was due")
		}
	}
	if !strings.Contains(e.log.String(), "event=deferred id="+id+" attempts=2 next=2026-11-23T14:46:00Z nrcpt=1 reason=\"451 4.3.0 4.3.0 mailbox busy\"") &&
		!strings.Contains(e.log.String(), "event=deferred id="+id+" attempts=2 next=2026-11-23T14:46:00Z") {
		t.Errorf("deferred line missing:\n%s", e.log)
	}
	// Past the lifetime: bounced, the original removed, the DSN queued.
	e.clk.Set(t0.Add(21 * time.Minute))
	e.run() // bounces and queues the DSN
	e.run() // delivers the DSN
	if st := e.state(t, id); st != "" {
		t.Fatalf("expired message in %q", st)
	}
	msgs := e.up.sent()
	if len(msgs) != 1 {
		t.Fatalf("upstream got %d messages, want the DSN only", len(msgs))
	}
	dsn := msgs[0]
	if dsn.From != "" || len(dsn.To) != 1 || dsn.To[0] != "sender@example.org" {
		t.Fatalf("DSN envelope: from %q to %q", dsn.From, dsn.To)
	}
	checkDSN(t, dsn.Body, id, "busy@example.net", "4.3.0", "could not be delivered within 20m (the queue lifetime)")
	if !strings.Contains(e.log.String(), "status=bounced reply=\"451 4.3.0 4.3.0 mailbox busy\" reason=\"lifetime exceeded\"") &&
		!strings.Contains(e.log.String(), "reason=\"lifetime exceeded\"") {
		t.Errorf("log:\n%s", e.log)
	}
	if !strings.Contains(e.log.String(), "event=bounced id="+id+" dsn=") {
		t.Errorf("no bounced line:\n%s", e.log)
	}
}

// checkDSN parses a DSN and checks its RFC 3464 structure and content.
func checkDSN(t *testing.T, body, origID, rcpt, status, explanation string) {
	t.Helper()
	ent, err := message.Read(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DSN does not parse: %v\n%s", err, body)
	}
	ct, params, _ := ent.Header.ContentType()
	if ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN content type %q %v", ct, params)
	}
	if ent.Header.Get("Auto-Submitted") != "auto-replied" || !strings.Contains(ent.Header.Get("From"), "MAILER-DAEMON@") {
		t.Errorf("DSN header: %v", ent.Header)
	}
	mr := ent.MultipartReader()
	var types []string
	var parts []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pt, _, _ := p.Header.ContentType()
		types = append(types, pt)
		b, _ := io.ReadAll(p.Body)
		parts = append(parts, string(b))
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Fatalf("DSN parts %v", types)
	}
	if !strings.Contains(parts[0], "<"+rcpt+">") || !strings.Contains(parts[0], explanation) {
		t.Errorf("explanation part lacks %q:\n%s", explanation, parts[0])
	}
	for _, want := range []string{"Reporting-MTA: dns; web1.example.com", "Final-Recipient: rfc822; " + rcpt, "Action: failed", "Status: " + status, "Diagnostic-Code: smtp; ", "Remote-MTA: dns; fake.example"} {
		if !strings.Contains(parts[1], want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, parts[1])
		}
	}
	if !strings.Contains(parts[2], "Message-ID: <"+origID+"@web1.example.com>") {
		t.Errorf("original headers missing:\n%s", parts[2])
	}
}

func TestPermanentMixedRecipients(t *testing.T) {
	e := newEnv(t, Settings{})
	e.up.respond = func(from, rcpt string) *relay.Error {
		switch rcpt {
		case "nouser@example.net":
			return perm("5.1.1 <nouser@example.net>: Recipient address rejected: User unknown")
		case "busy@example.net":
			return temp("4.2.1 try later")
		}
		return nil
	}
	id := e.enqueue(t, 1001, "sender@example.org", "ok@example.net", "nouser@example.net", "busy@example.net")
	e.run()
	if st := e.state(t, id); st != spool.Deferred {
		t.Fatalf("state %q", st)
	}
	d, _ := e.sp.ReadState(spool.Deferred, id)
	if len(d.Sent) != 1 || d.Sent[0] != "ok@example.net" || len(d.Failed) != 1 || d.Failed[0].Rcpt != "nouser@example.net" || len(d.Bounces) != 1 {
		t.Fatalf("state %+v", d)
	}
	if !strings.Contains(e.log.String(), "event=delivery id="+id+" to=nouser@example.net upstream=fake.example:587 status=bounced reply=\"550 5.1.1 5.1.1 <nouser@example.net>: Recipient address rejected: User unknown\" stage=rcpt cause=\"the recipient's address does not exist at the upstream\" fix=\"check the address\"") {
		t.Errorf("bounced line:\n%s", e.log)
	}
	// The DSN, new mail in the queue, goes out in the same pass, with the
	// cause in plain words; the deferred message is not due yet.
	msgs := e.up.sent()
	if len(msgs) != 2 || msgs[0].From == "" || msgs[1].From != "" {
		t.Fatalf("want the message, then its DSN: %+v", msgs)
	}
	checkDSN(t, msgs[1].Body, id, "nouser@example.net", "5.1.1", "the recipient's address does not exist at the upstream")
	if !strings.Contains(msgs[1].Body, "What to do: check the address") {
		t.Errorf("DSN without the fix:\n%s", msgs[1].Body)
	}
	// The retry sends to busy@ only: ok@ is never sent twice.
	e.up.respond = func(from, rcpt string) *relay.Error { return nil }
	e.clk.Set(t0.Add(time.Minute))
	e.run()
	msgs = e.up.sent()
	if len(msgs) != 3 || strings.Join(msgs[2].To, ",") != "busy@example.net" {
		t.Fatalf("retry sent to %+v", msgs[len(msgs)-1].To)
	}
	if st := e.state(t, id); st != "" {
		t.Fatalf("finished message in %q", st)
	}
}

func TestBounceIsNeverBounced(t *testing.T) {
	e := newEnv(t, Settings{})
	e.up.respond = func(from, rcpt string) *relay.Error { return perm("5.1.1 no such user") }
	id := e.enqueue(t, 1001, "gone@example.org", "nouser@example.net")
	e.run() // the original fails, a DSN to gone@ is queued
	e.run() // the DSN fails: kept in failed/, not bounced
	ids, _ := e.sp.List(spool.Failed)
	if len(ids) != 1 || ids[0] == id {
		t.Fatalf("failed/ holds %v", ids)
	}
	dsnID := ids[0]
	d, _ := e.sp.ReadState(spool.Failed, dsnID)
	if len(d.Bounces) != 0 || !strings.Contains(d.Reason, "never bounced") {
		t.Errorf("state %+v", d)
	}
	if n := strings.Count(e.log.String(), "event=bounced"); n != 1 {
		t.Errorf("%d bounced lines, want 1:\n%s", n, e.log)
	}
	if !strings.Contains(e.log.String(), "event=delivery id="+dsnID+" to=gone@example.org upstream=fake.example:587 status=failed") ||
		!strings.Contains(e.log.String(), "event=failed id="+dsnID+" from=<> nrcpt=1") {
		t.Errorf("log:\n%s", e.log)
	}
	for _, s := range []string{spool.Incoming, spool.Deferred, spool.Active} {
		if ids, _ := e.sp.List(s); len(ids) != 0 {
			t.Errorf("%s holds %v", s, ids)
		}
	}
	// Released by the admin once the address is fixed upstream, it is
	// retried to its failed recipient, and delivered.
	e.up.respond = nil
	if err := e.q.Handle(control.Peer{Admin: true}, control.VerbRelease, []string{dsnID}, io.Discard); err != nil {
		t.Fatal(err)
	}
	e.run()
	if st := e.state(t, dsnID); st != "" {
		t.Fatalf("released bounce in %q", st)
	}
	if msgs := e.up.sent(); len(msgs) != 1 || msgs[0].From != "" || msgs[0].To[0] != "gone@example.org" {
		t.Fatalf("sent %+v", msgs)
	}
}

func TestAuthFailureIsLoudAndNeverBounces(t *testing.T) {
	e := newEnv(t, Settings{Lifetime: 10 * time.Minute})
	e.up.dialErr = &relay.Error{Class: relay.AuthFailure, Stage: relay.StageAuth, Code: 535, Enhanced: "5.7.8", Text: "Error: authentication failed",
		Cause: "the upstream refused the user name or password", Fix: "check username and password_file"}
	id := e.enqueue(t, 1001, "sender@example.org", "x@example.net")
	for _, at := range []time.Duration{0, time.Minute, 6 * time.Minute, 11 * time.Minute, 16 * time.Minute} {
		e.clk.Set(t0.Add(at))
		e.run()
	}
	if st := e.state(t, id); st != spool.Deferred {
		t.Fatalf("state %q", st)
	}
	if n := strings.Count(e.log.String(), "event=auth-failed upstream=fake.example:587 reply=\"535 5.7.8 Error: authentication failed\" cause=\"the upstream refused the user name or password\" fix=\"check username and password_file\"\n"); n != 5 {
		t.Errorf("%d auth-failed lines, want 5:\n%s", n, e.log)
	}
	if strings.Contains(e.log.String(), "bounced") {
		t.Errorf("an auth failure bounced:\n%s", e.log)
	}
}

func TestDeadUpstreamDialsOncePerWorker(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 2})
	e.up.dialErr = &relay.Error{Class: relay.Temporary, Stage: relay.StageConnect, Err: errors.New("connection refused")}
	defer func() {
		if !strings.Contains(e.log.String(), "status=deferred reply=\"connection refused\" stage=connect\n") {
			t.Errorf("log:\n%s", e.log)
		}
	}()
	for i := 0; i < 10; i++ {
		e.enqueue(t, 1001, "a@example.org", "b@example.org")
	}
	e.run()
	if e.up.dials > 2 {
		t.Errorf("%d dials", e.up.dials)
	}
	if ids, _ := e.sp.List(spool.Deferred); len(ids) != 10 {
		t.Errorf("deferred: %d", len(ids))
	}
}

func TestControlVerbs(t *testing.T) {
	e := newEnv(t, Settings{})
	e.up.respond = func(from, rcpt string) *relay.Error { return temp("4.3.0 later") }
	mine := e.enqueue(t, 1001, "me@example.org", "x@example.net")
	theirs := e.enqueue(t, 1002, "them@example.org", "y@example.net")
	e.run()
	var out bytes.Buffer
	if err := e.q.Handle(control.Peer{UID: 1001}, control.VerbMailq, nil, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), mine) || strings.Contains(out.String(), theirs) || !strings.Contains(out.String(), "-- 1 Kbytes in 1 Request.") {
		t.Errorf("mailq for uid 1001:\n%s", out.String())
	}
	if !strings.HasPrefix(out.String(), "-Queue ID-") || !strings.Contains(out.String(), "(451 4.3.0 4.3.0 later)") {
		t.Errorf("mailq layout:\n%s", out.String())
	}
	out.Reset()
	e.q.Handle(control.Peer{UID: 0, Admin: true}, control.VerbMailq, nil, &out)
	if !strings.Contains(out.String(), mine) || !strings.Contains(out.String(), theirs) || !strings.Contains(out.String(), "in 2 Requests.") {
		t.Errorf("mailq for root:\n%s", out.String())
	}
	admin := control.Peer{UID: 0, Admin: true}
	out.Reset()
	if err := e.q.Handle(admin, control.VerbHold, []string{mine}, &out); err != nil {
		t.Fatal(err)
	}
	if e.state(t, mine) != spool.Held {
		t.Fatal("not held")
	}
	out.Reset()
	e.q.Handle(admin, control.VerbMailq, nil, &out)
	if !strings.Contains(out.String(), mine+"!") {
		t.Errorf("held mark missing:\n%s", out.String())
	}
	out.Reset()
	e.q.Handle(admin, control.VerbShow, []string{mine}, &out)
	for _, want := range []string{"state:         held", "uid:           1001", "attempts:      1", "last reply:    451 4.3.0 4.3.0 later"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, out.String())
		}
	}
	if err := e.q.Handle(admin, control.VerbRelease, []string{mine}, io.Discard); err != nil {
		t.Fatalf("release: %v", err)
	}
	// Released for delivery now: the running scheduler tries it at once
	// (and the upstream defers it again).
	e.run()
	if st, d := e.state(t, mine), e.deliveryState(t, mine); st != spool.Deferred || d.Attempts != 2 {
		t.Fatalf("after release: state %q, %d attempts; want deferred after a second attempt", st, d.Attempts)
	}
	if err := e.q.Handle(admin, control.VerbDelete, []string{mine, "0000000000000000000F"}, io.Discard); err == nil || !strings.Contains(err.Error(), "no such message") {
		t.Fatalf("delete with a missing id: %v", err)
	}
	if e.state(t, mine) != "" || e.sp.HasMessage(mine) {
		t.Fatal("not deleted")
	}
	out.Reset()
	e.q.Handle(admin, control.VerbList, nil, &out)
	if !strings.Contains(out.String(), theirs+" deferred") || !strings.Contains(out.String(), "1 message(s)") {
		t.Errorf("list:\n%s", out.String())
	}
	// flush makes the deferred message due now.
	e.up.respond = nil
	e.q.Handle(control.Peer{UID: 1002}, control.VerbFlush, nil, io.Discard)
	e.run()
	if e.state(t, theirs) != "" {
		t.Fatal("flush did not deliver")
	}
	out.Reset()
	e.q.Handle(admin, control.VerbMailq, nil, &out)
	if out.String() != "Mail queue is empty\n" {
		t.Errorf("mailq: %q", out.String())
	}
}

func TestCorruptQueuedMessageIsQuarantined(t *testing.T) {
	e := newEnv(t, Settings{})
	id := e.enqueue(t, 1001, "a@example.org", "b@example.org")
	// Its header damaged on disk.
	p, off, _, err := e.sp.Section(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XYZ"), off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.run()
	if st := e.state(t, id); st != "" {
		t.Fatalf("state %q", st)
	}
	if _, err := os.Stat(filepath.Join(e.sp.Root, spool.DirQuarantine, id)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.log.String(), "event=quarantine id="+id) {
		t.Errorf("log:\n%s", e.log)
	}
}

// A message pickup refused is bounced with
// the reason, the fix and the status, and no upstream is named.
func TestRejectBounce(t *testing.T) {
	e := newEnv(t, Settings{})
	orig := spool.NewID(t0)
	m := &spool.Meta{ID: orig, Time: t0, Env: spool.Envelope{Sender: "cron@example.org", Recipients: []string{"ops@example.net", "b@example.net"}}}
	why := &pickup.RejectError{Status: "5.3.4", Cause: "the message header is too large (x)", Fix: "put long data in the body"}
	dsnID, err := e.q.Reject(m, why, []byte("Subject: huge\nMessage-ID: <"+orig+"@web1.example.com>\n"))
	if err != nil {
		t.Fatal(err)
	}
	if dsnID != orig {
		t.Errorf("the bounce is queued as %s, not under the refused file's queue ID %s (which Recover drops while the file is still in maildrop/)", dsnID, orig)
	}
	if st := e.state(t, dsnID); st != spool.Incoming {
		t.Fatalf("DSN in %q", st)
	}
	e.run()
	msgs := e.up.sent()
	if len(msgs) != 1 || msgs[0].From != "" || strings.Join(msgs[0].To, ",") != "cron@example.org" {
		t.Fatalf("sent %+v", msgs)
	}
	body := msgs[0].Body
	for _, want := range []string{"<ops@example.net>:", "<b@example.net>:", "What it means: the message header is too large (x)",
		"What to do: put long data in the body", "refused on this host before it was sent on", "Status: 5.3.4", "Final-Recipient: rfc822; b@example.net",
		"Message-ID: <" + orig + "@web1.example.com>"} {
		if !strings.Contains(body, want) {
			t.Errorf("DSN lacks %q:\n%s", want, body)
		}
	}
	for _, bad := range []string{"Remote-MTA", "Diagnostic-Code", "The upstream said"} {
		if strings.Contains(body, bad) {
			t.Errorf("DSN has %q though no upstream was involved:\n%s", bad, body)
		}
	}
}

// smallFS mounts a tmpfs of the given size on a temporary directory (root
// only) and returns its path.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file on the file system of dir until it is full, and
// returns a function that removes it.
func fill(t *testing.T, dir string) func() {
	t.Helper()
	p := filepath.Join(dir, "fill")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	return func() { os.Remove(p) }
}

// With the spool full, a partly delivered message's
// accepted recipients are remembered although the state file cannot be
// written: each gets the message once, however many retries the full
// spool lasts.
func TestFullSpoolNeverResendsAcceptedRecipients(t *testing.T) {
	dir := smallFS(t, "2m")
	e := newEnvAt(t, filepath.Join(dir, "spool"), Settings{Retry: []time.Duration{time.Minute}, Lifetime: 24 * time.Hour})
	var bOK atomic.Bool
	e.up.respond = func(from, rcpt string) *relay.Error {
		if rcpt == "b@example.org" && !bOK.Load() {
			return temp("4.2.0 mailbox busy")
		}
		return nil
	}
	id := e.enqueue(t, 1001, "sender@example.org", "a@example.org", "b@example.org")
	filler := e.enqueue(t, 1001, "sender@example.org", "c@example.org")
	if err := e.sp.Hold(filler); err != nil {
		t.Fatal(err)
	}
	free := fill(t, dir)
	// The journal keeps space in reserve for transitions on a full
	// spool: use it up, so that the records cannot be written.
	for _, n := range []int{64 << 10, 1 << 10, 1} {
		rec := &spool.Delivery{LastReply: strings.Repeat("x", n)}
		for i := 0; e.sp.WriteStateNoSync(spool.Held, filler, rec) == nil; i++ {
			if i > 100000 {
				t.Fatal("the journal never filled up")
			}
		}
	}
	for i := 0; i < 4; i++ {
		e.clk.Set(t0.Add(time.Duration(i) * 2 * time.Minute))
		e.run()
		if st := e.state(t, id); st != spool.Deferred {
			t.Fatalf("attempt %d: state %q\n%s", i+1, st, e.log)
		}
	}
	if !strings.Contains(e.log.String(), "no space left on device") {
		t.Fatalf("the spool never was full:\n%s", e.log)
	}
	free()
	bOK.Store(true)
	e.clk.Set(t0.Add(time.Hour))
	e.run()
	if st := e.state(t, id); st != "" {
		t.Fatalf("state %q after the last attempt\n%s", st, e.log)
	}
	count := map[string]int{}
	for _, m := range e.up.sent() {
		for _, r := range m.To {
			count[r]++
		}
	}
	if count["a@example.org"] != 1 || count["b@example.org"] != 1 {
		t.Errorf("copies per recipient %v, want one each\n%s", count, e.log)
	}
	if len(e.q.unsaved) != 0 {
		t.Errorf("in-memory records left: %v", e.q.unsaved)
	}
}

// The next attempt is counted from the end of a
// slow attempt, not from its start.
func TestNextAttemptAfterSlowAttempt(t *testing.T) {
	e := newEnv(t, Settings{Retry: []time.Duration{time.Minute}, Lifetime: 24 * time.Hour})
	e.up.respond = func(from, rcpt string) *relay.Error {
		e.clk.Set(t0.Add(10 * time.Minute)) // the upstream stalled for 10 minutes
		return temp("4.4.2 timeout")
	}
	id := e.enqueue(t, 1001, "sender@example.org", "a@example.org")
	next := e.run()
	d, err := e.sp.ReadState(spool.Deferred, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(11 * time.Minute); !d.Next.Equal(want) || !next.Equal(want) {
		t.Errorf("next attempt %v (state %v), want %v", next, d.Next, want)
	}
}

// A user's mailq over a large queue decodes only the user's own messages
// (the UID comes from the queue's index), and lists in order across
// states (no quadratic sort).
func TestMailqDecodesOwnOnly(t *testing.T) {
	e := newEnv(t, Settings{})
	var mine []string
	for i := 0; i < 200; i++ {
		id := e.enqueue(t, 2000+i%7, "s@example.org", "x@example.net")
		if i%50 == 0 {
			e.sp.Claim(id)
			e.sp.Requeue(id, true) // deferred: another state, older IDs
		}
		if i%100 == 0 {
			mine = append(mine, e.enqueue(t, 1001, "me@example.org", "y@example.net"))
		}
	}
	me := control.Peer{UID: 1001}
	var out bytes.Buffer
	for i := 0; i < 5; i++ {
		out.Reset()
		if err := e.q.Handle(me, control.VerbMailq, nil, &out); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.q.decodes.Load(); n != int64(5*len(mine)) {
		t.Errorf("5 mailq decoded %d messages, want %d (only the user's own)", n, 5*len(mine))
	}
	if c := strings.Count(out.String(), "me@example.org"); c != len(mine) {
		t.Errorf("mailq lists %d own messages, want %d:\n%s", c, len(mine), out.String())
	}
	out.Reset()
	if err := e.q.Handle(control.Peer{Admin: true}, control.VerbList, nil, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1+202+1 || lines[len(lines)-1] != "202 message(s)" {
		t.Fatalf("list has %d lines, want a header, 202 entries and the count:\n%s", len(lines), out.String())
	}
	es := lines[1 : len(lines)-1]
	for i := 1; i < len(es); i++ {
		if strings.Fields(es[i-1])[0] > strings.Fields(es[i])[0] {
			t.Fatalf("entries out of order at %d:\n%s\n%s", i, es[i-1], es[i])
		}
	}
}

// TestDeliveryLinesBeforeRemoval: through relayd's buffered log (a
// maillog.Buffer that would hold lines for an hour), every delivered
// message's delivery line is written out before the message leaves the
// queue, without waiting for the buffer's delay: when each line reaches
// the log, its message is still queued.
func TestDeliveryLinesBeforeRemoval(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1})
	out := &syncBuf{b: e.log}
	var mu sync.Mutex
	var gone []string // delivery lines written after their message left
	buf := maillog.NewBuffer(writerFunc(func(p []byte) (int, error) {
		for _, l := range strings.Split(string(p), "\n") {
			if _, rest, ok := strings.Cut(l, "event=delivery id="); ok {
				id, _, _ := strings.Cut(rest, " ")
				if !e.sp.HasMessage(id) {
					mu.Lock()
					gone = append(gone, id)
					mu.Unlock()
				}
			}
		}
		return out.Write(p)
	}), time.Hour)
	t.Cleanup(func() { buf.Close() })
	e.q.log = maillog.New(buf, e.clk.Now)
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, e.enqueue(t, 1001, "a@example.org", "b@example.org"))
	}
	e.run()
	if got := len(e.up.sent()); got != 5 {
		t.Fatalf("upstream got %d messages, want 5", got)
	}
	for _, id := range ids {
		if e.sp.HasMessage(id) {
			t.Fatalf("%s still queued", id)
		}
		if !strings.Contains(e.log.String(), "event=delivery id="+id+" to=b@example.org upstream=fake.example:587 status=sent") {
			t.Errorf("no delivery line for %s, which left the queue:\n%s", id, e.log)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gone) > 0 {
		t.Errorf("delivery lines written after their messages left the queue: %v", gone)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A batch whose outcomes are applied while the next message's replies
// are awaited (relay.Message.Waiting): every message has its attempt
// recorded when it is sent, goes once, and is logged and removed.
func TestBatchOutcomesWhileWaiting(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1})
	var ids []string
	for i := 0; i < 25; i++ {
		ids = append(ids, e.enqueue(t, 1001, "a@example.org", "b@example.org"))
	}
	times := map[string]int{}
	e.up.onSend = func(m *relay.Message) {
		times[m.ID]++
		d, err := e.sp.ReadState(spool.Active, m.ID)
		if err != nil || d.Attempts != 1 {
			t.Errorf("%s sent with record %+v (%v), want its attempt recorded", m.ID, d, err)
		}
	}
	e.run()
	if got := len(e.up.sent()); got != len(ids) {
		t.Fatalf("upstream got %d messages, want %d", got, len(ids))
	}
	for _, id := range ids {
		if times[id] != 1 {
			t.Errorf("%s sent %d times", id, times[id])
		}
		if e.sp.HasMessage(id) {
			t.Errorf("%s still queued", id)
		}
		if !strings.Contains(e.log.String(), "event=delivery id="+id+" to=b@example.org") || !strings.Contains(e.log.String(), "event=removed id="+id+" sent=1") {
			t.Errorf("log lacks %s's delivery or removal:\n%s", id, e.log)
		}
	}
}

// Stop in the middle of a batch: what was sent is done (its outcome
// applied, though the next message's replies were never awaited), the
// rest goes back to incoming with no attempt charged, and the next run
// sends each of them once.
func TestStopInABatchPutsBackTheRest(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1})
	var ids []string
	for i := 0; i < 25; i++ {
		ids = append(ids, e.enqueue(t, 1001, "a@example.org", "b@example.org"))
	}
	times := map[string]int{}
	var mu sync.Mutex
	e.up.onSend = func(m *relay.Message) {
		mu.Lock()
		defer mu.Unlock()
		if times[m.ID]++; len(times) == 3 && times[m.ID] == 1 {
			e.q.Stop()
		}
	}
	runUntilStopped(t, e.q)
	if got := len(e.up.sent()); got != 3 {
		t.Fatalf("upstream got %d messages before the stop, want 3", got)
	}
	if act, _ := e.sp.List(spool.Active); len(act) != 0 {
		t.Fatalf("left active: %v", act)
	}
	in, _ := e.sp.List(spool.Incoming)
	if len(in) != len(ids)-3 {
		t.Fatalf("%d back in incoming, want %d", len(in), len(ids)-3)
	}
	for _, id := range in {
		if d, err := e.sp.ReadState(spool.Incoming, id); err == nil && d.Attempts != 0 {
			t.Errorf("%s put back with %d attempts charged", id, d.Attempts)
		}
	}
	q := New(e.sp, maillog.New(&syncBuf{b: e.log}, e.clk.Now), e.clk.Now, e.q.settings())
	if err := q.Load(); err != nil {
		t.Fatal(err)
	}
	startRun(t, q).pass(t)
	if got := len(e.up.sent()); got != len(ids) {
		t.Fatalf("upstream got %d messages in all, want %d", got, len(ids))
	}
	for _, id := range ids {
		if times[id] != 1 {
			t.Errorf("%s sent %d times", id, times[id])
		}
	}
}

// The outcome of a message a batch holds while the next one is sent is
// applied before the link dials again for that next one (its session
// found dead, another upstream): a dial can take its whole timeout, and
// a crash meanwhile would send the delivered message again.
func TestBatchOutcomeBeforeRedial(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1})
	e.up.dropNext = 1
	e.enqueue(t, 1001, "a@example.org", "x@example.net")
	e.enqueue(t, 1001, "a@example.org", "y@example.net")
	var first string
	e.up.onSend = func(m *relay.Message) {
		if first == "" {
			first = m.ID
		}
	}
	e.up.onDial = func() {
		if first != "" && e.sp.HasMessage(first) {
			t.Errorf("redial with %s delivered but still queued:\n%s", first, e.log)
		}
	}
	e.run()
	if e.up.dials != 2 || len(e.up.sent()) != 2 {
		t.Fatalf("%d dials, %d sent", e.up.dials, len(e.up.sent()))
	}
}

// AccountOf names a queued message's account from the UID the queue's
// index records (the user name of that UID, else uid:N), and nothing for
// a message no longer queued.
func TestAccountOf(t *testing.T) {
	e := newEnv(t, Settings{})
	mine := e.enqueue(t, os.Getuid(), "s@example.org", "x@example.net")
	nobody := e.enqueue(t, 3999999, "s@example.org", "x@example.net")
	for i := 0; i < 2; i++ { // the second time from the names kept
		if got, ok := e.q.AccountOf(mine); !ok || got != AccountName(os.Getuid()) {
			t.Errorf("AccountOf(own message) = %q, %v, want %q", got, ok, AccountName(os.Getuid()))
		}
		if got, ok := e.q.AccountOf(nobody); !ok || got != "uid:3999999" {
			t.Errorf("AccountOf(UID without a user) = %q, %v, want uid:3999999", got, ok)
		}
	}
	if _, err := e.sp.Delete(mine); err != nil {
		t.Fatal(err)
	}
	if got, ok := e.q.AccountOf(mine); ok {
		t.Errorf("AccountOf(deleted message) = %q, true", got)
	}
}

// A record written for a state the message has left (queue hold clearing
// the reason of a message a worker took meanwhile) is refused and not
// kept in memory: the unsaved records win over the store's, so keeping it
// would give the worker's next attempt a record without the recipients it
// had sent to, which would be sent the message again.
func TestRecordForALeftStateIsNotKept(t *testing.T) {
	e := newEnv(t, Settings{Concurrency: 1, Retry: []time.Duration{time.Hour}, Lifetime: time.Hour})
	id := e.enqueue(t, 1001, "a@example.org", "x@example.net", "y@example.net")
	stale, err := e.q.readState(spool.Incoming, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sp.Take(id); err != nil {
		t.Fatal(err)
	}
	cur := cloneDelivery(stale)
	cur.Sent = []string{"x@example.net"}
	if err := e.q.recordState(spool.Active, id, cur); err != nil {
		t.Fatal(err)
	}
	if err := e.q.recordState(spool.Incoming, id, stale); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("record for incoming of an active message: %v, want ErrNotFound", err)
	}
	d, err := e.q.readState(spool.Active, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Sent) != 1 || d.Sent[0] != "x@example.net" {
		t.Errorf("record read after a refused stale write: sent %q, want [x@example.net]", d.Sent)
	}
}
