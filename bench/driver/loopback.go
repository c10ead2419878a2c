package driver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// The loopback listener row: loopbackClients parallel clients, each
// sending 2 KB messages the way a PHP script or a cron job does (connect,
// EHLO, MAIL, RCPT, DATA, QUIT: one message per connection, no TLS, no
// AUTH), first to a bare go-smtp server, a process of its own as relayd
// is, that reads the data and discards it (the reference), then to relayd's loopback
// listener, which identifies every connection from the kernel (sock_diag,
// /proc), runs the submission pipeline and fsyncs the message into its
// queue before its 250. Every message relayd accepted must then reach the
// upstream: nothing lost.
const loopbackClients = 8

func loopbackRow(o Options, sz sizes, work string, bins *Binaries, srv *smtptest.Server) (Row, error) {
	n := sz.loopbackN
	name := fmt.Sprintf("loopback SMTP listener, %d parallel clients, %d × 2 KB, one message per connection", loopbackClients, n)
	ref := "bare go-smtp server (discards), same clients"
	if bins.Relayd == "" {
		return notMeasured(name, ref, "≥ 0.5× the reference, nothing lost", "cmd/relayd does not build yet"), nil
	}
	var refRates, rates, cpuUser, cpuSys []float64
	// CPU per message of every process of each run (cpuShare).
	var refClients, refServer, relClients []float64
	var lostNote []string
	for i := 0; i < o.Runs; i++ {
		o.logf("loopback: reference run %d, %d messages", i+1, n)
		r, clients, server, err := bareServerRate(bins.RefSMTP, n)
		if err != nil {
			return Row{}, fmt.Errorf("loopback reference: %w", err)
		}
		refRates = append(refRates, r)
		refClients, refServer = append(refClients, clients), append(refServer, server)
		o.logf("loopback: relayd run %d, %d messages", i+1, n)
		rate, ru, driver, note, err := loopbackOnce(o, filepath.Join(work, fmt.Sprintf("loopback-%d", i)), bins, srv, n)
		if err != nil {
			return Row{}, err
		}
		rates = append(rates, rate)
		relClients = append(relClients, driver)
		if ru != nil {
			cpuUser = append(cpuUser, float64(time.Duration(ru.Utime.Nano()).Microseconds())/float64(n))
			cpuSys = append(cpuSys, float64(time.Duration(ru.Stime.Nano()).Microseconds())/float64(n))
		}
		if note != "" {
			lostNote = append(lostNote, note)
		}
	}
	// The same server in the driver, the clients' own process, once, for
	// the note: what the process boundary costs the reference.
	inDriver, err := inDriverServerRate(n)
	if err != nil {
		return Row{}, fmt.Errorf("loopback reference in the driver: %w", err)
	}
	refS, s := Summarise(refRates), Summarise(rates)
	ratio := s.Median / refS.Median
	row := Row{Name: name, RefFor: ref, Unit: "msg/s", Subj: s, Ref: &refS, Ratio: fmt.Sprintf("%.2f×", ratio),
		Target: "≥ 0.5× the reference, nothing lost"}
	var runs []string
	for i := range rates {
		runs = append(runs, fmt.Sprintf("%.2f", rates[i]/refRates[i]))
	}
	row.Note = "run ratios: " + strings.Join(runs, " ") + fmt.Sprintf("; the bare server inside the driver (the clients' process): %.0f/s", inDriver)
	// The rate swings with the machine's load (the reference's too);
	// relayd's CPU per message, its delivery to the upstream included,
	// is the steadier figure of what relayd costs.
	if len(cpuUser) > 0 {
		u, sy := Summarise(cpuUser).Median, Summarise(cpuSys).Median
		row.Note += fmt.Sprintf("; relayd CPU per message (wait4, delivery included): %.0f µs (user %.0f, sys %.0f)", u+sy, u, sy)
		// The rate ratio follows the ratio of the two runs' CPU per
		// message, every process counted (docs/BENCHMARKS.md, the
		// eighth round): the figure least moved by the host's load.
		rc, rs, dc := Summarise(refClients).Median, Summarise(refServer).Median, Summarise(relClients).Median
		if rc > 0 && rs > 0 && dc > 0 {
			row.Note += fmt.Sprintf("; CPU per message, every process: reference run %.0f µs (clients %.0f, bare server %.0f), relayd's run %.0f µs (clients and upstream %.0f, relayd %.0f), CPU ratio %.2f",
				rc+rs, rc, rs, dc+u+sy, dc, u+sy, (rc+rs)/(dc+u+sy))
		}
	}
	switch {
	case len(lostNote) > 0:
		row.Verdict = "MISSED: " + strings.Join(lostNote, "; ")
	case ratio >= 0.5:
		row.Verdict = fmt.Sprintf("met (%.2f×, every accepted message delivered)", ratio)
	default:
		row.Verdict = fmt.Sprintf("MISSED: %.2f× < 0.5× (nothing lost)", ratio)
	}
	return row, nil
}

