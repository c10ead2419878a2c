package pickup

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// BenchmarkPickup picks up b.N maildrop files of 2 KB (written as
// sendmail writes them, outside the timer) into the queue: open, decode,
// rewrite, segment append, batch Sync and unlink — pickup's part of a
// drain, for profiling (go test -bench Pickup -benchmem -cpuprofile).
func BenchmarkPickup(b *testing.B) {
	e := newEnv(b, testConfig())
	body := "From: a@example.org\nTo: b@example.net\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 30)
	env := spool.Envelope{Sender: "a@example.org", Recipients: []string{"b@example.net"}}
	const round = 1000
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		b.StopTimer()
		for i := 0; i < n; i++ {
			e.drop(b, spool.Meta{ID: spool.NewID(time.Now()), Env: env}, body)
		}
		b.StartTimer()
		if got := e.p.scan(context.Background()); got != n {
			b.Fatalf("queued %d of %d", got, n)
		}
	}
}
