package message

import (
	"strings"
	"testing"
)

func TestParseNotify(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"NEVER", "NEVER", true},
		{"never", "NEVER", true},
		{"success, failure ,delay", "SUCCESS,FAILURE,DELAY", true},
		{"Delay", "DELAY", true},
		{"NEVER,SUCCESS", "", false},
		{"SUCCESS,", "", false},
		{"", "", false},
		{"BOUNCE", "", false},
	} {
		got, ok := ParseNotify(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseNotify(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if !ValidNotify("") || !ValidNotify("SUCCESS,DELAY") || ValidNotify("success") || ValidNotify("SUCCESS, DELAY") {
		t.Error("ValidNotify accepts only \"\" and the stored form")
	}
	if !NotifyAllows("", NotifyDelay) || !NotifyAllows("FAILURE,DELAY", NotifyDelay) ||
		NotifyAllows("NEVER", NotifyFailure) || NotifyAllows("SUCCESS", NotifyFailure) {
		t.Error("NotifyAllows")
	}
	if got := strings.Join(NotifyKeywords("SUCCESS,FAILURE"), " "); got != "SUCCESS FAILURE" {
		t.Errorf("NotifyKeywords = %q", got)
	}
	if NotifyKeywords("") != nil || NotifyKeywords("X") != nil {
		t.Error("NotifyKeywords of nothing or an invalid value is not nil")
	}
}

func TestDSNValues(t *testing.T) {
	if r, ok := ParseRet("hdrs"); r != "HDRS" || !ok {
		t.Errorf("ParseRet(hdrs) = %q, %v", r, ok)
	}
	if _, ok := ParseRet("ALL"); ok {
		t.Error("ParseRet(ALL) accepted")
	}
	if b, ok := ParseBody("8bitmime"); b != "8BITMIME" || !ok {
		t.Errorf("ParseBody(8bitmime) = %q, %v", b, ok)
	}
	if _, ok := ParseBody("BINARYMIME"); ok {
		t.Error("ParseBody(BINARYMIME) accepted")
	}
	for _, v := range []string{"e1", "order+42=x", strings.Repeat("x", MaxEnvID)} {
		if !ValidEnvID(v) {
			t.Errorf("ValidEnvID(%q) = false", v)
		}
	}
	for _, v := range []string{"", "a b", "a\x00", "ü", strings.Repeat("x", MaxEnvID+1)} {
		if ValidEnvID(v) {
			t.Errorf("ValidEnvID(%q) = true", v)
		}
	}
}

func TestDecodeXtext(t *testing.T) {
	for in, want := range map[string]string{"plain": "plain", "a+2Bb": "a+b", "+3D+2B": "=+", "x+20y": "x y"} {
		if got, err := DecodeXtext(in); got != want || err != nil {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a+2", "a+2b", "a=b", "+", "a+GG"} {
		if got, err := DecodeXtext(in); err == nil {
			t.Errorf("DecodeXtext(%q) = %q, want an error", in, got)
		}
	}
}

// The header limits are named in the configuration's size form, the one
// every message about a size uses (config.FormatSize).
func TestHeaderTooLargeText(t *testing.T) {
	if got := ErrHeaderTooLarge.Error(); !strings.Contains(got, "over 1MB") || !strings.Contains(got, "over 8MB") {
		t.Errorf("ErrHeaderTooLarge = %q", got)
	}
}

func TestNotifyUnion(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{"", "NEVER", ""}, {"NEVER", "", ""}, {"NEVER", "NEVER", "NEVER"},
		{"NEVER", "DELAY", "DELAY"}, {"FAILURE", "NEVER", "FAILURE"},
		{"DELAY,SUCCESS", "FAILURE", "SUCCESS,FAILURE,DELAY"}, {"SUCCESS", "", ""},
	} {
		if got := NotifyUnion(tc.a, tc.b); got != tc.want {
			t.Errorf("NotifyUnion(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}
