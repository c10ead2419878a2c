package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/origin"
)

// fail2ban's jail.conf mails as sender = root@<fq-hostname>, the system
// host name, which relayd takes for this host's root (as at hostname).
// Under [policy] allowed_senders that address is the user's own name at
// this host, the sender used without -f: it is allowed, as
// user@hostname is, and so is user@localhost. Before, sendmail refused
// fail2ban's mail with 77 and fail2ban only logged the failure.
func TestSenderPolicyOwnNameAtThisHost(t *testing.T) {
	needBinary(t)
	user := origin.UserName(os.Getuid())
	host, err := os.Hostname()
	if user == "" || err != nil || host == "" || host == "test.example" {
		t.Skipf("SKIPPED: needs a user name and a system host name other than the configured one (%q, %q, %v)", user, host, err)
	}
	in, err := os.ReadFile(filepath.Join("testdata", "daemons", "fail2ban-sendmail-whois-defaults.eml"))
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.ReplaceAll(string(in), "root@vm>", user+"@"+host+">")
	s := newSpool(t, false, policyConf)
	senders := []string{user + "@localhost", strings.ToUpper(user) + "@LOCALHOST"}
	if !strings.Contains(host, ".") {
		// A system host name with a dot is not this host's own in mail
		// (config.LocalDomain): it may be a domain with real mailboxes.
		senders = append(senders, user+"@"+host)
	}
	for _, sender := range senders {
		r := runSendmail(t, invocation{args: []string{"-f", sender, "root@localhost"}, conf: s.conf, stdin: strings.NewReader(msg)})
		if r.code != 0 || r.stderr != "" {
			t.Errorf("-f %s: exit %d, stderr %q; want 0 (the user's own name at this host)", sender, r.code, r.stderr)
		}
	}
	// Another user's name at this host is not the caller's own.
	other := "nobody"
	if user == other {
		other = "daemon"
	}
	r := runSendmail(t, invocation{args: []string{"-f", other + "@localhost", "root@localhost"}, conf: s.conf, stdin: strings.NewReader(msg)})
	checkFailure(t, r, 77, "is not allowed for user "+user)
}
