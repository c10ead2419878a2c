package sockserve

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

func TestLimiterCaps(t *testing.T) {
	l := &Limiter{Global: 3, PerUID: 2}
	ctx := context.Background()
	if l.Acquire(ctx, 1) != nil || l.Acquire(ctx, 1) != nil {
		t.Fatal("uid 1 refused under its cap")
	}
	if err := l.Acquire(ctx, 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("third for uid 1: %v, want ErrBusy", err)
	}
	if l.Acquire(ctx, 2) != nil {
		t.Fatal("uid 2 refused under the global cap")
	}
	if err := l.Acquire(ctx, 3); !errors.Is(err, ErrBusy) {
		t.Fatalf("over the global cap: %v", err)
	}
	l.Release(1)
	if l.Acquire(ctx, 3) != nil {
		t.Fatal("a released slot was not reusable")
	}
	if a, w := l.InUse(); a != 3 || w != 0 {
		t.Fatalf("in use %d, waiting %d", a, w)
	}
}

// A peer over the cap waits for a slot; the number of waiters is capped;
// a waiter gives up after Wait, or when its context ends.
func TestLimiterWait(t *testing.T) {
	l := &Limiter{Global: 1, PerUID: 1, MaxWaiting: 2, MaxWaitingPerUID: 1, Wait: time.Hour}
	ctx := context.Background()
	if err := l.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- l.Acquire(ctx, 1) }()
	waitfor.True(t, "the condition", 10*time.Second, func() bool { _, w := l.InUse(); return w == 1 })
	// uid 1 has its one waiter: a second is refused at once.
	if err := l.Acquire(ctx, 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("second waiter of uid 1: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	other := make(chan error, 1)
	go func() { other <- l.Acquire(cctx, 2) }()
	waitfor.True(t, "the condition", 10*time.Second, func() bool { _, w := l.InUse(); return w == 2 })
	if err := l.Acquire(ctx, 3); !errors.Is(err, ErrBusy) {
		t.Fatalf("over MaxWaiting: %v", err)
	}
	cancel()
	if err := <-other; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	l.Release(1)
	if err := <-got; err != nil {
		t.Fatalf("waiter after release: %v", err)
	}
	// A waiter whose wait ends gets ErrBusy.
	l.Wait = time.Millisecond
	if err := l.Acquire(ctx, 4); !errors.Is(err, ErrBusy) {
		t.Fatalf("after the wait: %v", err)
	}
	if a, w := l.InUse(); a != 1 || w != 0 {
		t.Fatalf("in use %d, waiting %d", a, w)
	}
}

func TestRateLog(t *testing.T) {
	now := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	var lines []int
	r := &RateLog{Now: func() time.Time { return now }, Log: func(n int, kv ...any) { lines = append(lines, n) }}
	for i := 0; i < 1000; i++ {
		r.Note()
	}
	now = now.Add(61 * time.Second)
	r.Note()
	if len(lines) != 2 || lines[0] != 1 || lines[1] != 1000 {
		t.Fatalf("lines %v, want [1 1000]", lines)
	}
}

// The accept loop rides out EMFILE: the process's descriptor limit is
// lowered until accept fails, and the loop neither spins nor floods the
// log, then serves again once descriptors are free.
func TestAcceptorBacksOffOnEMFILE(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(sock, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var logged, failures atomic.Int64
	acc := &Acceptor{Ln: ln, Log: func(err error, n int) {
		if !errors.Is(err, syscall.EMFILE) {
			t.Errorf("logged %v", err)
		}
		logged.Add(1)
		failures.Add(int64(n))
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := acc.Accept(ctx)
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	// Fill the descriptor table up to a lowered limit.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	(<-accepted).Close()
	var fill []int
	for {
		fd, err := syscall.Dup(0)
		if err != nil {
			break
		}
		fill = append(fill, fd)
		if len(fill) > 100 {
			break
		}
	}
	// Lower the limit just above the descriptors in use.
	maxFD := 0
	for _, fd := range fill {
		maxFD = max(maxFD, fd)
	}
	lim := syscall.Rlimit{Cur: uint64(maxFD + 1), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	restore := func() {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
		for _, fd := range fill {
			syscall.Close(fd)
		}
		fill = nil
	}
	defer restore()
	// The client side of a connection needs a descriptor too: free one.
	syscall.Close(fill[len(fill)-1])
	fill = fill[:len(fill)-1]
	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c2.Close()
	waitfor.True(t, "the condition", 10*time.Second, func() bool { return logged.Load() >= 1 })
	restore()
	c := <-accepted
	if c == nil {
		t.Fatal("no connection after descriptors were freed")
	}
	c.Close()
	if n := logged.Load(); n != 1 {
		t.Errorf("%d log lines for one episode, want 1", n)
	}
	if acc.delay != 0 {
		t.Errorf("backoff not reset after a success: %v", acc.delay)
	}
}

// Users who flood to their per-UID caps cannot refuse one who does not:
// every UID keeps Floor slots beyond Global (up to Ceiling), and the
// privileged peers have Reserved slots of their own.
func TestLimiterFloorAndReserve(t *testing.T) {
	l := &Limiter{Global: 4, PerUID: 2, Floor: 1, Ceiling: 6, Reserved: 2, Privileged: func(uid int) bool { return uid == 0 }}
	ctx := context.Background()
	for uid := 1; uid <= 2; uid++ {
		for i := 0; i < 2; i++ {
			if err := l.Acquire(ctx, uid); err != nil {
				t.Fatalf("uid %d slot %d: %v", uid, i, err)
			}
		}
	}
	// Global is full: uid 3 and uid 4 still get their floor, uid 3 no
	// more than that.
	if err := l.Acquire(ctx, 3); err != nil {
		t.Fatalf("uid 3 refused its floor: %v", err)
	}
	if err := l.Acquire(ctx, 3); !errors.Is(err, ErrBusy) {
		t.Fatalf("uid 3 beyond its floor: %v, want ErrBusy", err)
	}
	if err := l.Acquire(ctx, 4); err != nil {
		t.Fatalf("uid 4 refused its floor: %v", err)
	}
	// Ceiling reached: a fifth user is refused, root is not.
	if err := l.Acquire(ctx, 5); !errors.Is(err, ErrBusy) {
		t.Fatalf("over the ceiling: %v, want ErrBusy", err)
	}
	for i := 0; i < 2; i++ {
		if err := l.Acquire(ctx, 0); err != nil {
			t.Fatalf("root's reserved slot %d: %v", i, err)
		}
	}
	if err := l.Acquire(ctx, 0); !errors.Is(err, ErrBusy) {
		t.Fatalf("root beyond its reserve with the ceiling reached: %v, want ErrBusy", err)
	}
	// Root's reserved slots do not count against the others.
	l.Release(4)
	if err := l.Acquire(ctx, 5); err != nil {
		t.Fatalf("uid 5 after a release: %v", err)
	}
	l.Release(0)
	l.Release(0)
	if a, _ := l.InUse(); a != 6 {
		t.Fatalf("%d slots in use, want 6", a)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, nil, 0o600)
	if _, err := Listen(p, 0o666); err == nil {
		t.Fatal("Listen over a regular file succeeded")
	}
}

// Serve hands each connection to handle; when ctx is done it closes the
// listener, and it returns only once every handle has returned.
func TestServe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Every connection is held until release (the probes of the wait for
	// the close below may be accepted too).
	handling, release := make(chan struct{}, 1), make(chan struct{})
	done := make(chan struct{})
	go func() {
		Serve(ctx, ln, nil, func(c *net.UnixConn) {
			defer c.Close()
			select {
			case handling <- struct{}{}:
			default:
			}
			<-release
		})
		close(done)
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-handling
	cancel()
	waitfor.True(t, "the listener closed", 10*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case <-done:
		t.Fatal("Serve returned while a connection was being handled")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its handler did")
	}
}
