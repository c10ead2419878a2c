package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

const policyConf = `hostname = "web1.example.com"

[policy.allowed_senders]
"*" = ["%u@example.com"]
www-data = ["*@shop.example.com", "noreply@example.com"]
"uid:1001" = ["*"]
backup = []
root = ["%u", "<>", "root@example.com"]
`

func TestPolicyParse(t *testing.T) {
	c, err := Parse("p.conf", []byte(policyConf))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"*": {"%u@example.com"}, "www-data": {"*@shop.example.com", "noreply@example.com"},
		"uid:1001": {"*"}, "backup": {}, "root": {"%u", "<>", "root@example.com"},
	}
	if !reflect.DeepEqual(c.Policy.AllowedSenders, want) {
		t.Errorf("got %q", c.Policy.AllowedSenders)
	}
	// check-config prints it, and what it prints parses to the same.
	again, err := Parse("redacted", []byte(c.Redacted()))
	if err != nil || !reflect.DeepEqual(again.Policy, c.Policy) {
		t.Errorf("round trip: %v %+v", err, again)
	}
	if d, _ := Parse("empty", []byte("")); d.Policy.AllowedSenders != nil || d.Policy.Accounts != nil || strings.Contains(d.Redacted(), "[policy.") {
		t.Errorf("no policy by default: %+v", d.Policy)
	}
}

func TestPolicyParseErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"[policy]\nallowed_senders = [\"a\"]\n", `e.conf:2: policy.allowed_senders: must be a table`},
		{"[policy]\nsenders = 1\n", `e.conf:2: policy.senders: unknown key`},
		{"allowed_senders = {}\n", `e.conf:1: allowed_senders: unknown key (it belongs in [policy])`},
		{"[policy.allowed_senders]\n\"uid:x\" = [\"*\"]\n", `e.conf:2: policy.allowed_senders.uid:x: "uid:x": want "uid:" and a number`},
		{"[policy.allowed_senders]\n\"a b\" = [\"*\"]\n", `e.conf:2: policy.allowed_senders.a b: "a b" is not a user name`},
		{"[policy.allowed_senders]\nbob = [\"a%u@example.com\"]\n", `e.conf:2: policy.allowed_senders.bob: "a%u@example.com": "*" and "%u" stand only`},
		{"[policy.allowed_senders]\nbob = [\"*@bad..domain\"]\n", `e.conf:2: policy.allowed_senders.bob: "*@bad..domain": bad domain`},
		{"[policy.allowed_senders]\nbob = [\"x@\"]\n", `e.conf:2: policy.allowed_senders.bob: "x@" is not an address`},
		{"[policy.allowed_senders]\nbob = \"*@example.com\"\nal = 3\n", `e.conf:3: policy.allowed_senders.al: must be an array of strings`},
	}
	for _, tt := range tests {
		_, err := Parse("e.conf", []byte(tt.conf))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.conf, err, tt.want)
		}
	}
}

func TestCheckSender(t *testing.T) {
	c, err := Parse("p.conf", []byte(policyConf))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user   string
		uid    int
		sender string
		ok     bool
	}{
		{"alice", 1000, "", true}, // no -f: the system's choice
		{"alice", 1000, "alice@example.com", true},
		{"alice", 1000, "Alice@Example.COM", true},
		{"alice", 1000, "bob@example.com", false},
		{"alice", 1000, "alice@evil.example", false},
		{"alice", 1000, "<>", false},
		{"www-data", 33, "orders@shop.example.com", true},
		{"www-data", 33, "noreply@example.com", true},
		{"www-data", 33, "www-data@example.com", false}, // its own entry wins over "*"
		{"carol", 1001, "ceo@anywhere.example", true},   // uid:1001
		{"", 1001, "x@y.example", true},
		{"", 4242, "x@example.com", false}, // no name: %u matches nothing
		{"backup", 34, "backup@example.com", false},
		{"backup", 34, "backup", true}, // its own name: the default sender
		{"backup", 34, "backup@web1.example.com", true},
		{"root", 0, "root", true},
		{"root", 0, "<>", true},
		{"root", 0, "ROOT@example.com", true},
		{"root", 0, "alice@example.com", false},
	}
	for _, tt := range tests {
		err := c.CheckSender(tt.user, tt.uid, tt.sender)
		var pe *PolicyError
		if tt.ok != (err == nil) || err != nil && !errors.As(err, &pe) {
			t.Errorf("%s (uid %d) sender %q: %v", tt.user, tt.uid, tt.sender, err)
		}
	}
	if err := Default().CheckSender("alice", 1000, "ceo@example.com"); err != nil {
		t.Errorf("no policy: %v", err)
	}
	err = c.CheckSender("alice", 1000, "ceo@example.com")
	if want := `sender address "ceo@example.com" is not allowed for user alice (uid 1000) by [policy] allowed_senders "*"`; err == nil || err.Error() != want {
		t.Errorf("message %q", err)
	}
}

