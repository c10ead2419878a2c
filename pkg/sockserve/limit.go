package sockserve

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// ErrBusy is returned by Limiter.Acquire when the peer may not be served
// now: too many connections in progress, for everyone or for its UID.
var ErrBusy = errors.New("too many connections in progress; try again later")

// Limiter caps the connections a socket serves at once, globally and per
// peer UID, so that one local user cannot take every file descriptor or
// all the memory of relayd. A peer over a cap waits for a free slot (up to
// Wait), holding only its socket; the number of waiting peers is capped
// too, and a peer beyond that is refused at once.
//
// Caps that only count would let a few users who flood lock everybody
// else out (eight UIDs at their per-UID cap fill a global cap of 64).
// So:
//   - Floor: a UID holding fewer than Floor slots is served even when
//     Global slots are taken, up to Ceiling in all: every user keeps
//     room however many others flood, and only as many UIDs as
//     Ceiling/Floor could fill it.
//   - Privileged peers (root and the daemon user) have Reserved slots
//     that no other peer may take, and no per-UID cap: the administrator
//     gets in during an incident.
type Limiter struct {
	Global, PerUID               int           // served at once
	MaxWaiting, MaxWaitingPerUID int           // waiting for a slot
	Wait                         time.Duration // longest wait for a slot
	Floor                        int           // slots per UID served beyond Global
	Ceiling                      int           // all slots but Reserved (0: Global)
	Reserved                     int           // slots only Privileged peers may take
	Privileged                   func(uid int) bool

	mu         sync.Mutex
	active     int
	privActive int
	perUID     map[int]int
	waiting    int
	waitUID    map[int]int
	freed      chan struct{} // closed (and replaced) by every Release
}

// Admin reports whether uid is root or the user relayd runs as: the peers
// that every socket serves beyond the others' limits (Limiter's reserve,
// the submission socket's header budget) and that may use every verb of
// the control socket.
func Admin(uid int) bool { return uid == 0 || uid == os.Getuid() }

// SubmitLimiter returns the limits of the submission socket: 64 messages
// at once, 8 per UID; up to 256 more waiting (32 per UID) for 30 s; 2
// per UID beyond the 64 (up to 512), and 16 for root and the daemon user
// alone.
func SubmitLimiter() *Limiter {
	return &Limiter{Global: 64, PerUID: 8, MaxWaiting: 256, MaxWaitingPerUID: 32, Wait: 30 * time.Second,
		Floor: 2, Ceiling: 512, Reserved: 16, Privileged: Admin}
}

// ControlLimiter returns the limits of the control socket: 16 requests at
// once, 4 per UID; up to 64 more waiting (8 per UID) for 10 s; 2 per UID
// beyond the 16 (up to 256), and 8 for root and the daemon user alone.
func ControlLimiter() *Limiter {
	return &Limiter{Global: 16, PerUID: 4, MaxWaiting: 64, MaxWaitingPerUID: 8, Wait: 10 * time.Second,
		Floor: 2, Ceiling: 256, Reserved: 8, Privileged: Admin}
}

// ListenLimiter returns the limits of the loopback SMTP listener: global
// sessions at once, perUID per UID, four times as many waiting up to 30 s;
// 2 per UID beyond global (up to four times global, at least global+64),
// and 16 for root and the daemon user alone.
func ListenLimiter(global, perUID int) *Limiter {
	return &Limiter{Global: global, PerUID: perUID, MaxWaiting: 4 * global, MaxWaitingPerUID: 4 * perUID, Wait: 30 * time.Second,
		Floor: 2, Ceiling: max(4*global, global+64), Reserved: 16, Privileged: Admin}
}

func (l *Limiter) privileged(uid int) bool { return l.Privileged != nil && l.Privileged(uid) }

func (l *Limiter) fits(uid int, priv bool) bool {
	ceiling := max(l.Ceiling, l.Global)
	if priv {
		return l.privActive < l.Reserved || ceiling <= 0 || l.active-min(l.privActive, l.Reserved) < ceiling
	}
	mine := l.perUID[uid]
	if l.PerUID > 0 && mine >= l.PerUID {
		return false
	}
	// Slots held by privileged peers within their reserve do not count
	// against the others' caps.
	others := l.active - min(l.privActive, l.Reserved)
	if l.Global <= 0 || others < l.Global {
		return true
	}
	return mine < l.Floor && others < ceiling
}

