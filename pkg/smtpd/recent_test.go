package smtpd

import (
	"fmt"
	"testing"

	"github.com/mailshim/mailshim/pkg/sockdiag"
)

// The slots of ended connections come first, the most recently ended
// first, then those of open connections, the newest first; a slot is
// listed once; a user keeps at most recentPerUID.
func TestRecentHoldersOrder(t *testing.T) {
	var r recentHolders
	sl := func(fd int) sockdiag.Slot { return sockdiag.Slot{PID: 100, FD: fd} }
	for fd := 3; fd <= 6; fd++ {
		r.put(1000, sl(fd), true) // four connections open: 6 5 4 3
	}
	r.put(1000, sl(4), false) // 4 ended
	r.put(1000, sl(6), false) // then 6
	r.put(1000, sl(7), true)  // a new one opened
	if got, want := fmt.Sprint(r.get(1000)), fmt.Sprint([]sockdiag.Slot{sl(6), sl(4), sl(7), sl(5), sl(3)}); got != want {
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
	if l[0] != sl(10+2*recentPerUID-1) {
		t.Errorf("first slot %v, want the last ended", l[0])
	}
}
