package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/spool"
)

// A reload that raises a rate writes the counters under the new limit
// into the queue journal only after the records of the messages it
// re-timed, even while relayd's other saves of the counters run (the
// one-second save, pickup's before each Sync): any Sync that makes the
// new counters durable makes those records durable too. Else a power
// loss after such a Sync leaves messages at their old times under
// counters that name the new limit, and the next start, finding the
// limit unchanged, re-times nothing: they wait at the old pace.
//
// relayd's own spool, pickup, queue and policy (newAbuse, in-process):
// nobody, allowed 1 an hour with action defer, has 2,000 messages
// waiting, counted by the engine (Decide) and queued as pickup queues
// them; the rate is raised to 100 and configure runs (what a SIGHUP
// runs) while another goroutine saves the counters as fast as it can.
func TestRetimeWritesCountersAfterTheRecords(t *testing.T) {
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
	acct := policy.Account{UID: nobodyUID, User: "nobody"}
	l := ab.gate.Policy().Resolve(acct)
	ids := map[string]bool{}
	now := time.Now()
	for i := 0; i < 2000; i++ {
		d := ab.gate.Engine.Decide(acct, &l, 1)
		if i == 0 {
			continue // sent at once
		}
		if d.Action != policy.Defer {
			t.Fatalf("message %d of 1 an hour: %+v", i+1, d)
		}
		id := spool.NewID(now.Add(time.Duration(i) * time.Microsecond))
		m := &spool.Meta{ID: id, Time: now, Env: spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}},
			Origin: spool.Origin{UID: nobodyUID, User: "nobody", Via: "maildrop"}}
		w, err := sq.NewMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "Subject: paced\n\nbody\n")
		if err := w.CommitState(spool.Deferred, &spool.Delivery{Next: d.At, Paced: true, Reason: d.Violation.Deferred(d.At)}); err != nil {
			t.Fatal(err)
		}
		qu.Schedule(id, d.At)
		ids[id] = true
	}
	if err := ab.gate.Engine.Save(true); err != nil {
		t.Fatal(err)
	}
	journal := filepath.Join(cfg.Spool, spool.DirQueue, "journal")

	s.writeConfig("\n[policy]\nnotice_to = \"\"\n[policy.nobody]" + deferNobody(100))
	cfg2, ok := loadConfig(s.cfgPath)
	if !ok {
		t.Fatal("the raised configuration does not load")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				ab.gate.Engine.Save(false)
			}
		}
	}()
	ab.configure(cfg2, rw.Hostname)
	close(stop)
	wg.Wait()

	b, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	lastSet, firstPol, retimed := -1, -1, 0
	polKey := []byte(`"op":"pol","acct":"65534"`)
	newLim := []byte(`"messages_per_hour":100`)
	for i, line := range bytes.Split(b, []byte("\n")) {
		switch {
		case bytes.Contains(line, []byte(`"op":"set"`)) && (bytes.Contains(line, []byte("since they were raised")) || bytes.Contains(line, []byte("messages_per_hour=100 reached"))):
			retimed++
			lastSet = i
		case bytes.Contains(line, polKey) && bytes.Contains(line, newLim) && firstPol < 0:
			firstPol = i
		}
	}
	if retimed == 0 || firstPol < 0 {
		t.Fatalf("the journal has %d re-timed record(s), the new counters at line %d; want both", retimed, firstPol)
	}
	if firstPol < lastSet {
		t.Errorf("the counters under the new limit are at line %d of the journal, before the last of the %d re-timed records (line %d): a Sync between them, then a power loss, leaves messages at their old times that the next start does not re-time", firstPol, retimed, lastSet)
	}
}
