package submitsock

import (
	"errors"
	"io"
	"sync"
)

// HeaderBudget bounds the memory the submission socket's spool headers
// take at once. A header may be up to MaxSpoolHeader (4 MiB) long and is
// held whole (decoded, about 1.5 times its size) until its message is
// stored; without a budget, users holding many connections that each send
// the largest header and stall could make relayd hold gigabytes. The first
// FreeHeader bytes of every header are free (ordinary headers are a few
// hundred bytes; the connection count is capped anyway); every byte beyond
// is taken from the budget — Total in all, PerUID for one UID — and given
// back when the connection ends. A header that does not fit is refused as
// "busy" (the client may retry), never cut.
type HeaderBudget struct {
	Total, PerUID int64

	mu     sync.Mutex
	used   int64
	perUID map[uint32]int64
}

// FreeHeader is the part of each header not charged to the budget.
const FreeHeader = 64 << 10

// ErrHeaderBudget is the error of a header that does not fit the budget.
var ErrHeaderBudget = errors.New("too many large submissions in progress; try again later")

// DefaultHeaderBudget returns relayd's budget: 64 MiB in all, 16 MiB per
// UID (four of the largest headers).
func DefaultHeaderBudget() *HeaderBudget {
	return &HeaderBudget{Total: 64 << 20, PerUID: 16 << 20}
}

func (b *HeaderBudget) take(uid uint32, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.Total || b.perUID[uid]+n > b.PerUID {
		return false
	}
	if b.perUID == nil {
		b.perUID = map[uint32]int64{}
	}
	b.used += n
	b.perUID[uid] += n
	return true
}

func (b *HeaderBudget) give(uid uint32, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.perUID[uid] -= n; b.perUID[uid] <= 0 {
		delete(b.perUID, uid)
	}
}

// Used returns the bytes taken from the budget.
func (b *HeaderBudget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// budgetReader charges what is read through it, beyond FreeHeader, to a
// budget while on is set (the header phase).
type budgetReader struct {
	r    io.Reader
	b    *HeaderBudget // nil: no budget
	uid  uint32
	on   bool
	read int64
	held int64
}

func (r *budgetReader) Read(p []byte) (int, error) {
	if !r.on || r.b == nil {
		return r.r.Read(p)
	}
	n, err := r.r.Read(p)
	r.read += int64(n)
	if over := r.read - FreeHeader; over > r.held {
		if !r.b.take(r.uid, over-r.held) {
			return 0, ErrHeaderBudget
		}
		r.held = over
	}
	return n, err
}

// release gives back what was taken.
func (r *budgetReader) release() {
	if r.b != nil {
		r.b.give(r.uid, r.held)
	}
	r.held = 0
}
