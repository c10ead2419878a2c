package submit

import "sync"

// Default limits of the submission socket's connections (relayd's
// defaults): at most DefaultGlobal at once, DefaultPerUID of them from
// one user.
const (
	DefaultGlobal = 32
	DefaultPerUID = 8
)

// Limiter caps the submissions served at once, in all and per peer UID,
// so that one local user cannot take every file descriptor or all of
// relayd's memory. Server.Serve acquires it right after SO_PEERCRED,
// before any buffer is allocated. Safe for concurrent use.
type Limiter struct {
	Global int // 0: no cap in all
	PerUID int // 0: no cap per user

	mu  sync.Mutex
	n   int
	per map[uint32]int
}

// NewLimiter returns a Limiter with the given caps (0: none).
func NewLimiter(global, perUID int) *Limiter {
	return &Limiter{Global: global, PerUID: perUID}
}

// Acquire takes a slot for uid and reports whether there was one; every
// successful Acquire needs one Release.
func (l *Limiter) Acquire(uid uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Global > 0 && l.n >= l.Global || l.PerUID > 0 && l.per[uid] >= l.PerUID {
		return false
	}
	if l.per == nil {
		l.per = make(map[uint32]int)
	}
	l.n++
	l.per[uid]++
	return true
}

// Release gives back a slot that Acquire took for uid.
func (l *Limiter) Release(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.per[uid] == 0 {
		return
	}
	l.n--
	if l.per[uid]--; l.per[uid] == 0 {
		delete(l.per, uid)
	}
}

// InUse returns the number of slots taken, in all and for uid.
func (l *Limiter) InUse(uid uint32) (all, user int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.per[uid]
}
