package pickup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// A refused maildrop file with no one to tell goes to quarantine only
// while its account has fewer than max_quarantined files there (100 by
// default, counted by owner); beyond it, it is removed with its
// event=rejected line saying so. Files the administrator removes make
// room at the next count, at most a second later.
func TestUnnoticedRefusalCap(t *testing.T) {
	e := newEnv(t, testConfig())
	now := testNow
	e.p.Now = func() time.Time { return now }
	qdir := filepath.Join(e.q.Root, spool.DirQuarantine)
	for i := 0; i < 100; i++ {
		if err := os.WriteFile(filepath.Join(qdir, fmt.Sprintf("old%d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	refuse := func() string {
		id := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "<>"}}, "Subject: nobody\n\nb\n")
		e.p.scan(context.Background())
		if names := maildropNames(t, e); len(names) != 0 {
			t.Fatalf("left in maildrop: %v", names)
		}
		return id
	}
	inQuarantine := func(id string) bool { _, err := os.Stat(filepath.Join(qdir, id)); return err == nil }

	id := refuse()
	if inQuarantine(id) || !strings.Contains(e.log.String(), "event=rejected id="+id+" ") || !strings.Contains(e.log.String(), `action="discarded (no sender to bounce to; the account has 100 files in quarantine, the most allowed: max_quarantined)"`) {
		t.Fatalf("the 101st refusal was not discarded with its line:\n%s", e.log)
	}
	os.Remove(filepath.Join(qdir, "old0"))
	if id := refuse(); inQuarantine(id) {
		t.Errorf("counted again within the second")
	}
	now = now.Add(2 * time.Second)
	if id := refuse(); !inQuarantine(id) {
		t.Errorf("not quarantined once the administrator made room:\n%s", e.log)
	}
	if id := refuse(); inQuarantine(id) {
		t.Errorf("quarantined beyond the cap again")
	}
}
