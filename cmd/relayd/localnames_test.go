package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// fail2ban's jail.conf sends its mail actions to destemail = root@localhost
// from sender = root@<fq-hostname> (the system's host name, here not the
// configured hostname). Both are names of this host, as every MTA Debian
// ships takes them (Postfix's mydestination, exim's local_domains
// "@:localhost"): root@localhost must reach the admin through [aliases],
// and root@<system host name> must be sent as this host's root, not as a
// domain the upstream has never heard of (whose bounce nobody reads). The
// input is fail2ban's own (testdata/daemons/README), the capture host's
// name "vm" replaced by this one's.
func TestFail2banDefaultsAreLocalNames(t *testing.T) {
	needRoot(t)
	// relayd runs in a UTS namespace whose (short) host name is vm.
	const host = "vm"
	in, err := os.ReadFile(filepath.Join("testdata", "daemons", "fail2ban-sendmail-whois-defaults.eml"))
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.ReplaceAll(string(in), "root@vm>", "root@"+host+">")
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{wrap: []string{"unshare", "--uts", "sh", "-c", `hostname vm && exec "$@"`, "sh"}})
	s.start()
	cmd := s.sendmailCmd("-f", "root@"+host, "root@localhost")
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("sendmail: %v %q", err, out)
	}
	msgs, err := up.WaitFor(1, 20*time.Second)
	if err != nil {
		t.Fatalf("nothing reached the upstream: %v\n%s", err, s.log())
	}
	m := msgs[0]
	if strings.Join(m.To, " ") != "ops@example.com" {
		t.Errorf("sent to %q, want ops@example.com ([aliases] root for root@localhost)", m.To)
	}
	if m.From != "root@web1.example.com" {
		t.Errorf("sent from %q, want root@web1.example.com (root@%s is this host's root)", m.From, host)
	}
	if !strings.Contains(string(m.Data), "From: Fail2Ban <root@web1.example.com>\r\n") {
		t.Errorf("From: not this host's root:\n%s", m.Data)
	}
}

// A system host name with a dot may be a domain that has real mailboxes
// elsewhere (a one-server site whose host is named example.com, whose
// mail is at a provider): mail to info@example.com must leave as it is,
// not be taken for a local name and sent to info@<hostname>. relayd runs
// in a UTS namespace whose host name is shop.example (root only).
func TestDottedSystemHostNameIsNotALocalDomain(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{wrap: []string{"unshare", "--uts", "sh", "-c", `hostname shop.example && exec "$@"`, "sh"}})
	s.start()
	cmd := s.sendmailCmd("-f", "app@web1.example.com", "info@shop.example")
	cmd.Stdin = strings.NewReader("Subject: contact form\n\nhello\n")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("sendmail: %v %q", err, out)
	}
	msgs, err := up.WaitFor(1, 20*time.Second)
	if err != nil {
		t.Fatalf("nothing reached the upstream: %v\n%s", err, s.log())
	}
	if got := strings.Join(msgs[0].To, " "); got != "info@shop.example" {
		t.Errorf("sent to %q, want info@shop.example (the system's dotted host name is not a local domain)", got)
	}
}
