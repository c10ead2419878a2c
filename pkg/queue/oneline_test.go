package queue

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// An upstream's text in a bounce or mailq: one line, no terminal
// controls, no bidi reordering, valid UTF-8, cut at a character.
func TestOneLine(t *testing.T) {
	got := oneLine("550-a\r\n550 b\tc\x1b[2J\x00\x7f\u0085\u2028\u202ed\u2066e\xff")
	if want := "550-a  550 b c?[2J?????d?e\uFFFD"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	long := oneLine(strings.Repeat("é", 600))
	if !utf8.ValidString(long) || !strings.HasSuffix(long, "...") || len(long) > 903 {
		t.Errorf("long: %d bytes, valid %v", len(long), utf8.ValidString(long))
	}
}
