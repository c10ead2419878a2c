package waitfor

import (
	"fmt"
	"testing"
	"time"
)

type fakeT struct{ failed string }

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestPoll(t *testing.T) {
	n := 0
	if !Poll(10*time.Second, func() bool { n++; return n == 5 }) || n != 5 {
		t.Errorf("Poll stopped after %d checks", n)
	}
	start := time.Now()
	if Poll(20*time.Millisecond, func() bool { return false }) {
		t.Error("Poll of a condition that never holds returned true")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Error("Poll gave up before its limit")
	}
}

func TestTrue(t *testing.T) {
	var f fakeT
	True(&f, "nothing", 10*time.Millisecond, func() bool { return false }, func() string { return "log tail" })
	if want := "timed out after 10ms waiting for nothing\nlog tail"; f.failed != want {
		t.Errorf("failure %q, want %q", f.failed, want)
	}
	f = fakeT{}
	True(&f, "something", time.Second, func() bool { return true })
	if f.failed != "" {
		t.Errorf("failed: %s", f.failed)
	}
}
