package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A maildrop file that pickup cannot queue (here and in life: a spool
// whose file system is full) stays in the maildrop and is tried again at
// every scan. Each failed try must not count against its account's
// rates: once the trouble is over the message, the account's only one, is
// delivered, not held for a rate limit that only the retries reached.
func TestPolicyFailedPickupNotCounted(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "*", `
messages_per_minute = 2
action = "hold"
`)
	smallSpool(t, s, 0o711, fmt.Sprintf("uid=%d,gid=%d", daemonUID, daemonUID))
	s.startAsDaemon()
	waitfor.True(t, "the spool prepared", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(s.spool, spool.DirMaildrop))
		return err == nil
	})

	// One message of the daemon user's, written aside on the spool's
	// file system while it has room, with its owner already set.
	stage := filepath.Join(s.spool, "stage")
	if err := os.Mkdir(stage, 0o700); err != nil {
		t.Fatal(err)
	}
	sd, err := spool.OpenDir(s.spool, "stage")
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
		Env:    spool.Envelope{Sender: "app@example.org", Recipients: []string{"rcpt@example.net"}},
		Origin: spool.Origin{UID: daemonUID, GID: daemonUID, Via: "maildrop", Mode: "t"}}
	d, err := spool.NewDrop(sd, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(d, "From: app@example.org\nTo: rcpt@example.net\nSubject: only one\n\nbody\n")
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(stage, m.ID), daemonUID, daemonUID); err != nil {
		t.Fatal(err)
	}
	// The file system full, then the message into the maildrop.
	filler := fillDisk(t, s.spool)
	restored := false
	restore := func() {
		if !restored {
			os.Remove(filler)
			restored = true
		}
	}
	t.Cleanup(restore)
	if err := os.Rename(filepath.Join(stage, m.ID), filepath.Join(s.spool, spool.DirMaildrop, m.ID)); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "two failed tries", 30*time.Second, func() bool {
		return strings.Count(s.log(), "cannot queue; will retry") >= 2
	})
	restore()
	if _, err := up.WaitFor(1, 20*time.Second); err != nil {
		t.Fatalf("the message was not delivered once it could be queued: %v\n%s", err, s.log())
	}
	if strings.Contains(s.log(), "event=policy ") {
		t.Errorf("a policy decision on the account's only message:\n%s", s.log())
	}
}
