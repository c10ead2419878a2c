package queue

import (
	"path/filepath"
	"strings"
	"syscall"
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
			sp := benchSpool(b)
			for i := 0; i < b.N; i++ {
				benchPut(b, sp)
			}
			if err := sp.Sync(); err != nil {
				b.Fatal(err)
			}
			q := New(sp, maillog.New(discard{}, nil), nil, Settings{Retry: []time.Duration{time.Minute}, Lifetime: time.Hour, Concurrency: c,
				Upstreams: NewUpstreams([]config.Upstream{up.WithDefaults()}, opts, nil)})
			b.SetBytes(int64(len(benchBody)))
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

// BenchmarkStream delivers mail as it comes in, the way the doors queue it
// while relayd delivers (the loopback row of make bench): groups of 4
// messages, each group made durable with one Sync and then kicked, every
// 1.5 ms, while Queue.Run with 4 workers delivers them to an in-process
// go-smtp upstream on loopback (no TLS, as the bench's). It reports the
// process's CPU per message (user+sys, the upstream's and the enqueuing
// included).
func BenchmarkStream(b *testing.B) {
	srv := smtptest.New(b, smtptest.Options{NoTLS: true, NoStore: true})
	opts := relay.Options{Hostname: "web1.example.com"}
	sp := benchSpool(b)
	q := New(sp, maillog.New(discard{}, nil), nil, Settings{Retry: []time.Duration{time.Minute}, Lifetime: time.Hour, Concurrency: 4,
		Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, opts, nil)})
	r := startRun(b, q)
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	tick := time.NewTicker(1500 * time.Microsecond)
	defer tick.Stop()
	for i := 0; i < b.N; i += 4 {
		<-tick.C
		for k := i; k < min(i+4, b.N); k++ {
			benchPut(b, sp)
		}
		if err := sp.Sync(); err != nil {
			b.Fatal(err)
		}
		q.Kick()
	}
	if _, err := srv.WaitFor(b.N, time.Minute); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	r.stop()
}

// benchBody is the body of the benchmarks' messages: a few headers and
// 30 lines of 64 bytes, about 2 KB.
var benchBody = "From: a@example.org\nTo: b@example.net\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 30)

// benchSpool is a new spool in b's temporary directory, closed when b ends.
func benchSpool(b *testing.B) *spool.Queue {
	root := filepath.Join(b.TempDir(), "spool")
	if err := spool.Prepare(root, spool.CurrentOwner()); err != nil {
		b.Fatal(err)
	}
	sp, err := spool.OpenQueue(root)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sp.Close() })
	return sp
}

// benchPut writes one message of benchBody from UID 1001 into sp,
// committed but not yet made durable (the caller's Sync does that).
func benchPut(b *testing.B, sp *spool.Queue) {
	m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(), Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"b@example.net"}}, Origin: spool.Origin{UID: 1001, User: "u"}}
	d, err := sp.NewMessage(m)
	if err != nil {
		b.Fatal(err)
	}
	d.Write([]byte(benchBody))
	if err := d.Commit(); err != nil {
		b.Fatal(err)
	}
}
