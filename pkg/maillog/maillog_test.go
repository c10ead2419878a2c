package maillog

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// event writes one line of any event with the pairs in kv, as the typed
// methods do with theirs (emit), for the tests of the line format.
func (l *Logger) event(event string, kv ...any) {
	l.emit(slog.LevelInfo, event, KV(kv...)...)
}

func TestEventFormat(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, func() time.Time { return time.Date(2026, 11, 23, 14, 40, 0, 123e6, time.UTC) })
	l.event("pickup", "id", "0006270A1B2C3D4E5F60", "uid", 1001, "script", "/home/a b.php", "from", "<a@b>", "evil", "x\ny=1")
	want := `ts=2026-11-23T14:40:00.123Z event=pickup id=0006270A1B2C3D4E5F60 uid=1001 script="/home/a b.php" from=<a@b> evil="x\ny=1"` + "\n"
	if b.String() != want {
		t.Errorf("got  %q\nwant %q", b.String(), want)
	}
}

// Every value from outside is written so that it cannot break its line,
// forge another event, or drive a terminal.
func TestValueEscapes(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"a b", `"a b"`},
		{"x\r\nts=1 event=delivery id=FORGED", `"x\r\nts=1 event=delivery id=FORGED"`},
		{"nul\x00del\x7fesc\x1b[2J", `"nul\x00del\x7fesc\x1b[2J"`},
		{"bad\xff\xfeutf8", `"bad\xff\xfeutf8"`},
		{"ls\u2028ps\u2029rlo\u202enel\u0085", `"ls\u2028ps\u2029rlo\u202enel\u0085"`},
		{`q"b\e=`, `"q\"b\\e="`},
		{"grüße", `"grüße"`},
	} {
		if got := Value(tc.in); got != tc.want {
			t.Errorf("Value(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("é", MaxValue) // 2 bytes each
	got := Value(long)
	if len(got) > MaxValue+40 || !strings.HasSuffix(got, fmt.Sprintf(`...[%d more bytes]"`, 2*MaxValue-MaxValue)) {
		t.Errorf("long value: %d bytes, ends %q", len(got), got[len(got)-30:])
	}
	if _, err := strconv.Unquote(got); err != nil {
		t.Errorf("long value is not a valid quoted string: %v", err)
	}
}

func TestBadKey(t *testing.T) {
	var b bytes.Buffer
	New(&b, func() time.Time { return time.Unix(0, 0) }).event("x", "ok_key", 1, "bad key\nts=0", 2)
	if want := "ts=1970-01-01T00:00:00.000Z event=x ok_key=1 badkey=2\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// appendTime writes what AppendFormat writes with the line's layout.
func TestAppendTime(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	times := []time.Time{{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 23, 14, 40, 0, 123e6, time.UTC), time.Date(2026, 1, 2, 3, 4, 5, 6e6+999, time.UTC)}
	for range 100000 {
		times = append(times, time.Unix(r.Int64N(1<<38)-1<<37, r.Int64N(1e9)).UTC())
	}
	for _, tm := range times {
		if got, want := string(appendTime(nil, tm)), tm.Format("2006-01-02T15:04:05.000Z"); got != want {
			t.Fatalf("appendTime(%v) = %q, want %q", tm, got, want)
		}
	}
}
