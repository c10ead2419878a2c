package queue

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// stoppingUpstream is a real go-smtp upstream that goes down (stops
// listening and drops every session) in the middle of the next message
// to victim@example.net while armed: during its data (stage
// smtptest.StageData), or once all of it is read but before the reply
// (smtptest.StageDataEnd). One session at a time.
type stoppingUpstream struct {
	*smtptest.Server
	armed atomic.Bool
	rcpt  atomic.Value // the last RCPT TO
}

func newStoppingUpstream(t *testing.T, stage string) *stoppingUpstream {
	u := &stoppingUpstream{}
	u.Server = smtptest.New(t, smtptest.Options{NoTLS: true, Hook: func(ctx context.Context, st, arg string) error {
		if st == smtptest.StageRcpt {
			u.rcpt.Store(arg)
		}
		if st == stage && u.rcpt.Load() == "victim@example.net" && u.armed.CompareAndSwap(true, false) {
			u.Stop()
			return smtptest.ErrDrop
		}
		return nil
	}})
	return u
}

// lostVictim starts a queue (one worker, an hour's retry) on a stopping
// upstream that goes down at stage of victim@example.net's message, queues
// that message and runs the queue once: the message is lost there.
func lostVictim(t *testing.T, stage string) (*stoppingUpstream, *env, string) {
	t.Helper()
	srv := newStoppingUpstream(t, stage)
	e := newEnv(t, Settings{Concurrency: 1, Retry: []time.Duration{time.Hour}, Lifetime: 24 * time.Hour,
		Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, realOpts(), nil)})
	victim := e.enqueue(t, 1001, "a@example.org", "victim@example.net")
	srv.armed.Store(true)
	e.run()
	return srv, e, victim
}

// loseAgain brings the upstream back armed, 10 s in: the victim, due
// when it is back, goes again and the upstream goes down in its data
// again. It fails t unless that made the victim's second attempt.
func (u *stoppingUpstream) loseAgain(t *testing.T, e *env, victim string) {
	t.Helper()
	if err := u.Restart(); err != nil {
		t.Fatal(err)
	}
	u.armed.Store(true)
	e.clk.Set(t0.Add(10 * time.Second))
	e.run()
	e.run()
	if d := e.deliveryState(t, victim); d.Attempts != 2 || u.armed.Load() {
		t.Fatalf("the victim was not sent again when the upstream came back: %d attempts\n%s", d.Attempts, e.log)
	}
}

// backAt brings the upstream back, unarmed, at t0+at and runs the queue
// three times (the breaker's probe, then what was waiting for it).
func (u *stoppingUpstream) backAt(t *testing.T, e *env, at time.Duration) {
	t.Helper()
	if err := u.Restart(); err != nil {
		t.Fatal(err)
	}
	e.clk.Set(t0.Add(at))
	for i := 0; i < 3; i++ {
		e.run()
	}
}

// A message whose connection the upstream loses in the middle of its
// data, because the upstream went down, goes out as soon as the
// upstream is back, with the mail that waited for the upstream's
// breaker — not one retry interval later. Through Queue.Run, the real
// relay client and a real go-smtp upstream; the clock is the test's.
func TestLostInDataGoesWhenTheUpstreamIsBack(t *testing.T) {
	for _, stage := range []string{smtptest.StageData, smtptest.StageDataEnd} {
		t.Run(stage, func(t *testing.T) {
			srv, e, victim := lostVictim(t, stage)
			if st := e.state(t, victim); st != spool.Deferred {
				t.Fatalf("after the lost connection the message is %q, want deferred\n%s", st, e.log)
			}
			if d := e.deliveryState(t, victim); d.Attempts != 1 {
				t.Errorf("attempts %d, want 1: some of the data went out", d.Attempts)
			}

			// The upstream is down: the next message finds it so, and its
			// breaker opens.
			e.clk.Set(t0.Add(2 * time.Second))
			other := e.enqueue(t, 1001, "a@example.org", "other@example.net")
			e.run()
			if st := e.state(t, other); st != spool.Deferred {
				t.Fatalf("with the upstream down the other message is %q, want deferred\n%s", st, e.log)
			}

			// Back: the breaker's probe closes it, and both go.
			srv.backAt(t, e, 10*time.Second)
			if n := srv.Count(); n != 2 {
				t.Fatalf("the upstream has %d messages 10 s in, want 2 (the one lost in its data too)\n%s", n, e.log)
			}
		})
	}
}

