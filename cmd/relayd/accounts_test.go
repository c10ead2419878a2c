package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// Two accounts at one smarthost with the same user name and different
// secrets (SendGrid's user name is "apikey" for every account; the key is
// the password): a [[route]] sends a domain's mail through its own
// account, everything else through the company's. A worker's session
// logged in with one account must never carry the other's mail: each
// message is sent with the secret of the upstream its route chose.
func TestSessionNotSharedAcrossAccounts(t *testing.T) {
	const companyKey, shopKey = "SG.company-key", "SG.shop-key"
	up := smtptest.New(t, smtptest.Options{Username: "apikey", Password: "unused",
		BearerOK: func(user, token string) bool { return user == "apikey" && (token == companyKey || token == shopKey) }})
	s := newSite(t, up, siteOpts{concurrency: 1})
	s.writeAccounts(
		s.apikeyAccount(up, "name = \"company\"\nrouted_only = false", companyKey) +
			s.apikeyAccount(up, "name = \"shop\"\nrouted_only = true", shopKey) + `
[[route]]
sender_domains = ["shop.example"]
upstream = ["shop"]
`)
	s.prepareSpool()
	// Queued before relayd starts, so that one worker takes them in one
	// batch, alternating.
	want := map[string]string{}
	for i := 0; i < 3; i++ {
		want[s.dropFrom("app@example.org", fmt.Sprintf("company %d", i))] = companyKey
		want[s.dropFrom("orders@shop.example", fmt.Sprintf("shop %d", i))] = shopKey
	}
	d := s.start()
	msgs, err := up.WaitFor(len(want), 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	for _, m := range msgs {
		key := companyKey
		if m.From == "orders@shop.example" {
			key = shopKey
		}
		if m.Secret != key {
			t.Errorf("%q from %s sent with the key %q, want %q (another account's session)", subjectOf(m), m.From, m.Secret, key)
		}
	}
	d.term(t)
}

// Two accounts at one smarthost, without names, chosen by sender domain:
// the shop's key is refused. That is the shop account's trouble, not the
// smarthost's: the company's mail keeps going, and nothing the shop's
// refusals earn (a backoff of a minute and more) holds it.
func TestRefusedAccountDoesNotHoldAnother(t *testing.T) {
	const companyKey = "SG.company-key"
	up := smtptest.New(t, smtptest.Options{Username: "apikey", Password: "unused",
		BearerOK: func(user, token string) bool { return user == "apikey" && token == companyKey }})
	s := newSite(t, up, siteOpts{concurrency: 1})
	s.writeAccounts(
		s.apikeyAccount(up, "sender_domains = [\"shop.example\"]", "SG.revoked-key") +
			s.apikeyAccount(up, "sender_domains = [\"example.org\"]", companyKey))
	d := s.start()
	for i := 0; i < 3; i++ {
		s.dropFrom("orders@shop.example", fmt.Sprintf("shop %d", i))
	}
	waitfor.True(t, "the shop's login refused twice", 20*time.Second, func() bool {
		return strings.Count(s.log(), "event=auth-failed") >= 2
	})
	s.dropFrom("app@example.org", "company")
	if _, err := up.WaitFor(1, 5*time.Second); err != nil {
		t.Fatalf("the company's mail is held by the shop's refused login: %v\n%s", err, s.logTail(3000))
	}
	d.term(t)
}

// apikeyAccount is an [[upstream]] table, starting with the lines head,
// for up's host with the user name "apikey" (SendGrid's, the same for
// every account), XOAUTH2, and key as the secret, in a file of its own.
func (s *site) apikeyAccount(up *smtptest.Server, head, key string) string {
	s.t.Helper()
	f, err := os.CreateTemp(s.dir, "account-*.key")
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		s.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		s.t.Fatal(err)
	}
	u := up.Upstream()
	return fmt.Sprintf("\n[[upstream]]\n%s\nhost = %q\nport = %d\ntls = \"starttls\"\nca_file = %q\nusername = \"apikey\"\npassword_file = %q\nauth = [\"XOAUTH2\"]\n",
		head, u.Host, u.Port, u.CAFile, f.Name())
}

// writeAccounts writes s's configuration with tables as its upstreams
// and routes, and a queue of one worker that retries every second.
func (s *site) writeAccounts(tables string) {
	s.t.Helper()
	cfg := fmt.Sprintf("hostname = \"web1.example.com\"\nspool = %q\ncontrol_socket = %q\nsubmit_socket = %q\naliases_file = \"\"\n",
		s.spool, s.controlSock(), s.submitSock()) + tables + `
[queue]
retry = ["1s"]
concurrency = 1
scan_interval = "1s"
`
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		s.t.Fatal(err)
	}
}
