package relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// BenchmarkSend measures one session sending 2 KB messages to a loopback
// STARTTLS+AUTH upstream (FACTS.md: a bare go-smtp client does ~2,000/s).
func BenchmarkSend(b *testing.B) {
	srv := smtptest.New(b, smtptest.Options{Username: testUser, Password: testPass, NoStore: true})
	s, err := Dial(context.Background(), srv.Upstream(), testOpts())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m := testMsg("From: sender@example.org\nSubject: bench\n\n"+strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 32), "a@example.net")
	b.SetBytes(m.Size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := s.Send(context.Background(), m); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkSendBatch sends 2 KB messages on one session to a loopback
// STARTTLS+AUTH upstream in batches of 1 and 8, each message's commands
// behind the end of data of the one before (Message.Next), as a worker
// sends its job; it reports the process's CPU per message (user+sys,
// the upstream's included): what a job of one message costs more per
// message than one of several.
func BenchmarkSendBatch(b *testing.B) {
	body := "From: sender@example.org\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 32)
	for _, k := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch=%d", k), func(b *testing.B) {
			srv := smtptest.New(b, smtptest.Options{Username: testUser, Password: testPass, NoStore: true})
			s, err := Dial(context.Background(), srv.Upstream(), testOpts())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var before, after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			b.ResetTimer()
			for i := 0; i < b.N; i += k {
				ms := make([]*Message, min(k, b.N-i))
				for j := range ms {
					ms[j] = testMsg(body, "a@example.net")
				}
				for j, m := range ms {
					if j+1 < len(ms) {
						next := ms[j+1]
						m.Next, m.Waiting = next, next.Prepare
					}
					if res := s.Send(context.Background(), m); res.Err != nil {
						b.Fatal(res.Err)
					}
				}
			}
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}

// BenchmarkWire measures the transformer alone on a 2 KB message.
func BenchmarkWire(b *testing.B) {
	in := []byte("From: sender@example.org\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 32))
	b.SetBytes(int64(len(in)))
	for i := 0; i < b.N; i++ {
		if _, err := wire(b, in, WireMode{EightBit: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWireSafety is the transformer on a 64 KB message that needs no
// change and on one that does (8-bit text and long lines, for an upstream
// without 8BITMIME): the "wire safety" rows of make bench-inproc.
func BenchmarkWireSafety(b *testing.B) {
	var m bytes.Buffer
	m.WriteString("From: Bench <sender@bench.example>\nTo: rcpt@bench.example, Other <other@bench.example>\nCc: cc@bench.example\nBcc: hidden@bench.example\nSubject: benchmark\nMessage-ID: <1@bench.example>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n")
	line := strings.Repeat("0123456789abcdef", 5)[:75] + "\n"
	for m.Len() < 64<<10 {
		m.WriteString(line)
	}
	clean := m.Bytes()[:64<<10]
	dirty := append(append([]byte(nil), clean...), append(bytes.Repeat([]byte("é"), 1200), '\n')...)
	for _, c := range []struct {
		name string
		in   []byte
		mode WireMode
	}{{"clean", clean, WireMode{EightBit: true}}, {"8bit-long-lines-to-7bit", dirty, WireMode{}}} {
		b.Run(c.name, func(b *testing.B) {
			src := func() (io.Reader, error) { return bytes.NewReader(c.in), nil }
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := newWireReader(src, c.mode)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScanRender is what a Send does to a 2 KB message held in
// memory before it goes out: the scan (Message.Prepare) and the rendering
// for the wire after the 354.
func BenchmarkScanRender(b *testing.B) {
	in := []byte("From: sender@example.org\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 32))
	body := func() (io.Reader, error) { return bytes.NewReader(in), nil }
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		p, src, err := scanBody(body)
		if err != nil {
			b.Fatal(err)
		}
		r := render(src, p, WireMode{EightBit: true})
		if r == nil {
			b.Fatal("not rendered")
		}
		r.release()
		src.release()
	}
}

// BenchmarkParseQueueID is the queue ID found in a final reply, once per
// message.
func BenchmarkParseQueueID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if parseQueueID("2.0.0 Ok: queued as 4XyZ1k2Lm3") == "" {
			b.Fatal("not found")
		}
	}
}