// Acquire takes a slot for a connection of uid, waiting for one when the
// caps are reached. It returns nil when the slot is held (give it back
// with Release), ErrBusy when none came free in time or too many peers are
// waiting already, or ctx's error.
func (l *Limiter) Acquire(ctx context.Context, uid int) error {
	var deadline <-chan time.Time
	priv := l.privileged(uid)
	l.mu.Lock()
	for {
		if l.fits(uid, priv) {
			if l.perUID == nil {
				l.perUID = map[int]int{}
			}
			l.active++
			l.perUID[uid]++
			if priv {
				l.privActive++
			}
			l.mu.Unlock()
			return nil
		}
		if l.Wait <= 0 || !priv && (l.waiting >= l.MaxWaiting || l.waitUID[uid] >= l.MaxWaitingPerUID) {
			l.mu.Unlock()
			return ErrBusy
		}
		if deadline == nil {
			t := time.NewTimer(l.Wait)
			defer t.Stop()
			deadline = t.C
		}
		if l.freed == nil {
			l.freed = make(chan struct{})
		}
		if l.waitUID == nil {
			l.waitUID = map[int]int{}
		}
		freed := l.freed
		l.waiting++
		l.waitUID[uid]++
		l.mu.Unlock()
		var err error
		select {
		case <-freed:
		case <-deadline:
			err = ErrBusy
		case <-ctx.Done():
			err = ctx.Err()
		}
		l.mu.Lock()
		l.waiting--
		if l.waitUID[uid]--; l.waitUID[uid] == 0 {
			delete(l.waitUID, uid)
		}
		if err != nil {
			l.mu.Unlock()
			return err
		}
	}
}

// Release gives back a slot taken by Acquire for uid.
func (l *Limiter) Release(uid int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if l.privileged(uid) {
		l.privActive--
	}
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
	if l.freed != nil {
		close(l.freed)
		l.freed = nil
	}
}

// InUse returns the number of slots held and of peers waiting.
func (l *Limiter) InUse() (active, waiting int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active, l.waiting
}

// Accept backoff (as net/http's Server does): 5 ms doubling up to 1 s.
const (
	backoffMin = 5 * time.Millisecond
	backoffMax = time.Second
	// logEvery is how often a repeating accept error is logged.
	logEvery = time.Minute
)

// Acceptor accepts connections on a listener, riding out errors such as
// EMFILE (no free file descriptor) without a hot loop or a flood of log
// lines: after a failure it waits (5 ms doubling up to 1 s, reset by the
// next success) and reports the error through Log at most once a minute,
// with the number of failures since the last report.
type Acceptor struct {
	Ln  net.Listener
	Log func(err error, failures int)
	// Now is the clock for the log rate (time.Now when nil).
	Now func() time.Time

	delay time.Duration
	rate  *RateLog
}

// Accept returns the next connection. It returns an error only when the
// listener is closed (net.ErrClosed) or ctx is done.
func (a *Acceptor) Accept(ctx context.Context) (net.Conn, error) {
	for {
		c, err := a.Ln.Accept()
		if err == nil {
			a.delay = 0
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if a.rate == nil {
			a.rate = &RateLog{Now: a.Now, Log: func(n int, kv ...any) {
				if a.Log != nil {
					a.Log(kv[0].(error), n)
				}
			}}
		}
		a.rate.Note(err)
		a.delay = min(max(2*a.delay, backoffMin), backoffMax)
		t := time.NewTimer(a.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// Serve accepts connections on ln until ctx is done, when it closes ln,
// and runs handle for each on a goroutine of its own; it returns once
// every handle has returned. Accept errors (EMFILE...) are ridden out as
// Acceptor does, and reported through acceptFailed.
func Serve(ctx context.Context, ln *net.UnixListener, acceptFailed func(err error, failures int), handle func(c *net.UnixConn)) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	acc := &Acceptor{Ln: ln, Log: acceptFailed}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := acc.Accept(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			handle(c.(*net.UnixConn)) // ln is a UnixListener
		}()
	}
}
