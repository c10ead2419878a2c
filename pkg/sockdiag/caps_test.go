package sockdiag

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// capEff returns the effective capability set of thread tid of this
// process, from /proc; ok is false when the thread is gone.
func capEff(t *testing.T, tid int) (uint64, bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok {
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n, true
		}
	}
	t.Fatal("no CapEff")
	return 0, false
}

// A scan runs with the scan capabilities in force on its thread; after
// it, that thread (the caller's) has them out of force again. Concurrent
// scans run at once, on their own threads.
func TestWithScanCaps(t *testing.T) {
	d, err := capget()
	if err != nil || d.Permitted&scanCapMask != scanCapMask {
		t.Skip("needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE permitted (run as root)")
	}
	const mask = uint64(scanCapMask)
	seen := map[int]bool{}
	var mu sync.Mutex
	scan := func(wait func()) {
		WithScanCaps(func() {
			tid := unix.Gettid()
			eff, _ := capEff(t, tid)
			mu.Lock()
			seen[tid] = true
			mu.Unlock()
			if eff&mask != mask {
				t.Errorf("thread %d during a scan: CapEff %x, want %x in it", tid, eff, mask)
			}
			if wait != nil {
				wait()
			}
		})
	}
	checkAfter := func() {
		mu.Lock()
		defer mu.Unlock()
		for tid := range seen {
			if eff, ok := capEff(t, tid); ok && eff&mask != 0 {
				t.Errorf("thread %d after its scan: CapEff %x", tid, eff)
			}
		}
	}
	for range 5 {
		scan(nil)
	}
	checkAfter()
	// 8 scans at once: each waits until all have started.
	var started sync.WaitGroup
	started.Add(8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scan(func() { started.Done(); started.Wait() })
		}()
	}
	wg.Wait()
	checkAfter()
}

// BenchmarkWithScanCaps is the cost of running a (trivial) scan with the
// capabilities raised.
func BenchmarkWithScanCaps(b *testing.B) {
	for b.Loop() {
		WithScanCaps(func() {})
	}
}
