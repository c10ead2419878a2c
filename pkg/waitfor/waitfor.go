// Package waitfor is the one polling helper of mailshim's tests: wait
// until a condition holds, with a time limit that is a safety net for a
// loaded machine, never an assertion on speed. Its Go API is not stable.
package waitfor

import "time"

// TB is the part of testing.TB that True uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Poll reports whether cond holds within limit. It checks at once, then
// after 1 ms, doubling the pause up to 50 ms: quick conditions are seen
// quickly, slow ones are not polled in a tight loop.
func Poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
	return true
}

// True fails t when cond does not hold within limit: "timed out after
// <limit> waiting for <what>", followed by what each detail function
// returns (a log tail, the state seen last).
func True(t TB, what string, limit time.Duration, cond func() bool, detail ...func() string) {
	t.Helper()
	if Poll(limit, cond) {
		return
	}
	msg := ""
	for _, d := range detail {
		msg += "\n" + d()
	}
	t.Fatalf("timed out after %v waiting for %s%s", limit, what, msg)
}
