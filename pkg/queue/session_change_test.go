package queue

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mailshim/mailshim/pkg/config"
)

// lineUpstreams are scripted upstreams over net.Pipe, one per address
// the session dials (tls = "none" on the loopback): each greets, offers
// PIPELINING, accepts every transaction and calls quit, if set, when QUIT
// arrives, before it answers it.
type lineUpstreams struct {
	mu   sync.Mutex
	got  map[string]int // messages taken, by address
	quit func(addr string)
}

func (u *lineUpstreams) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, srv := net.Pipe()
	go func() {
		defer srv.Close()
		r := bufio.NewReader(srv)
		fmt.Fprintf(srv, "220 fake ESMTP\r\n")
		inData := false
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimRight(l, "\r\n")
			if inData {
				if l == "." {
					inData = false
					u.mu.Lock()
					u.got[addr]++
					u.mu.Unlock()
					fmt.Fprintf(srv, "250 2.0.0 Ok: queued\r\n")
				}
				continue
			}
			switch strings.ToUpper(strings.Fields(l + " x")[0]) {
			case "EHLO":
				fmt.Fprintf(srv, "250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
			case "DATA":
				inData = true
				fmt.Fprintf(srv, "354 go ahead\r\n")
			case "QUIT":
				if u.quit != nil {
					u.quit(addr)
				}
				fmt.Fprintf(srv, "221 2.0.0 Bye\r\n")
				return
			default:
				fmt.Fprintf(srv, "250 2.0.0 Ok\r\n")
			}
		}
	}()
	return c, nil
}

// The outcome of a message, held while the next message's replies are
// awaited, is applied before the worker leaves its session for another
// upstream: closing the session waits for the upstream's answer to QUIT
// (up to 2 s), and a message the upstream took must not wait on that
// with its record unwritten (a crash then would send it again).
func TestOutcomeAppliedBeforeSessionChange(t *testing.T) {
	u := &lineUpstreams{got: map[string]int{}}
	opts := realOpts()
	opts.DialContext = u.dial
	ups := []config.Upstream{
		{Name: "one", Host: "127.0.0.1", Port: 2525, TLS: "none"},
		{Name: "two", RoutedOnly: true, Host: "127.0.0.1", Port: 2526, TLS: "none"},
	}
	routes := []config.Route{{SenderDomains: []string{"two.example.org"}, Upstream: []string{"two"}}}
	e := newEnv(t, Settings{Concurrency: 1, Upstreams: NewUpstreams(ups, opts, nil).WithRoutes(routes)})
	first := e.enqueue(t, 1001, "x@one.example.org", "r@example.net")
	second := e.enqueue(t, 1001, "y@two.example.org", "r@example.net")
	var mu sync.Mutex
	var stillQueued []string
	u.quit = func(addr string) {
		if addr != "127.0.0.1:2525" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if e.sp.HasMessage(first) {
			stillQueued = append(stillQueued, first)
		}
	}
	e.run()
	u.mu.Lock()
	got := fmt.Sprint(u.got)
	u.mu.Unlock()
	if got != "map[127.0.0.1:2525:1 127.0.0.1:2526:1]" {
		t.Fatalf("upstreams took %s; log:\n%s", got, e.log)
	}
	for _, id := range []string{first, second} {
		if e.sp.HasMessage(id) {
			t.Errorf("%s still queued", id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(stillQueued) > 0 {
		t.Fatalf("QUIT went to the first upstream while the message it had taken was still queued (its outcome held):\n%s", e.log)
	}
}
