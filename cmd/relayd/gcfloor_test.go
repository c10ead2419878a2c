package main

import "testing"

// The heap goal (live × (1 + percent/100)) is at least the floor while
// the live heap is under half of it, and Go's default pacing beyond.
func TestFloorPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},         // not known yet
		{2 * mb, 700},    // 2 MB live: goal 16 MB
		{4 * mb, 300},    // goal 16 MB
		{8 * mb, 100},    // half the floor: the default
		{35 * mb, 100},   // a long queue: the default
		{1000, 10000},    // almost nothing live: capped
		{7 * mb, 128},    // goal 16 MB, rounded down: 15.96 MB
		{3*mb + 1, 433},  // just over 3 MB: goal just under 16 MB
		{16*mb + 1, 100}, // over the floor
	} {
		got := floorPercent(c.live, 16*mb)
		if got != c.want {
			t.Errorf("live %d: percent %d, want %d", c.live, got, c.want)
		}
		if c.live > 1000 && 2*c.live < 16*mb {
			if goal := c.live + c.live*uint64(got)/100; goal < 16*mb-c.live/100 {
				t.Errorf("live %d: goal %d under the floor", c.live, goal)
			}
		}
	}
}
