package robust

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/upstream"
)

// The delivery engine under upstream trouble: an outage under steady
// traffic, a flapping upstream, an upstream that closes idle connections.
// The upstream sits behind a TCP proxy the test controls (down: the port
// refuses connections and open ones are cut; idle: connections quiet for
// a while are closed), callers run the real sendmail at a steady pace, and
// each message's delivery lag (sendmail's exit to the upstream's
// acceptance, polled every 20 ms) is measured. relayd runs with the default
// retry schedule (1m, 5m, ...): how soon mail moves after trouble is the
// circuit breaker's doing, not the retry schedule's.

// engineQueue is the default retry schedule with short timeouts.
const engineQueue = `
[queue]
retry = ["1m", "5m", "15m", "1h", "4h"]
scan_interval = "1s"
connect_timeout = "2s"
command_timeout = "5s"
data_timeout = "10s"
`

// proxy forwards TCP connections to an upstream and can refuse them, cut
// them, or close idle ones.
type proxy struct {
	target string
	addr   string
	port   int
	idle   time.Duration // close a connection quiet for this long (0: never)

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]bool
	closed   atomic.Int64 // connections closed for idleness
	accepted atomic.Int64 // connections relayd opened
}

func startProxy(t *testing.T, target string, idle time.Duration) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, idle: idle, conns: map[net.Conn]bool{}}
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			go p.handle(c)
		}
	}()
}

// track adds (or removes) a connection to cut at down.
func (p *proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

func (p *proxy) handle(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.track(c, true)
	p.track(u, true)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			c.Close()
			u.Close()
			p.track(c, false)
			p.track(u, false)
		})
	}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		stop()
	}
	go pipe(u, c)
	go pipe(c, u)
	if p.idle > 0 {
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					if time.Since(time.Unix(0, last.Load())) > p.idle {
						p.closed.Add(1)
						stop()
						return
					}
				}
			}
		}()
	}
}

// down stops listening and cuts every open connection.
func (p *proxy) down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	var conns []net.Conn
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

// up listens again on the same port.
func (p *proxy) up(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// lagMeter records when each message was handed to sendmail and when the
// upstream accepted it.
type lagMeter struct {
	up   *upstream.Server
	mu   sync.Mutex
	sent map[int]time.Time
	got  map[int]time.Time
	stop chan struct{}
	done chan struct{}
}

func newLagMeter(up *upstream.Server) *lagMeter {
	m := &lagMeter{up: up, sent: map[int]time.Time{}, got: map[int]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			now := time.Now()
			seqs := up.Seqs()
			m.mu.Lock()
			for s := range seqs {
				if _, ok := m.got[s]; !ok {
					m.got[s] = now
				}
			}
			m.mu.Unlock()
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *lagMeter) close() { close(m.stop); <-m.done }

func (m *lagMeter) sentAt(seq int, at time.Time) {
	m.mu.Lock()
	m.sent[seq] = at
	m.mu.Unlock()
}

// lags returns the delivery lag of the messages sent in [from, to) (all
// when both are zero), sorted, and how many of them are not delivered.
func (m *lagMeter) lags(from, to time.Time) (lags []time.Duration, missing int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for seq, at := range m.sent {
		if (!from.IsZero() && at.Before(from)) || (!to.IsZero() && !at.Before(to)) {
			continue
		}
		got, ok := m.got[seq]
		if !ok {
			missing++
			continue
		}
		lags = append(lags, max(got.Sub(at), 0))
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	return lags, missing
}

func lagSummary(l []time.Duration) string {
	if len(l) == 0 {
		return "none"
	}
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("median %s, p95 %s, max %s (n=%d)", r(l[len(l)/2]), r(l[len(l)*95/100]), r(l[len(l)-1]), len(l))
}

// engineEnv is an env whose relayd reaches the upstream through a proxy.
func engineEnv(t *testing.T, idle time.Duration) (*env, *proxy) {
	e := newEnv(t, upstream.Options{})
	p := startProxy(t, e.up.Addr, idle)
	e.upConf = e.upstreamTOML(p.port, "starttls", e.up.CAFile, e.up.Username, e.up.Password)
	e.queueConf = engineQueue
	e.rewriteConfig()
	e.probe()
	e.startRelayd()
	return e, p
}

// traffic runs sendmail every tick until stop is closed, recording each
// message with m; it returns the number of messages (sequence numbers 0
// to n-1) and the failures (there should be none).
func traffic(e *env, m *lagMeter, tick time.Duration, stop <-chan struct{}) (n int, failed []string) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for seq := 0; ; seq++ {
		code, stderr := e.sendmail(msg(seq, 1<<10))
		if code != 0 {
			failed = append(failed, fmt.Sprintf("seq %d: exit %d %s", seq, code, strings.TrimSpace(stderr)))
		} else {
			m.sentAt(seq, time.Now())
		}
		select {
		case <-stop:
			return seq + 1, failed
		case <-t.C:
		}
	}
}

// drained waits until every message arrived and the spool is empty, and
// checks losses, duplicates and unknown messages.
func (e *env) drained(n int, limit time.Duration) (dups int) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("all %d messages delivered", n), limit, func() bool { missing, _, _ := e.up.Check(n); return missing == 0 })
	e.waitFor("an empty spool", 30*time.Second, e.spoolEmpty)
	missing, dups, unknown := e.up.Check(n)
	if missing != 0 || unknown != 0 {
		e.t.Errorf("%d lost, %d unknown", missing, unknown)
	}
	return dups
}

