package queue

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// BenchmarkDrain drains b.N queued 2 KB messages through the scheduler's
// loop (Queue.Run), the production workers and upstream component, and
// real relay sessions to an in-process STARTTLS+AUTH upstream: the
// in-process part of make bench's drain, for profiling
// (go test -bench Drain -cpuprofile).
func BenchmarkDrain(b *testing.B) {
	for _, c := range []int{1, 4} {
		b.Run("concurrency="+string(rune('0'+c)), func(b *testing.B) {
			srv := smtptest.New(b, smtptest.Options{Username: "u", Password: "p", NoStore: true})
			up := srv.Upstream()
			opts := relay.Options{Hostname: "web1.example.com", RootCAs: srv.CAPool}
			root := filepath.Join(b.TempDir(), "spool")
			if err := spool.Prepare(root, spool.CurrentOwner()); err != nil {
				b.Fatal(err)
			}
			sp, err := spool.OpenQueue(root)
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			body := "From: a@example.org\nTo: b@example.net\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 30)
			for i := 0; i < b.N; i++ {
				m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(), Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"b@example.net"}}, Origin: spool.Origin{UID: 1001, User: "u"}}
				d, err := sp.NewMessage(m)
				if err != nil {
					b.Fatal(err)
				}
				d.Write([]byte(body))
				if err := d.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			if err := sp.Sync(); err != nil {
				b.Fatal(err)
			}
			q := New(sp, maillog.New(discard{}, nil), nil, Settings{Retry: []time.Duration{time.Minute}, Lifetime: time.Hour, Concurrency: c,
				Upstreams: NewUpstreams([]config.Upstream{up.WithDefaults()}, opts, nil)})
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			r := startRun(b, q)
			r.pass(b)
			b.StopTimer()
			r.stop()
			if got := srv.Count(); got != b.N {
				b.Fatalf("%d delivered, want %d", got, b.N)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
