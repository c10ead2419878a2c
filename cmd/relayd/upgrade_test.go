package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A spool of the older queue layout (a file per message in queue/msg/, a
// directory per state) is taken over by relayd at start: what was
// incoming or due is delivered, a held message stays held with its
// record, and the old files and directories are gone.
func TestUpgradeFromFilePerMessageQueue(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	s.prepareSpool()
	q := filepath.Join(s.spool, spool.DirQueue)
	for _, d := range []string{"msg", spool.Incoming, spool.Active, spool.Deferred, spool.Held, spool.Failed} {
		if err := os.Mkdir(filepath.Join(q, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	md, err := spool.OpenDir(s.spool, spool.DirMsg)
	if err != nil {
		t.Fatal(err)
	}
	put := func(state, record string, i int) string {
		m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
			Env:    spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}},
			Origin: spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop"}}
		d, err := spool.NewDrop(md, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(d, "From: app@example.org\nTo: rcpt@example.net\nSubject: upgrade %s %d\n\nbody\n", state, i)
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(q, state, m.ID), []byte(record), 0o600); err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	for i := 0; i < 5; i++ {
		put(spool.Incoming, "", i)
	}
	put(spool.Deferred, `{"attempts":1,"next_attempt":"2001-01-01T00:00:00Z","last_reply":"451 later"}`, 0)
	put(spool.Active, `{"attempts":0}`, 0) // a start cut short by a crash
	held := put(spool.Held, `{"attempts":0,"reason":"held by root"}`, 0)
	md.Close()

	d := s.start()
	want := []string{"upgrade incoming 0", "upgrade incoming 1", "upgrade incoming 2", "upgrade incoming 3", "upgrade incoming 4",
		"upgrade deferred 0", "upgrade active 0"}
	waitfor.True(t, "the old queue's messages delivered", 60*time.Second, func() bool {
		got := s.subjects()
		for _, w := range want {
			if got[w] == 0 {
				return false
			}
		}
		return true
	})
	for _, d := range []string{"msg", spool.Incoming, spool.Active, spool.Deferred, spool.Held, spool.Failed} {
		if _, err := os.Stat(filepath.Join(q, d)); !os.IsNotExist(err) {
			t.Errorf("queue/%s left after the upgrade: %v", d, err)
		}
	}
	snap, err := spool.Snapshot(s.spool)
	if err != nil {
		t.Fatal(err)
	}
	if e := snap[held]; e.State != spool.Held || e.Delivery == nil || e.Delivery.Reason != "held by root" {
		t.Errorf("held message after the upgrade: %+v", e)
	}
	if !strings.Contains(s.log(), "migrated n=8") {
		t.Errorf("no migration line:\n%s", s.log())
	}
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	for k, n := range s.subjects() {
		if n != 1 {
			t.Errorf("%q delivered %d times", k, n)
		}
	}
}
