package robust

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/spool"
)

// rawServer is a scripted TCP peer for faults go-smtp's server cannot
// produce: it runs serve on every connection and keeps what it received.
type rawServer struct {
	ln    net.Listener
	conns atomic.Int64
	mu    sync.Mutex
	got   strings.Builder
}

func startRaw(t *testing.T, serve func(c net.Conn, r *bufio.Reader)) *rawServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				serve(c, bufio.NewReader(teeReader{c, s}))
			}()
		}
	}()
	return s
}

type teeReader struct {
	c net.Conn
	s *rawServer
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.c.Read(p)
	t.s.mu.Lock()
	if t.s.got.Len() < 1<<20 {
		t.s.got.Write(p[:n])
	}
	t.s.mu.Unlock()
	return n, err
}

func (s *rawServer) port() int          { return s.ln.Addr().(*net.TCPAddr).Port }
func (s *rawServer) connections() int64 { return s.conns.Load() }
func (s *rawServer) received() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

// fault describes one broken upstream.
type fault struct {
	name string
	// start returns the [[upstream]] TOML of the broken upstream, a
	// counter of connection attempts it saw (nil: cannot count, e.g. a
	// refused port), and what it received (for the credential check).
	start func(t *testing.T, e *env) (conf string, conns func() int64, received func() string)
	// logRe must match relayd's log: it says what is wrong.
	logRe string
	// permanent: the messages are refused for good (5xx), not delivered
	// after the fault is repaired.
	permanent bool
}

func faults() []fault {
	tlsFault := func(opt upstream.Options) func(t *testing.T, e *env) (string, func() int64, func() string) {
		return func(t *testing.T, e *env) (string, func() int64, func() string) {
			opt.Username, opt.Password, opt.Dir = e.up.Username, e.up.Password, t.TempDir()
			s, err := upstream.Start(opt)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			tls := "starttls"
			return e.upstreamTOML(s.Port, tls, s.CAFile, e.up.Username, e.up.Password), s.Sessions,
				func() string {
					return strings.Join(s.OfferedPasswords(), "\n") + fmt.Sprintf("\nclear-auth=%d", s.ClearAuth())
				}
		}
	}
	raw := func(serve func(c net.Conn, r *bufio.Reader)) func(t *testing.T, e *env) (string, func() int64, func() string) {
		return func(t *testing.T, e *env) (string, func() int64, func() string) {
			s := startRaw(t, serve)
			return e.upstreamTOML(s.port(), "starttls", e.up.CAFile, e.up.Username, e.up.Password), s.connections, s.received
		}
	}
	return []fault{
		{name: "refuses-connections", logRe: `(?i)refused`,
			start: func(t *testing.T, e *env) (string, func() int64, func() string) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				port := ln.Addr().(*net.TCPAddr).Port
				ln.Close()
				return e.upstreamTOML(port, "starttls", e.up.CAFile, e.up.Username, e.up.Password), nil, func() string { return "" }
			}},
		{name: "421-on-connect", logRe: `(?i)421`, start: raw(func(c net.Conn, r *bufio.Reader) {
			c.Write([]byte("421 4.3.2 Service shutting down, try later\r\n"))
		})},
		{name: "slowloris-greeting", logRe: `(?i)timeout|timed out|deadline`, start: raw(func(c net.Conn, r *bufio.Reader) {
			c.Write([]byte("220"))
			for i := 0; i < 600; i++ { // one byte every 100 ms for up to a minute
				if _, err := c.Write([]byte("-")); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond) // the fault itself: a stalled peer
			}
		})},
		{name: "1MB-reply-line", logRe: `(?i)too long|line`, start: raw(func(c net.Conn, r *bufio.Reader) {
			c.Write([]byte("220 " + strings.Repeat("x", 1<<20) + "\r\n"))
			r.ReadString('\n')
			c.Write([]byte("250-" + strings.Repeat("y", 1<<20) + "\r\n250 STARTTLS\r\n"))
			r.ReadString('\n')
		})},
		{name: "reset-mid-DATA", logRe: `(?i)reset|closed the connection|broken pipe|eof`, start: tlsFault(upstream.Options{ResetInData: true})},
		{name: "no-STARTTLS-offered", logRe: `STARTTLS`, start: tlsFault(upstream.Options{NoTLS: true})},
		{name: "expired-certificate", logRe: `(?i)expired|certificate`, start: tlsFault(upstream.Options{Cert: upstream.CertExpired})},
		{name: "self-signed-certificate", logRe: `(?i)certificate`, start: tlsFault(upstream.Options{Cert: upstream.CertSelfSigned})},
		{name: "wrong-host-certificate", logRe: `(?i)not valid for`, start: tlsFault(upstream.Options{Cert: upstream.CertWrongHost})},
		{name: "5xx-on-every-RCPT", logRe: `550`, permanent: true, start: tlsFault(upstream.Options{RcptErr: func(string) error {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
		}})},
	}
}

