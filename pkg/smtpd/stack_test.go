package smtpd

import (
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
)

// growStack leaves the goroutine that called it on a stack of 32 KiB at
// least: the compiler kept the frame that makes the stack grow.
func TestGrowStack(t *testing.T) {
	const n = 200
	inuse := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.StackInuse
	}
	// No collection while the stacks are counted: one shrinks the
	// stacks of goroutines parked with little of theirs in use, these
	// included, to half (an explicit runtime.GC here: 16 KiB each).
	// Turning it off waits for a collection under way to end.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := inuse()
	release := make(chan struct{})
	var started, done sync.WaitGroup
	for i := 0; i < n; i++ {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			growStack()
			started.Done()
			<-release
		}()
	}
	started.Wait()
	grown := inuse() - before
	close(release)
	done.Wait()
	// Stacks double: each holds 32 KiB, or 16 KiB at most had the frame
	// not made it grow that far. The margin between the two is for the
	// stacks other goroutines (earlier tests') free meanwhile, which the
	// difference of StackInuse counts too.
	if grown < n*24<<10 {
		t.Errorf("%d goroutines after growStack hold %d KiB of stack, want 32 KiB each", n, grown>>10)
	}
}

// Sessions reach DATA at once, each growing its stack: the server takes
// every message (and, under the race detector, growStack is no data race
// between the sessions' goroutines).
func TestConcurrentSessionsData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var stored atomic.Int32
	s := New(Options{Hostname: "test.example", Intake: &submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return "", err
		}
		stored.Add(1)
		return spool.NewID(time.Now()), nil
	}}})
	s.selfPID = -1 // the clients are this process: not a mail loop here
	go s.Serve(ln)
	defer s.Shutdown(t.Context())
	msg := []byte("From: a@test.example\r\nTo: r@test.example\r\nSubject: at once\r\n\r\nbody\r\n")
	const clients, each = 8, 5
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			for j := 0; j < each; j++ {
				if err := sendOne(ln.Addr().String(), msg); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := stored.Load(); n != clients*each {
		t.Errorf("stored %d messages, want %d", n, clients*each)
	}
}
