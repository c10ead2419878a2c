package relay

import "testing"

func TestASCIIAddr(t *testing.T) {
	for _, tc := range []struct {
		stage, in, want, status string
	}{
		{StageRcpt, "plain@example.net", "plain@example.net", ""},
		{StageRcpt, "user@bücher.example", "user@xn--bcher-kva.example", ""},
		{StageRcpt, "user@Bücher.Example", "user@xn--bcher-kva.example", ""},
		{StageMail, "app@例え.jp", "app@xn--r8jz45g.jp", ""},
		{StageRcpt, "jörg@example.net", "", "5.6.7"},
		{StageMail, "jörg@bücher.example", "", "5.6.7"},
		{StageRcpt, "user@bü\u200dcher.example", "", "5.1.3"}, // ZWJ outside its context: not a valid IDN
		{StageMail, "user@bü\u200dcher.example", "", "5.1.7"},
	} {
		got, e := asciiAddr(tc.stage, tc.in)
		switch {
		case tc.status == "" && (e != nil || got != tc.want):
			t.Errorf("asciiAddr(%q) = %q, %v; want %q", tc.in, got, e, tc.want)
		case tc.status != "" && (e == nil || e.Class != Permanent || e.Enhanced != tc.status || e.Stage != tc.stage || e.Cause == ""):
			t.Errorf("asciiAddr(%q) = %q, %+v; want a permanent %s failure at %s", tc.in, got, e, tc.status, tc.stage)
		}
	}
}