// A message lost in its data twice in a row, each time with the upstream
// going down, is left to the retry schedule the second time: one that
// breaks the upstream itself is not sent again at every recovery.
func TestLostInDataTwiceWaitsForTheSchedule(t *testing.T) {
	srv, e, victim := lostVictim(t, smtptest.StageData) // the upstream went down in its data
	// Another message finds it down, and its breaker opens.
	e.clk.Set(t0.Add(2 * time.Second))
	e.enqueue(t, 1001, "a@example.org", "other@example.net")
	e.run()
	// Back, and the victim goes again with the other: the upstream goes
	// down in its data again.
	srv.loseAgain(t, e, victim)
	// Down again for others, and back: this time the victim waits for
	// its retry time.
	e.clk.Set(t0.Add(12 * time.Second))
	e.enqueue(t, 1001, "a@example.org", "third@example.net")
	e.run()
	srv.backAt(t, e, 20*time.Second)
	if d := e.deliveryState(t, victim); d.Attempts != 2 || e.state(t, victim) != spool.Deferred {
		t.Fatalf("after its second loss the victim is %s with %d attempts, want deferred with 2\n%s", e.state(t, victim), d.Attempts, e.log)
	}
	if n := srv.Count(); n != 2 {
		t.Fatalf("the upstream has %d messages, want the two others\n%s", n, e.log)
	}
	e.clk.Set(t0.Add(2 * time.Hour))
	e.run()
	if n := srv.Count(); n != 3 {
		t.Fatalf("the upstream has %d messages after the retry time, want 3\n%s", n, e.log)
	}
}

// A loss in the data, then an attempt that finds the upstream down, then
// another loss in the data are not two losses in a row: after the second
// the message is still due when the upstream comes back, not one retry
// interval later.
func TestLostInDataAfterAnOutageIsNotASecondLoss(t *testing.T) {
	srv, e, victim := lostVictim(t, smtptest.StageData) // the upstream went down in its data
	// Flushed while the upstream is down: the victim finds it so.
	e.clk.Set(t0.Add(2 * time.Second))
	e.q.Flush()
	e.run()
	if d := e.deliveryState(t, victim); d.Attempts != 1 || e.state(t, victim) != spool.Deferred {
		t.Fatalf("with the upstream down the victim is %s with %d attempts, want deferred with 1\n%s", e.state(t, victim), d.Attempts, e.log)
	}
	// Back: the victim probes it and loses its data again.
	srv.loseAgain(t, e, victim)
	// Down for another message, and back: the victim goes with it.
	e.clk.Set(t0.Add(12 * time.Second))
	e.enqueue(t, 1001, "a@example.org", "other@example.net")
	e.run()
	srv.backAt(t, e, 30*time.Second)
	if n := srv.Count(); n != 2 {
		t.Fatalf("the upstream has %d messages 30 s in, want 2 (the victim too)\n%s", n, e.log)
	}
}

// A message the scheduler keeps state about (lost in its data: waiting
// for an upstream, with a strike) leaves none behind once root deletes
// or holds it: that state would otherwise stay in memory for the life
// of relayd.
func TestLostInDataDeletedOrHeldLeavesNoState(t *testing.T) {
	for _, verb := range []string{control.VerbDelete, control.VerbHold} {
		t.Run(verb, func(t *testing.T) {
			_, e, victim := lostVictim(t, smtptest.StageData)
			if e.state(t, victim) != spool.Deferred {
				t.Fatalf("the victim is %s, want deferred\n%s", e.state(t, victim), e.log)
			}
			if err := e.q.Handle(control.Peer{UID: 0, Admin: true}, verb, []string{victim}, io.Discard); err != nil {
				t.Fatal(err)
			}
			e.run()
			e.r.stop() // the scheduler's maps are the loop's until Run returns
			s := e.q.sched
			_, waiting := s.waiting[victim]
			_, strikes := s.strikes[victim]
			if s.lost[victim] || waiting || strikes {
				t.Errorf("after %s the scheduler still holds the message: lost %v, waiting %v, strikes %v", verb, s.lost[victim], waiting, strikes)
			}
		})
	}
}
