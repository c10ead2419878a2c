package spool

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCommitSync is the group commit of the doors: groups of four
// 2 KB messages, each group made durable by one Sync (fdatasync of the
// segment, then of the journal). Reported: wall time and the process's
// CPU time (user+sys) per Sync. The spool is under the test's temp dir,
// so the file system is that of $TMPDIR.
func BenchmarkCommitSync(b *testing.B) {
	q := newTestQueue(b)
	if _, err := q.Recover(func(string) bool { return false }); err != nil {
		b.Fatal(err)
	}
	body := "Subject: bench\n\n" + strings.Repeat(strings.Repeat("b", 71)+"\n", 28)
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	c0 := cpu()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 4; j++ {
			putBody(b, q, Incoming, body)
		}
		if err := q.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpu()-c0).Microseconds())/float64(b.N), "cpu-µs/op")
}
