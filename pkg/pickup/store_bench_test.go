package pickup

import (
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

// BenchmarkStoreSessions stores b.N messages of 2 KB through Store from
// 8 concurrent sessions, each pausing 100-400 µs before each message (the
// rest of an SMTP session: connect, EHLO, MAIL, RCPT), as the loopback
// listener's benchmark row does: the group commit's cost. It reports the
// process's CPU time per message (user+sys, the sessions' pauses cost
// next to none) and the messages per group commit.
func BenchmarkStoreSessions(b *testing.B) {
	e := newEnv(b, testConfig())
	store := e.p.Store(0)
	body := "From: a@example.org\nTo: b@example.net\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 30)
	const sessions = 8
	var next int64
	var mu sync.Mutex
	b.ReportAllocs()
	g0 := e.p.committer.groups
	c0 := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= int64(b.N) {
					return
				}
				time.Sleep(time.Duration(100+rand.IntN(300)) * time.Microsecond)
				m := &spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"b@example.net"}},
					Origin: spool.Origin{UID: os.Getuid(), Via: "smtp"}}
				if _, err := store(m, strings.NewReader(body)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-µs/msg")
	e.p.committer.mu.Lock()
	groups := e.p.committer.groups - g0
	e.p.committer.mu.Unlock()
	if groups > 0 {
		b.ReportMetric(float64(b.N)/float64(groups), "msgs/group")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
