package metrics

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailshim/mailshim/pkg/maillog"
)

// The account label is bounded: the named accounts, then the busiest
// others up to TopAccounts, chosen at a scrape and kept; the rest are
// "other", and no count is lost on the way.
func TestAccountLabelsBounded(t *testing.T) {
	m := New(Options{Named: []string{"www-data"}, TopAccounts: 2})
	log := maillog.New(io.Discard, nil)
	log.SetObserver(m.Observe)
	pick := func(acct string, n int) {
		for i := 0; i < n; i++ {
			log.Pickup(maillog.Pickup{ID: "0006270A1B2C3D4E5F60", UID: 1000, User: acct, Via: "maildrop"})
		}
	}
	pick("www-data", 1)
	pick("alice", 5)
	pick("bob", 3)
	pick("carol", 1)
	want := `
# HELP mailshim_picked_up_total Messages picked up into the queue (every door), by account and door (via).
# TYPE mailshim_picked_up_total counter
mailshim_picked_up_total{account="alice",via="maildrop"} 5
mailshim_picked_up_total{account="bob",via="maildrop"} 3
mailshim_picked_up_total{account="other",via="maildrop"} 1
mailshim_picked_up_total{account="www-data",via="maildrop"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), PickedUp); err != nil {
		t.Error(err)
	}
	// carol becomes the busiest: the labels chosen stay.
	pick("carol", 10)
	want = strings.Replace(want, `{account="other",via="maildrop"} 1`, `{account="other",via="maildrop"} 11`, 1)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), PickedUp); err != nil {
		t.Error(err)
	}
}

// A message queued before relayd started (its account asked of the queue)
// is counted under its account when a label is free, not under "other":
// after a restart the backlog's deliveries went to "other" until the
// account happened to send again, though top_accounts had room for it.
func TestAccountOfMessageQueuedBeforeStart(t *testing.T) {
	m := New(Options{TopAccounts: 20, Account: func(id string) (string, bool) { return "bob", true }})
	log := maillog.New(io.Discard, nil)
	log.SetObserver(m.Observe)
	log.Delivery("0006270A1B2C3D4E5F60", "x@example.org", "smtp.example:587", "250 ok", "")
	want := `
# HELP mailshim_deliveries_total Delivery outcomes per recipient and attempt (the mail log's event=delivery), by status (sent, deferred, bounced, failed), upstream and account.
# TYPE mailshim_deliveries_total counter
mailshim_deliveries_total{account="bob",status="sent",upstream="smtp.example:587"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), Deliveries); err != nil {
		t.Error(err)
	}
}

// Accounts learnt from the queue are bounded as those seen at pickup are:
// a backlog of more accounts than maxTrackedAccts after a restart grows
// neither the volume table past it nor the account labels past
// TopAccounts.
func TestAccountsLearntFromQueueAreBounded(t *testing.T) {
	m := New(Options{TopAccounts: 3, Account: func(id string) (string, bool) { return "u" + id, true }})
	log := maillog.New(io.Discard, nil)
	log.SetObserver(m.Observe)
	for i := range maxTrackedAccts + 10 {
		log.Delivery(fmt.Sprintf("0006270A1B2C%08X", i), "x@example.org", "smtp.example:587", "250 ok", "")
	}
	m.mu.Lock()
	n := len(m.volume)
	m.mu.Unlock()
	if n > maxTrackedAccts {
		t.Errorf("%d accounts in the volume table, want at most %d", n, maxTrackedAccts)
	}
	if got := testutil.CollectAndCount(m.Registry(), Deliveries); got > 3+1 {
		t.Errorf("%d delivery series, want at most TopAccounts+1 (other)", got)
	}
}