// The shipped example and mailshim.conf(5) document the section.
func TestPolicyDocumented(t *testing.T) {
	for _, f := range []string{"../../man/mailshim.conf.5.scd", shipped} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"[policy", "allowed_senders", "%u@", "77"} {
			if !strings.Contains(string(data), k) {
				t.Errorf("%s does not mention %s", f, k)
			}
		}
	}
	c, err := Parse("uncommented", []byte(uncomment(mustRead(t, shipped))))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Policy.AllowedSenders) != 3 {
		t.Errorf("shipped example policy: %q", c.Policy.AllowedSenders)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPolicyAccounts(t *testing.T) {
	c, err := Parse("p.conf", []byte(`
[policy]
notice_to = "abuse@example.com"

[policy."*"]
messages_per_hour = 200
action = "defer"

[policy.www-data]
from_domains = ["Shop.Example.com.", "*.example.org"]
messages_per_minute = 0
max_size = "2MB"
allowed_senders = ["*@shop.example.com"]

[policy."group:news"]
recipients_per_day = 50000

[policy."uid:1003"]
action = "refuse"
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy
	if p.NoticeTo != "abuse@example.com" || len(p.Accounts) != 4 {
		t.Fatalf("%+v", p)
	}
	w := p.Accounts["www-data"]
	if !w.Set["messages_per_minute"] || w.MessagesPerMinute != 0 || w.Set["messages_per_hour"] || w.MaxSize != 2<<20 ||
		!reflect.DeepEqual(w.FromDomains, []string{"shop.example.com", "*.example.org"}) {
		t.Errorf("www-data: %+v", w)
	}
	if !reflect.DeepEqual(p.AllowedSenders["www-data"], []string{"*@shop.example.com"}) {
		t.Errorf("allowed_senders of the table not joined: %v", p.AllowedSenders)
	}
	if a := p.Accounts["*"]; a.MessagesPerHour != 200 || a.Action != "defer" || !a.Set["action"] || a.Set["max_size"] {
		t.Errorf("*: %+v", a)
	}
	again, err := Parse("redacted", []byte(c.Redacted()))
	if err != nil || !reflect.DeepEqual(again.Policy, c.Policy) {
		t.Errorf("round trip: %v\n%+v\n%+v\n%s", err, again.Policy, c.Policy, c.Redacted())
	}
	if d := Default(); d.Policy.NoticeTo != "root" {
		t.Errorf("default notice_to %q", d.Policy.NoticeTo)
	}
}

func TestPolicyAccountErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"[policy.www-data]\naction = \"drop\"\n", `e.conf:2: policy.www-data.action: "drop": want "defer", "hold" or "refuse"`},
		{"[policy.www-data]\nmessages_per_hour = -1\n", `e.conf:2: policy.www-data.messages_per_hour: -1 is out of range`},
		{"[policy.www-data]\nper_hour = 1\n", `e.conf:2: policy.www-data.per_hour: unknown key`},
		{"[policy.\"group:\"]\naction = \"hold\"\n", `policy.group:: "group:": want "group:" and a group name`},
		{"[policy.\"group:web\"]\nallowed_senders = [\"*\"]\n", `policy.group:web.allowed_senders: allowed_senders applies to a user name`},
		{"[policy.allowed_senders]\nbob = [\"*\"]\n[policy.bob]\nallowed_senders = [\"x@example.com\"]\n", `policy.bob.allowed_senders: "bob" already has [policy.allowed_senders]`},
		{"[policy.bob]\nfrom_domains = [\"not a domain\"]\n", `policy.bob.from_domains: "not a domain": not a domain`},
		{"[policy]\nnotice_to = \"a b\"\n", `policy.notice_to:`},
	} {
		_, err := Parse("e.conf", []byte(tc.conf))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.conf, err, tc.want)
		}
	}
}
