package spool

import (
	"io"
	"strings"
	"testing"
	"time"
)

// A message is written into its segment in one write when it fits in the
// writer's buffer (its size and checksum patched in before), in several
// when it does not; either way it reads back whole, with the size and
// checksum of what was written, whatever the sizes of the Writes.
func TestMsgWriterWrites(t *testing.T) {
	q := newTestQueue(t)
	const buf = 64 << 10
	for _, tc := range []struct {
		size, chunk int
		one         bool // written in one write
	}{
		{0, 1, true},
		{100, 7, true},
		{2 << 10, 2 << 10, true},
		{buf - 1024, 4096, true},
		{buf - 1, 1, false}, // the header takes the buffer's last bytes
		{buf, buf, false},
		{buf + 1, 1000, false},
		{3*buf + 17, buf + 5, false},
		{5 * buf, 5 * buf, false},
	} {
		body := strings.Repeat("0123456789abcde\n", tc.size/16+1)[:tc.size]
		id := NewID(time.Now())
		w, err := q.NewMessage(testMeta(id))
		if err != nil {
			t.Fatal(err)
		}
		for r := strings.NewReader(body); r.Len() > 0; {
			if _, err := io.CopyN(w, r, int64(tc.chunk)); err != nil && err != io.EOF {
				t.Fatal(err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := w.writes == 1; got != tc.one {
			t.Errorf("%d bytes in Writes of %d: %d writes to the segment", tc.size, tc.chunk, w.writes)
		}
		mustBody(t, q, id, body)
		m, meta, err := q.OpenMessage(id)
		if err != nil {
			t.Fatal(err)
		}
		if meta.Size != int64(tc.size) {
			t.Errorf("%d bytes: size %d recorded", tc.size, meta.Size)
		}
		m.Close()
	}
}
