package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// heapFloor is the least heap goal relayd's garbage collector works to.
//
// relayd keeps little alive (a few MB with a short queue) and allocates
// some tens of KB for every message it takes in or delivers (go-smtp's
// per-connection buffers, the header work, the log lines). With Go's
// default pacing (the goal twice the live heap, 4 MB at least) that is a
// collection every few dozen messages: 92 cycles for 4,000 messages in
// the loopback benchmark, and each cycle stops, scans and restarts every
// goroutine of the sessions in flight. A floor of 16 MB spaces them out
// about fivefold; once the live heap is past half of it (a long queue:
// ~35 MB with 100,000 messages), the default pacing applies unchanged,
// so relayd's memory at scale stays what it was.
const heapFloor = 16 << 20

// keepHeapFloor sets the collector's target percentage after every
// collection so that the next heap goal is at least floor bytes (and
// never less than the default, twice the live heap). A GOGC set in the
// environment is the administrator's choice and is left alone.
func keepHeapFloor(floor uint64) {
	if os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	adjust := func() {
		metrics.Read(sample)
		var live uint64
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = sample[0].Value.Uint64()
		}
		debug.SetGCPercent(floorPercent(live, floor))
	}
	adjust()
	// A finalizer runs once after the collection that found its object
	// unreachable: each one adjusts, then arms the next.
	var arm func()
	arm = func() {
		runtime.SetFinalizer(new(gcSentinel), func(*gcSentinel) {
			adjust()
			arm()
		})
	}
	arm()
}

// runtimeHeapMinimum is the runtime's own least heap goal at GOGC=100.
// The runtime scales it with the percentage (4 MB × percent/100: at
// 1,500% the goal is 60 MB whatever the live heap), so a percentage over
// floor×100/runtimeHeapMinimum would put the goal above the floor.
const runtimeHeapMinimum = 4 << 20

// floorPercent is the target percentage that makes the heap goal after
// a collection that left live bytes at least floor, and no more: 100
// (Go's default) once live is half of floor or more, at most
// floor×100/runtimeHeapMinimum (400 for 16 MB: the runtime's minimum goal
// is then the floor itself, which a smaller live heap gets), and 100 when
// live is not known.
func floorPercent(live, floor uint64) int {
	if live == 0 || 2*live >= floor {
		return 100
	}
	return int(min(floor*100/live-100, floor*100/runtimeHeapMinimum))
}

// gcSentinel is the object whose finalizer follows the collections (a
// pointer in it keeps it out of the tiny allocator, whose blocks are
// freed, and finalized, late).
type gcSentinel struct{ _ *byte }
