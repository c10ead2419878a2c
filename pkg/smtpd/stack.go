package smtpd

import "sync/atomic"

// growStack makes the calling goroutine's stack at least 32 KiB, at once.
//
// A session's goroutine (go-smtp's, one per connection) starts with a
// small stack, and the end of a message's data is the deepest point of
// its life: the header read, the submission pipeline, the queue's store
// and the log line, under go-smtp's dialogue. Reached with a small stack,
// it made the runtime grow the stack twice there, each time copying it
// and adjusting every one of its frames: about 3% of relayd's CPU in the
// loopback benchmark. Called at the top of the DATA command, a few frames
// deep, the stack grows once, with little to adjust. A goroutine whose
// stack is that large already pays only the call.
//
//go:noinline
func growStack() {
	var buf [stackReserve]byte
	// The array must be kept: what the compiler can prove unused it
	// leaves out of the frame, and the frame is what makes the stack grow.
	// (An atomic store: every session's goroutine makes it, at once.)
	stackSink.Store(uint32(buf[stackIndex%stackReserve]))
}

// stackReserve is the frame that makes a stack of 16 KiB or less grow to
// 32 KiB (stacks grow by doubling, to fit the frame that overflows).
const stackReserve = 20 << 10

var (
	stackSink  atomic.Uint32
	stackIndex int // changed by nobody: only hides the index from the compiler
)
