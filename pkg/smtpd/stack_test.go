package smtpd

import (
	"runtime"
	"sync"
	"testing"
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
	if grown < n*32<<10 {
		t.Errorf("%d goroutines after growStack hold %d KiB of stack, want 32 KiB each at least", n, grown>>10)
	}
}
