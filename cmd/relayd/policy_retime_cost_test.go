package main

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/spool"
)

// A reload that raises no rate costs nothing per queued message: with
// 30,000 deferred messages (20,000 of them deferred by the policy, of an
// account whose rate the reload leaves as it was), relayd's configure
// (what a SIGHUP and the start run, with relayd's own spool, pickup,
// queue and policy engine) takes well under 100 ms. Re-timing looks at
// the queue only for the accounts whose rate a reload raised.
func TestReloadWithoutRaisedRateReadsNoQueue(t *testing.T) {
	_, s := newPolicySite(t, "nobody", deferNobody(1))
	cfg, ok := loadConfig(s.cfgPath)
	if !ok {
		t.Fatal("the site's configuration does not load")
	}
	if err := spool.Prepare(cfg.Spool, spool.CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	sq, err := spool.OpenQueue(cfg.Spool)
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	now := time.Now()
	for i := 0; i < 30000; i++ {
		id := spool.NewID(now.Add(time.Duration(i) * time.Microsecond))
		m := &spool.Meta{ID: id, Time: now, Env: spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}},
			Origin: spool.Origin{UID: nobodyUID, User: "nobody", Via: "maildrop"}}
		w, err := sq.NewMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: m%d\n\nbody\n", i)
		d := &spool.Delivery{Next: now.Add(time.Duration(i) * time.Minute), Paced: true, Reason: "deferred by policy until ..."}
		if i%3 == 0 {
			d = &spool.Delivery{Next: now.Add(time.Hour), Attempts: 1, LastReply: "451 4.3.0 try again later"}
		}
		if err := w.CommitState(spool.Deferred, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := sq.Sync(); err != nil {
		t.Fatal(err)
	}
	log := maillog.New(io.Discard, nil)
	rw, _ := pickup.NewRewriter(cfg)
	pk, err := pickup.New(sq, rw, log)
	if err != nil {
		t.Fatal(err)
	}
	defer pk.Close()
	qu := queue.New(sq, log, nil, queue.SettingsFrom(cfg, relayOptions(cfg, rw.Hostname, log)))
	if err := qu.Load(); err != nil {
		t.Fatal(err)
	}
	ab, err := newAbuse(cfg, rw.Hostname, pk, sq, qu, log)
	if err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	for i := 0; i < 3; i++ {
		start := time.Now()
		ab.configure(cfg, rw.Hostname)
		took = max(took, time.Since(start))
	}
	if took > 100*time.Millisecond {
		t.Errorf("a reload that raises no rate took %s with 30,000 messages deferred; want well under 100 ms", took.Round(time.Millisecond))
	}
}
