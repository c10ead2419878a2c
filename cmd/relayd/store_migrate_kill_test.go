package main

// The .deb upgrade path under crashes: a spool of the old layout (a file
// per message in queue/msg, a directory per state) is migrated into the
// store at relayd's start; relayd is killed again and again during its
// start (the migration, Recover, the journal rewrite) and then lets run:
// every message arrives, nothing is left, none twice.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// legacyQueue writes n messages into a queue of the old layout, Subject
// "<tag> <i>": most in incoming, every fifth deferred with a record whose
// next attempt is due.
func (s *site) legacyQueue(tag string, n int) {
	s.t.Helper()
	s.prepareSpool()
	for _, d := range []string{"msg", spool.Incoming, spool.Active, spool.Deferred, spool.Held, spool.Failed} {
		if err := os.MkdirAll(filepath.Join(s.spool, spool.DirQueue, d), 0o700); err != nil {
			s.t.Fatal(err)
		}
	}
	md, err := spool.OpenDir(s.spool, spool.DirMsg)
	if err != nil {
		s.t.Fatal(err)
	}
	defer md.Close()
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	for i := 0; i < n; i++ {
		m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
			Env:    spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}},
			Origin: spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t"}}
		d, err := spool.NewDrop(md, m, 0)
		if err != nil {
			s.t.Fatal(err)
		}
		fmt.Fprintf(d, "From: app@example.org\nTo: rcpt@example.net\nSubject: %s %d\n\nbody %d\n", tag, i, i)
		if err := d.Commit(); err != nil {
			s.t.Fatal(err)
		}
		state, rec := spool.Incoming, ""
		if i%5 == 0 {
			state = spool.Deferred
			rec = fmt.Sprintf(`{"attempts":1,"first_attempt":%q,"last_attempt":%q,"next_attempt":%q,"last_reply":"451 4.3.0 try later"}`, past, past, past)
		}
		if err := os.WriteFile(filepath.Join(s.spool, spool.DirQueue, state, m.ID), []byte(rec), 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
}

// startKill runs relayd and kills it (SIGKILL) after `after`, without
// waiting for it to be ready: a kill anywhere in its start.
func (s *site) startKill(after time.Duration) {
	s.t.Helper()
	lf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(relaydBin, "--config", s.cfgPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	time.Sleep(after)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

func TestStoreMigrationKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED: kills relayd a dozen times while it migrates 2,000 messages")
	}
	const n = 2000
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{retry: `["1s"]`})
	s.legacyQueue("legacy", n)
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	for k := 0; k < 12; k++ {
		// Early kills land in the migration and Recover, later ones in
		// the drain.
		s.startKill(time.Duration(rng.IntN(20+k*30)) * time.Millisecond)
		t.Logf("kill %d: %d delivered so far", k+1, len(up.Messages()))
	}
	d := s.start()
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		want[fmt.Sprintf("legacy %d", i)] = true
	}
	got, dups := s.waitDrained("every migrated message delivered and the queue empty", 120*time.Second, want)
	logged := 0
	for subj, c := range got {
		if c > 1 && logged < 5 {
			logged++
			t.Logf("%q delivered %d times", subj, c)
		}
	}
	// A kill can repeat the deliveries in flight (4 sessions); the
	// migration itself must duplicate nothing.
	if dups > 12*4 {
		t.Errorf("%d duplicates", dups)
	}
	for _, d := range []string{"msg", spool.Incoming, spool.Deferred} {
		if _, err := os.Stat(filepath.Join(s.spool, spool.DirQueue, d)); !os.IsNotExist(err) {
			t.Errorf("old layout's %s left: %v", d, err)
		}
	}
	if d.term(t) != 0 {
		t.Errorf("relayd did not stop cleanly:\n%s", s.logTail(40))
	}
	// Counted once relayd has stopped: its log is written in batches, and
	// a start killed before its batch was written leaves no line.
	t.Logf("%d messages migrated under 12 kills (%d import lines in the log): %d duplicates", n, strings.Count(s.log(), "migrated n="), dups)
}
