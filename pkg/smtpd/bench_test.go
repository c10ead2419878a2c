package smtpd

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
)

// BenchmarkSession is the listener's work for one message the way the
// loopback benchmark's clients send it (connect, EHLO, MAIL, RCPT, DATA
// with 2 KB, QUIT: one message per connection), from the accept to the
// reply after DATA: identification from the kernel, the SMTP dialogue and
// the submission pipeline, with a store that reads the message and keeps
// nothing (the queue's store is measured in package spool and pickup).
// The client runs in this process too: compare runs, not the absolute.
func BenchmarkSession(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := New(Options{Hostname: "bench.example", Intake: &submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return "", err
		}
		return spool.NewID(time.Now()), nil
	}}})
	// The client is this process: not a mail loop here.
	s.selfPID = -1
	go s.Serve(ln)
	defer s.Shutdown(b.Context())
	msg := []byte("From: a@bench.example\r\nTo: r@bench.example\r\nSubject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 2048/78))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if err := sendOne(ln.Addr().String(), msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkSessionStore is BenchmarkSession from 8 clients at once, with
// relayd's store (pickup.Pickup.Store into a private queue: rewriting,
// trace headers, segment append, group commit with fdatasync): the
// listener's part of the loopback benchmark's row but delivery, for
// profiling (-cpuprofile; the clients run in this process too).
func BenchmarkSessionStore(b *testing.B) {
	root := filepath.Join(b.TempDir(), "spool")
	if err := spool.Prepare(root, spool.CurrentOwner()); err != nil {
		b.Fatal(err)
	}
	q, err := spool.OpenQueue(root)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	cfg := config.Default()
	cfg.Hostname = "bench.example"
	cfg.AliasesFile = ""
	rw, errs := pickup.NewRewriter(cfg)
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	p, err := pickup.New(q, rw, maillog.New(maillog.NewBuffer(io.Discard, maillog.FlushDelay), nil))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := New(Options{Hostname: "bench.example", Intake: &submit.Intake{Store: p.Store(0)}})
	s.selfPID = -1
	go s.Serve(ln)
	defer s.Shutdown(b.Context())
	msg := []byte("From: a@bench.example\r\nTo: r@bench.example\r\nSubject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 2048/78))
	b.ReportAllocs()
	b.SetParallelism(4) // 8 clients on 2 CPUs
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := sendOne(ln.Addr().String(), msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is this process's user+sys CPU time (server and client).
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sendOne(addr string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.bench.example"); err != nil {
		return err
	}
	if err := c.Mail("sender@bench.example", nil); err != nil {
		return err
	}
	if err := c.Rcpt("rcpt@bench.example", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return c.Quit()
}

// BenchmarkDescribe is the listener's identification of one TCP
// connection whose client (this process) connected before: the socket
// table's lookup (identify), then describe: the slot of the user's last
// socket (one readlink), the reading of the process (origin.Procs) and
// the check that it still holds the socket.
func BenchmarkDescribe(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	raw, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	s := New(Options{Hostname: "bench.example"})
	defer s.Shutdown(b.Context())
	// The client is this process: read as any other.
	s.selfPID = -1
	b.ReportAllocs()
	for b.Loop() {
		id, err := s.identify(raw)
		if err != nil {
			b.Fatal(err)
		}
		s.describe(raw, id)
		if id.PID != os.Getpid() {
			b.Fatalf("pid %d, want this process", id.PID)
		}
	}
}
