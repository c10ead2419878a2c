package smtpd

import (
	"fmt"
	"testing"

	"github.com/mailshim/mailshim/pkg/sockdiag"
)

// The slots of ended connections come first, process by process (the
// process of the most recently ended first), each process's lowest
// descriptor first (the kernel gives a new socket the lowest free one),
// then those of open connections, the newest first; a slot is listed
// once; a user keeps at most recentPerUID.
func TestRecentHoldersOrder(t *testing.T) {
	var r recentHolders
	sl := func(fd int) sockdiag.Slot { return sockdiag.Slot{PID: 100, FD: fd} }
	for fd := 3; fd <= 6; fd++ {
		r.put(1000, sl(fd), true) // four connections open: 6 5 4 3
	}
	r.put(1000, sl(4), false) // 4 ended
	r.put(1000, sl(6), false) // then 6
	r.put(1000, sl(7), true)  // a new one opened
	if got, want := fmt.Sprint(r.get(1000)), fmt.Sprint([]sockdiag.Slot{sl(4), sl(6), sl(7), sl(5), sl(3)}); got != want {
		t.Errorf("order %s, want %s", got, want)
	}
	r.put(1000, sl(4), true) // 4 reused by a new connection
	if got, want := fmt.Sprint(r.get(1000)), fmt.Sprint([]sockdiag.Slot{sl(6), sl(4), sl(7), sl(5), sl(3)}); got != want {
		t.Errorf("after reuse: %s, want %s", got, want)
	}
	if len(r.get(1001)) != 0 {
		t.Error("another user's slots")
	}
	for fd := 10; fd < 10+2*recentPerUID; fd++ {
		r.put(1000, sl(fd), fd%2 == 0)
	}
	l := r.get(1000)
	if len(l) != recentPerUID {
		t.Fatalf("%d slots kept, want %d", len(l), recentPerUID)
	}
	for i, e := range l[:recentPerUID/2] {
		if e.FD%2 == 0 || i > 0 && e.FD < l[i-1].FD {
			t.Errorf("slots %v: want the ended ones (odd) first, the lowest first", l)
			break
		}
	}
	// Two processes: the one whose connection ended last first, each by
	// descriptor.
	var r2 recentHolders
	p := func(pid, fd int) sockdiag.Slot { return sockdiag.Slot{PID: pid, FD: fd} }
	for _, e := range []sockdiag.Slot{p(1, 5), p(2, 9), p(1, 3), p(2, 7), p(1, 8)} {
		r2.put(1000, e, false)
	}
	r2.put(1000, p(2, 4), true)
	if got, want := fmt.Sprint(r2.get(1000)), fmt.Sprint([]sockdiag.Slot{p(1, 3), p(1, 5), p(1, 8), p(2, 7), p(2, 9), p(2, 4)}); got != want {
		t.Errorf("two processes: %s, want %s", got, want)
	}
}
