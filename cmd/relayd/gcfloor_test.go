package main

import "testing"

// The heap goal is the floor while the live heap is under half of it,
// and Go's default pacing beyond; never more than the floor. The runtime's
// goal is live × (1 + percent/100), but at least its minimum heap, 4 MB ×
// percent/100: a percentage that made the first reach the floor for a
// small live heap (1,500% for 1 MB) made the second 60 MB, and relayd's
// peak RSS in a drain of 10,000 messages 77–89 MB instead of ~20.
func TestFloorPercent(t *testing.T) {
	const mb = 1 << 20
	const floor = 16 * mb
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},         // not known yet
		{1 * mb, 400},    // 1 MB live: the runtime's minimum, the floor
		{2 * mb, 400},    // 2 MB live: goal 16 MB (the minimum)
		{4 * mb, 300},    // goal 16 MB
		{8 * mb, 100},    // half the floor: the default
		{35 * mb, 100},   // a long queue: the default
		{1000, 400},      // almost nothing live: the minimum
		{7 * mb, 128},    // goal 16 MB, rounded down: 15.96 MB
		{3*mb + 1, 400},  // just over 3 MB: the minimum, 16 MB
		{16*mb + 1, 100}, // over the floor
	} {
		got := floorPercent(c.live, floor)
		if got != c.want {
			t.Errorf("live %d: percent %d, want %d", c.live, got, c.want)
		}
		// The goal as the runtime computes it (mgcpacer.go: the
		// percentage's goal, raised to the minimum heap).
		goal := max(c.live+c.live*uint64(got)/100, runtimeHeapMinimum*uint64(got)/100)
		if c.live > 0 && 2*c.live < floor {
			if goal < floor-c.live/100 || goal > floor {
				t.Errorf("live %d: goal %d, want the floor %d", c.live, goal, floor)
			}
		} else if c.live > 0 && goal > 2*c.live+runtimeHeapMinimum {
			t.Errorf("live %d: goal %d over the default pacing", c.live, goal)
		}
	}
}