// An outage under steady traffic: a message every 0.6 s, the upstream
// unreachable for 3 s, traffic going on for 12 s after (stress: 60 s).
func TestEngineOutageSteadyTraffic(t *testing.T) {
	e, p := engineEnv(t, 0)
	m := newLagMeter(e.up)
	defer m.close()
	outage := 3 * time.Second
	afterwards := time.Duration(size(12, 60)) * time.Second
	stop := make(chan struct{})
	var wentDown, back time.Time
	go func() {
		time.Sleep(3 * time.Second)
		wentDown = time.Now()
		p.down()
		time.Sleep(outage)
		p.up(t)
		back = time.Now()
		time.Sleep(afterwards)
		close(stop)
	}()
	n, failed := traffic(e, m, 600*time.Millisecond, stop)
	if len(failed) > 0 {
		t.Errorf("sendmail failed: %v", failed)
	}
	dups := e.drained(n, 60*time.Second)
	before, _ := m.lags(time.Time{}, wentDown)
	during, _ := m.lags(wentDown, back)
	after, _ := m.lags(back, time.Time{})
	if len(after) > 0 && after[len(after)-1] > 2*time.Second {
		t.Errorf("a message sent after the upstream came back waited %v", after[len(after)-1])
	}
	deferrals := strings.Count(e.log(), "event=deferred ")
	record(t, fmt.Sprintf("%d messages through sendmail, one every 0.6 s; upstream unreachable for %v (refused, sessions cut) after 3 s, traffic for %v after; default retry schedule", n, outage, afterwards),
		fmt.Sprintf("0 lost, %d duplicates, %d deferral lines; lag before the outage %s; sent during it %s; sent after it %s", dups, deferrals,
			lagSummary(before), lagSummary(during), lagSummary(after)))
}

// A flapping upstream: up 2 s, down 2 s, for a minute (quick: 20 s),
// with a message every 0.3 s.
func TestEngineFlappingUpstream(t *testing.T) {
	e, p := engineEnv(t, 0)
	m := newLagMeter(e.up)
	defer m.close()
	span := time.Duration(size(20, 60)) * time.Second
	stop := make(chan struct{})
	flaps := 0
	go func() {
		end := time.Now().Add(span)
		for time.Now().Before(end) {
			time.Sleep(2 * time.Second)
			p.down()
			flaps++
			time.Sleep(2 * time.Second)
			p.up(t)
		}
		time.Sleep(2 * time.Second)
		close(stop)
	}()
	n, failed := traffic(e, m, 300*time.Millisecond, stop)
	if len(failed) > 0 {
		t.Errorf("sendmail failed: %v", failed)
	}
	dups := e.drained(n, 90*time.Second)
	lags, _ := m.lags(time.Time{}, time.Time{})
	if lags[len(lags)-1] > 20*time.Second {
		t.Errorf("a message waited %v: longer than the breaker's backoff explains", lags[len(lags)-1])
	}
	record(t, fmt.Sprintf("%d messages through sendmail, one every 0.3 s, for %v; upstream up 2 s / down 2 s (%d outages); default retry schedule", n, span, flaps),
		fmt.Sprintf("0 lost, %d duplicates; delivery lag %s; %d upstream-down lines", dups, lagSummary(lags), strings.Count(e.log(), "event=upstream-down ")))
}

// An upstream that closes connections idle for 1 s, with messages 0.5 s
// to 2.5 s apart: relayd's kept sessions are often dead when it reuses
// them, and it must notice and redial at once, never defer.
func TestEngineIdleClose(t *testing.T) {
	e, p := engineEnv(t, time.Second)
	m := newLagMeter(e.up)
	defer m.close()
	gaps := []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 2500 * time.Millisecond, 1200 * time.Millisecond}
	n := size(16, 40)
	for i := 0; i < n; i++ {
		if code, stderr := e.sendmail(msg(i, 1<<10)); code != 0 {
			t.Fatalf("sendmail: exit %d %s", code, stderr)
		}
		m.sentAt(i, time.Now())
		time.Sleep(gaps[i%len(gaps)])
	}
	dups := e.drained(n, 60*time.Second)
	lags, _ := m.lags(time.Time{}, time.Time{})
	log := e.log()
	deferrals := strings.Count(log, "event=deferred ")
	if deferrals > 0 {
		t.Errorf("%d deferrals: a session closed while idle cost a retry", deferrals)
	}
	record(t, fmt.Sprintf("%d messages through sendmail 0.5 to 2.5 s apart; the upstream closes connections idle for 1 s (%d closed)", n, p.closed.Load()),
		fmt.Sprintf("0 lost, %d duplicates, %d deferrals; delivery lag %s; %d connections opened by relayd", dups, deferrals, lagSummary(lags), p.accepted.Load()))
}
