package message

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// plainCases are addresses near the edge of plainAddress's shape, each
// checked against the parser.
var plainCases = []string{
	"a@b", "user@example.com", "first.last@sub.example.org", "a+tag@x.io",
	"a=b@x", "_u@x", "u_@x", "x-y@a-b.c", "0@0", "A.B.C@D.E",
	"-a@b", "|a@b", "/a@b", "=a@b", "a@-b", "a@b-", "a-@b",
	".a@b", "a.@b", "a..b@c", "a@.b", "a@b.", "a@b..c", "a@", "@b", "a", "",
	"a@b@c", "a b@c", "a@b c", "a\t@b", "\"a\"@b", "<a@b>", "a@[1.2.3.4]",
	"a(c)@b", "a@b(c)", "é@b", "a@é", "a%b@c", "a!b@c", "a#b@c", "a'b@c",
	"a{b}@c", "a~b@c", "a/b@c", "a|b@c", "a?b@c", "a^b@c", "a`b@c", "a*b@c",
	"a&b@c", "a$b@c", ":include:a@b", "a@b\n", "a@b\x00", "a@b\x7f",
	strings.Repeat("a", 64) + "@" + strings.Repeat("b", 500),
	strings.Repeat("a", 64) + "@" + strings.Repeat("b", 447),
	strings.Repeat("a", 64) + "@" + strings.Repeat("b", 448),
	strings.Repeat("a", 600) + "@b",
}

// TestPlainAddress checks ParseAddress's shortcut against the parser:
// every address plainAddress takes is one the parser gives back as it is.
func TestPlainAddress(t *testing.T) {
	check := func(s string) {
		t.Helper()
		if !plainAddress(s) {
			return
		}
		if a, err := parseAddress(s); err != nil || a != s {
			t.Errorf("plainAddress(%q) but the parser gives %q, %v", s, a, err)
		}
	}
	taken := 0
	for _, s := range plainCases {
		if plainAddress(s) {
			taken++
		}
		check(s)
	}
	if taken < 10 {
		t.Fatalf("only %d of the cases take the shortcut", taken)
	}
	// Random strings over an alphabet of the characters that matter.
	const alpha = "aZ09.-_+=@!#%'/|?~\"<>()[] \té\x00"
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		b := make([]byte, 1+r.IntN(12))
		for i := range b {
			b[i] = alpha[r.IntN(len(alpha))]
		}
		check(string(b))
	}
	for _, s := range []string{"user@example.com", "a.b+c=d_e-f@x-y.z"} {
		if n := testing.AllocsPerRun(100, func() { ParseAddress(s) }); n != 0 {
			t.Errorf("ParseAddress(%q): %v allocations", s, n)
		}
	}
}

// FuzzPlainAddress is TestPlainAddress's check on fuzzed input.
func FuzzPlainAddress(f *testing.F) {
	for _, s := range plainCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !plainAddress(s) {
			return
		}
		if a, err := parseAddress(s); err != nil || a != s {
			t.Errorf("plainAddress(%q) but the parser gives %q, %v", s, a, err)
		}
	})
}

func BenchmarkParseAddress(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ParseAddress("sender@bench.example")
	}
}

func BenchmarkParseAddressParser(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		parseAddress("sender@bench.example")
	}
}
