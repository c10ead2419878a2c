package pickup

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
)

// The trace fields are written as these simple forms would write them.
func TestTraceFieldsFormat(t *testing.T) {
	refSafe := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s) && i < 100; i++ {
			if c := s[i]; c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '\\' {
				b.WriteByte(c)
			} else {
				b.WriteByte('?')
			}
		}
		return b.String()
	}
	refOriginField := func(name, value string) string {
		var b strings.Builder
		b.WriteString(name + ":")
		col := b.Len()
		for _, w := range strings.Split(value, " ") {
			if col+1+len(w) > foldWidth && col > len(name)+1 {
				b.WriteString("\n")
				col = 0
			}
			b.WriteString(" " + w)
			col += 1 + len(w)
		}
		return b.String() + "\n"
	}
	// The bytes at each edge of appendHeaderSafe's classes too:
	// controls, CR, LF, NUL, space, "!", "~", DEL.
	const alpha = "ab c()\\\"\t;\xffé/._-\r\n\x00\x1f!~\x7f"
	r := rand.New(rand.NewPCG(5, 6))
	word := func(n int) string {
		b := make([]byte, r.IntN(n))
		for i := range b {
			b[i] = alpha[r.IntN(len(alpha))]
		}
		return string(b)
	}
	rw := &Rewriter{Hostname: "host.example", TraceFields: []string{"uid", "user", "script"}}
	for i := range 20000 {
		o := &spool.Origin{UID: r.IntN(1 << 31), User: word(120), Script: word(400)}
		if i%5 == 0 {
			o.User, o.Script = "", ""
		}
		tm := time.Unix(r.Int64N(1<<33), 0).In(time.FixedZone("", (r.IntN(49)-24)*1800))
		id := spool.NewID(tm)
		user := o.User
		if user == "" {
			user = "unknown"
		}
		want := fmt.Sprintf("from uid %d (%s) by %s (mailshim) id %s; %s", o.UID, refSafe(user), rw.Hostname, id, tm.Format(time.RFC1123Z))
		if got, want := rw.receivedField(o, id, tm), message.NewField("Received", want); got.Name != want.Name || string(got.Raw) != string(want.Raw) {
			t.Fatalf("receivedField = %q, want %q", got.Raw, want.Raw)
		}
		var parts []string
		parts = append(parts, "uid="+strconv.Itoa(o.UID))
		if o.User != "" {
			parts = append(parts, "user="+traceValue(o.User))
		}
		if o.Script != "" {
			parts = append(parts, "script="+traceValue(o.Script))
		}
		v := rw.Origin(o)
		if want := strings.Join(parts, " "); v != want {
			t.Fatalf("Origin = %q, want %q", v, want)
		}
		for _, v := range []string{v, word(300), ""} {
			if got, want := originField("X-Mailshim-Origin", v), refOriginField("X-Mailshim-Origin", v); string(got.Raw) != want || got.Name != "X-Mailshim-Origin" {
				t.Fatalf("originField(%q) = %q, want %q", v, got.Raw, want)
			}
		}
	}
}
