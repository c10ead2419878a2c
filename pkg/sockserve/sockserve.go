// Package sockserve has what relayd's servers on sockets open to every
// local user share (the control socket, the submission socket, the SMTP
// listener):
//
//   - Listen creates a Unix socket; PeerCred reads its peer's credentials
//     as the kernel gives them (SO_PEERCRED);
//   - Limiter caps what one UID holds, with a floor for every UID and a
//     reserve for root and the daemon user (Admin); SubmitLimiter,
//     ControlLimiter and ListenLimiter are each socket's limits;
//   - Acceptor is the accept loop that rides out EMFILE, Serve the loop
//     that hands each connection to its handler and waits for them all;
//   - RateLog logs a repeating event at most once a minute.
//
// It is linked into sendmail (through the control and submission
// clients), so it imports the standard library and x/sys only.
//
// Its Go API is not stable.
package sockserve

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Listen creates a Unix socket at path with the given mode (0666 for the
// control and submission sockets: the peer is checked per connection). A
// stale socket at path is replaced; any other kind of file there is an
// error.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another process is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("socket %s: removing the stale socket: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ln, nil
}

// RateLog reports a repeating event at most once a minute, with the number
// of occurrences since the last report.
type RateLog struct {
	Log func(n int, kv ...any)
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu   sync.Mutex
	n    int
	last time.Time
}

// Note counts one occurrence and logs it (with kv) if a minute has passed
// since the last line.
func (r *RateLog) Note(kv ...any) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	r.mu.Lock()
	r.n++
	t := now()
	if !r.last.IsZero() && t.Sub(r.last) < logEvery {
		r.mu.Unlock()
		return
	}
	n := r.n
	r.n, r.last = 0, t
	r.mu.Unlock()
	r.Log(n, kv...)
}

// PeerCred returns the credentials of conn's peer (SO_PEERCRED): the
// identity the kernel vouches for. Its error says "SO_PEERCRED: ...".
func PeerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		cerr = err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}