// bareServerRate returns the clients' messages/s against a bare go-smtp
// server that discards every message (ServeDiscard), run as a process of
// its own (bin, bench/refsmtp serve) as relayd is one, so that the clients
// reach both across the same process boundary; and the CPU per message,
// in µs, of the clients (the driver, while they send) and of the server
// (its whole life, wait4).
func bareServerRate(bin string, n int) (rate, clients, server float64, err error) {
	cmd := exec.Command(bin, "serve")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	waited := false
	defer func() {
		if !waited {
			stdin.Close()
			cmd.Wait()
		}
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%s serve: no address: %w", bin, err)
	}
	cpu0 := selfCPU()
	rate, err = countedRate(strings.TrimSpace(addr), n)
	clients = perMessage(selfCPU()-cpu0, n)
	// Its end of input stops the server.
	stdin.Close()
	waited = true
	if cmd.Wait(); cmd.ProcessState != nil {
		ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		server = perMessage(cpu(ru), n)
	}
	return rate, clients, server, err
}

// selfCPU is the driver's CPU time so far, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return cpu(&ru)
}

// perMessage is d over n messages, in µs.
func perMessage(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(n)
}

// inDriverServerRate is bareServerRate with the server in the driver, the
// clients' own process, for the row's note.
func inDriverServerRate(n int) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go ServeDiscard(ln)
	defer ln.Close()
	return countedRate(ln.Addr().String(), n)
}

func countedRate(addr string, n int) (float64, error) {
	rate, accepted, err := sendParallel(addr, n)
	if err != nil {
		return 0, err
	}
	if accepted != n {
		return 0, fmt.Errorf("bare server accepted %d of %d", accepted, n)
	}
	return rate, nil
}

// ServeDiscard serves go-smtp on ln with a backend that reads every
// message and discards it: the loopback row's reference server.
func ServeDiscard(ln net.Listener) error {
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	s.Domain = "bare.bench.example"
	s.ReadTimeout, s.WriteTimeout = time.Minute, time.Minute
	return s.Serve(ln)
}

type discardSession struct{}

func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (discardSession) Reset()        {}
func (discardSession) Logout() error { return nil }

// sendParallel sends n messages from loopbackClients goroutines, one
// connection per message, and returns messages/s and how many got 250.
func sendParallel(addr string, n int) (float64, int, error) {
	var next, accepted atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := 0; g < loopbackClients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := sendOne(addr, i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, int(accepted.Load()), err
	}
	return float64(n) / elapsed.Seconds(), int(accepted.Load()), nil
}

func sendOne(addr string, seq int) error {
	conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.bench.example"); err != nil {
		return err
	}
	if err := c.Mail("sender@bench.example", nil); err != nil {
		return err
	}
	if err := c.Rcpt("rcpt@bench.example", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(message(2<<10, seq)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// loopbackOnce starts relayd with its listener on a free loopback port
// (and nothing else: no Unix socket, no STARTTLS), sends n messages to it
// from the parallel clients, then waits until the upstream has every one.
// It returns the submission rate, relayd's resource usage (from start to
// exit: every message accepted and delivered), the driver's CPU per
// message in µs (the clients and the upstream, from the first message
// sent to the last delivered) and, when messages were lost, what.
func loopbackOnce(o Options, dir string, bins *Binaries, srv *smtptest.Server, n int) (float64, *syscall.Rusage, float64, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, nil, 0, "", err
	}
	defer os.RemoveAll(dir)
	conf, err := upstreamTOML(dir, srv.Upstream())
	if err != nil {
		return 0, nil, 0, "", err
	}
	port, err := freePort()
	if err != nil {
		return 0, nil, 0, "", err
	}
	listen := fmt.Sprintf("\n[queue]\nconcurrency = 4\n\n[listen]\nenabled = true\naddresses = [\"127.0.0.1\"]\nports = [%d]\nsocket = \"\"\ncert_file = \"\"\nkey_file = \"\"\nmax_connections_per_uid = %d\n",
		port, 2*loopbackClients)
	site, err := NewSite(dir, &Binaries{}, conf+listen)
	if err != nil {
		return 0, nil, 0, "", err
	}
	base := srv.Count()
	r, err := StartRelayd(bins.Relayd, site)
	if err != nil {
		return 0, nil, 0, "", err
	}
	defer r.Stop(30 * time.Second)
	addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	if err := r.WaitFor("the listener on "+addr, time.Minute, func() bool {
		// A bare connect and close: the greeting is not awaited.
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return 0, nil, 0, "", err
	}
	cpu0 := selfCPU()
	rate, accepted, err := sendParallel(addr, n)
	if err != nil {
		return 0, nil, 0, "", fmt.Errorf("loopback clients (%d accepted): %w; relayd log:\n%s", accepted, err, r.Tail(10))
	}
	if err := r.WaitFor(fmt.Sprintf("%d deliveries", accepted), 10*time.Minute, func() bool { return srv.Count()-base >= accepted }); err != nil {
		return 0, nil, 0, "", err
	}
	driver := perMessage(selfCPU()-cpu0, n)
	if got := srv.Count() - base; got != accepted {
		ru, _ := r.Stop(30 * time.Second)
		return rate, ru, driver, fmt.Sprintf("%d accepted, upstream got %d", accepted, got), nil
	}
	ru, err := r.Stop(30 * time.Second)
	if err != nil {
		return 0, nil, 0, "", err
	}
	return rate, ru, driver, "", nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	a, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("no TCP address")
	}
	return a.Port, nil
}
