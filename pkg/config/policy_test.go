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
	if d, _ := Parse("empty", []byte("")); d.Policy.AllowedSenders != nil || strings.Contains(d.Redacted(), "[policy") {
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
