package maillog

import (
	"bytes"
	"testing"
	"time"
)

func TestEventFormat(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, func() time.Time { return time.Date(2026, 11, 23, 14, 40, 0, 123e6, time.UTC) })
	l.Event("pickup", "id", "0006270A1B2C3D4E5F60", "uid", 1001, "script", "/home/a b.php", "from", "<a@b>", "evil", "x\ny=1")
	want := `ts=2026-11-23T14:40:00.123Z event=pickup id=0006270A1B2C3D4E5F60 uid=1001 script="/home/a b.php" from=<a@b> evil="x\ny=1"` + "\n"
	if b.String() != want {
		t.Errorf("got  %q\nwant %q", b.String(), want)
	}
}