// TestUpstreamFaults points relayd at each broken upstream in turn with a
// few queued messages: relayd keeps running, retries without spinning (its
// CPU time while it waits is small next to the wall time), never offers the
// password where it must not, says in its log what is wrong, and once the
// upstream is repaired delivers everything (nothing lost, nothing extra).
func TestUpstreamFaults(t *testing.T) {
	for _, f := range faults() {
		t.Run(f.name, func(t *testing.T) {
			const n = 3
			e := newEnv(t, upstream.Options{})
			good := e.upConf
			conf, conns, received := f.start(t, e)
			e.upConf = conf
			e.rewriteConfig()
			if err := driver.FillMaildrop(e.site.Maildrop, n, 2<<10, 0); err != nil {
				t.Fatal(err)
			}
			e.startRelayd()
			logRe := regexp.MustCompile(f.logRe)
			// relayd has met the fault at least twice (so it retried),
			// or, where attempts cannot be counted, logged it.
			// relayd has met the fault, given up on it with a logged
			// explanation, and tried again.
			e.waitFor("relayd to meet the fault, log it and retry", 90*time.Second, func() bool {
				if conns != nil && f.name != "refuses-connections" && conns() < 2 {
					return false
				}
				return len(logRe.FindAllString(failureLines(e.log()), -1)) >= 2
			})
			// CPU while it waits: a window of at least two seconds.
			c0, w0 := e.cpuTime(), time.Now()
			e.waitFor("a two-second window", 10*time.Second, func() bool { return time.Since(w0) >= 2*time.Second })
			used, wall := e.cpuTime()-c0, time.Since(w0)
			e.relaydAlive()
			if used > wall/4 {
				t.Errorf("relayd used %v of CPU in %v of waiting: it loops hot", used, wall)
			}
			log := e.log()
			if os.Getenv("MAILSHIM_ROBUST_DEBUG") != "" {
				t.Logf("relayd log:\n%s", log)
			}
			if !logRe.MatchString(failureLines(log)) {
				t.Errorf("relayd's log does not say what is wrong (want %s):\n%s", f.logRe, lastLines(log, 10))
			}
			if leaked(log, e.up.Username, e.up.Password) {
				t.Errorf("relayd's log contains the upstream password")
			}
			if rcv := received(); strings.Contains(rcv, e.up.Password) || strings.Contains(rcv, "clear-auth=1") ||
				strings.Contains(rcv, base64.StdEncoding.EncodeToString([]byte("\x00"+e.up.Username+"\x00"+e.up.Password))) {
				if f.name != "5xx-on-every-RCPT" && f.name != "reset-mid-DATA" {
					t.Errorf("the broken upstream was offered the password")
				}
			}
			// Repair: relayd restarted on the good upstream delivers all.
			if _, err := e.r.Stop(30 * time.Second); err != nil {
				t.Errorf("SIGTERM while the upstream is broken: %v", err)
			}
			e.upConf = good
			e.rewriteConfig()
			e.startRelayd()
			held := ""
			if f.permanent {
				e.waitFor("the refused messages to leave the queue", 60*time.Second, func() bool {
					c, err := spool.Counts(e.site.Spool)
					return err == nil && c[spool.Deferred] == 0 && c[spool.Active] == 0 && driver.CountFiles(e.site.Maildrop) == 0
				})
				if _, _, unknown := e.up.Check(n); unknown != 0 {
					t.Errorf("%d unexpected deliveries", unknown)
				}
				held = "5xx: messages failed for good (not retried), no hot loop"
			} else {
				e.waitFor("every message after the repair", 60*time.Second, func() bool { m, _, _ := e.up.Check(n); return m == 0 })
				e.waitFor("an empty spool", 30*time.Second, e.spoolEmpty)
				m, d, u := e.up.Check(n)
				if m != 0 || u != 0 {
					t.Errorf("%d lost, %d unknown", m, u)
				}
				held = fmt.Sprintf("all %d delivered after repair, %d duplicates", n, d)
			}
			attempts := "?"
			if conns != nil {
				attempts = fmt.Sprint(conns())
			}
			record(t, fmt.Sprintf("%d messages queued; %s connection attempts; CPU %v in %v of waiting", n, attempts, used, wall.Round(time.Millisecond)),
				fmt.Sprintf("relayd alive; log says %s; no password leaked; %s", firstCause(log), held))
		})
	}
}

// failureLines keeps the log lines that report a failed attempt (and
// none of the paths or start-up lines a pattern could match by accident).
func failureLines(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "event=delivery") && !strings.Contains(l, "status=sent") ||
			strings.Contains(l, "event=deferred") || strings.Contains(l, "event=error") ||
			strings.Contains(l, "event=warning") || strings.Contains(l, "event=bounce") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

var fieldRe = map[string]*regexp.Regexp{}

func field(l, k string) (string, bool) {
	re, ok := fieldRe[k]
	if !ok {
		re = regexp.MustCompile(k + `="((?:[^"\\]|\\.)*)"`)
		fieldRe[k] = re
	}
	m := re.FindStringSubmatch(l)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// firstCause returns relayd's first explanation of a failed attempt: the
// cause= field (its plain-words diagnosis) and the upstream's reply.
func firstCause(log string) string {
	for _, l := range strings.Split(failureLines(log), "\n") {
		c, ok := field(l, "cause")
		if !ok {
			c, ok = field(l, "reason")
		}
		r, rok := field(l, "reply")
		if !ok && !rok {
			continue
		}
		out := c
		if rok {
			if len(r) > 120 {
				r = r[:120] + "…"
			}
			if out != "" {
				out += " — "
			}
			out += r
		}
		return "\"" + out + "\""
	}
	return "(nothing about it)"
}

func leaked(s, user, pass string) bool {
	return strings.Contains(s, pass) ||
		strings.Contains(s, base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))) ||
		strings.Contains(s, base64.StdEncoding.EncodeToString([]byte(pass)))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
