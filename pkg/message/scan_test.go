package message

import (
	"strings"
	"testing"
)

func TestAddressSpans(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     string // the addresses found, joined by |
		list, ok bool
	}{
		{"root", "root", false, true},
		{` "Cron Daemon" < root > (c)`, "root", false, true},
		{"Ops Team <ops>, alice (Alice)", "ops|alice", true, true},
		{"root,\n  alice\r\n", "root|alice", true, true},
		{"friends: a, b@example.org;, c", "a|b@example.org|c", true, true},
		{"undisclosed-recipients:;", "", true, true},
		{"John Smith", "", false, true},
		{`"a b"@example.org`, "", false, true},
		{`"root, x" <root>`, "root", false, true},
		{`"unterminated`, "", false, false},
		{"<root", "", false, false},
		{`<"q"@x>`, "", false, false},
		{"a <b> <c>", "", false, false},
	} {
		spans, list, ok := AddressSpans([]byte(tc.in))
		var got []string
		for _, s := range spans {
			got = append(got, tc.in[s.Start:s.End])
		}
		if strings.Join(got, "|") != tc.want || list != tc.list || ok != tc.ok {
			t.Errorf("AddressSpans(%q) = %q, list %v, ok %v; want %q, %v, %v", tc.in, got, list, ok, tc.want, tc.list, tc.ok)
		}
	}
}
