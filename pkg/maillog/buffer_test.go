package maillog

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a writer that keeps each write apart.
type recorder struct {
	mu     sync.Mutex
	writes []string
	fail   error
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) all() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.writes, ""), len(r.writes)
}

func TestBufferCoalescesAndFlushesAfterDelay(t *testing.T) {
	r := &recorder{}
	// A delay long beside the loop below, so that a loaded machine that
	// stops the test for a while still sees the lines coalesced.
	b := NewBuffer(r, 500*time.Millisecond)
	defer b.Close()
	var want strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(b, "line %d\n", i)
		fmt.Fprintf(&want, "line %d\n", i)
	}
	// Nobody flushes: the timer does.
	deadline := time.Now().Add(10 * time.Second)
	for got, _ := r.all(); got != want.String() && time.Now().Before(deadline); got, _ = r.all() {
		time.Sleep(time.Millisecond)
	}
	got, n := r.all()
	if got != want.String() {
		t.Fatalf("written %q, want %q", got, want.String())
	}
	// 100 lines written within a few µs (two writes if the timer fired
	// between them on a loaded machine), not one write each.
	if n > 2 {
		t.Fatalf("%d writes for 100 lines, want them coalesced", n)
	}
	// The timer re-arms for the next line.
	b.Write([]byte("later\n"))
	for deadline = time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if got, _ := r.all(); strings.HasSuffix(got, "later\n") {
			break
		}
	}
	if got, m := r.all(); m != n+1 || !strings.HasSuffix(got, "line 99\nlater\n") {
		t.Fatalf("after a second line: %d writes, %q", m, got)
	}
}

func TestBufferCloseAndFlushLoseNothing(t *testing.T) {
	r := &recorder{}
	b := NewBuffer(r, time.Hour)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				fmt.Fprintf(b, "g=%d i=%d\n", g, i)
			}
		}(g)
	}
	wg.Wait()
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("last\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b.Write([]byte("after close\n"))
	got, _ := r.all()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2002 || lines[2000] != "last" || lines[2001] != "after close" {
		t.Fatalf("%d lines, last two %q", len(lines), lines[len(lines)-2:])
	}
	// Each goroutine's lines in its order, each line whole.
	next := map[string]int{}
	for _, l := range lines[:2000] {
		var g, i int
		if _, err := fmt.Sscanf(l, "g=%d i=%d", &g, &i); err != nil {
			t.Fatalf("broken line %q", l)
		}
		k := fmt.Sprint(g)
		if i != next[k] {
			t.Fatalf("goroutine %d: line %d after %d", g, i, next[k]-1)
		}
		next[k]++
	}
}

func TestBufferWritesAtOnceWhenFull(t *testing.T) {
	r := &recorder{}
	b := NewBuffer(r, time.Hour)
	defer b.Close()
	line := bytes.Repeat([]byte("x"), 1000)
	line[len(line)-1] = '\n'
	for i := 0; i < bufferMax/len(line)+1; i++ {
		b.Write(line)
	}
	got, n := r.all()
	if n != 1 || len(got)%len(line) != 0 || len(got) > bufferMax {
		t.Fatalf("%d writes of %d bytes, want one of whole lines ≤ %d", n, len(got), bufferMax)
	}
}

func TestBufferReportsWriteErrors(t *testing.T) {
	r := &recorder{fail: errors.New("disk gone")}
	b := NewBuffer(r, time.Hour)
	b.Write([]byte("a\n"))
	if err := b.Flush(); err == nil || err.Error() != "disk gone" {
		t.Fatalf("Flush: %v, want the write's error", err)
	}
	r.fail = nil
	b.Write([]byte("b\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.all(); got != "b\n" {
		t.Fatalf("written %q", got)
	}
}

// TestLoggerLazyEvents: through a Buffer, the events every delivered
// message logs (pickup, whatever the door, delivery, removal) wait until
// WriteOut (the doors that answer a client call it before the answer);
// any other event is written out at once with everything that waited
// before it, in order.
func TestLoggerLazyEvents(t *testing.T) {
	r := &recorder{}
	b := NewBuffer(r, time.Hour)
	l := New(b, nil)
	l.Pickup(Pickup{ID: "A", Via: "maildrop"})
	l.Delivery("A", "x@example.org", "up:25", "250 ok", "Q1")
	l.Removed("A", 1, 0)
	l.Pickup(Pickup{ID: "B", Via: "socket"})
	l.Pickup(Pickup{ID: "C", Via: "smtp"})
	if got, n := r.all(); n != 0 {
		t.Fatalf("lazy events written at once: %q", got)
	}
	l.WriteOut()
	got, n := r.all()
	if n != 1 {
		t.Fatalf("%d writes, want the five lines in one", n)
	}
	var events []string
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		f := strings.Fields(line)
		events = append(events, f[1]+" "+f[2])
	}
	if want := "event=pickup id=A|event=delivery id=A|event=removed id=A|event=pickup id=B|event=pickup id=C"; strings.Join(events, "|") != want {
		t.Fatalf("written %q, want %q", strings.Join(events, "|"), want)
	}
	l.Delivery("B", "x@example.org", "up:25", "250 ok", "Q2")
	l.Warning("something", errors.New("wrong"))
	if got, n := r.all(); n != 2 || !strings.Contains(got, "event=delivery id=B") || !strings.HasSuffix(got, "error=wrong\n") {
		t.Fatalf("after a warning: %d writes, %q", n, got)
	}
}
