package driver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

const benchUser, benchPass = "bench", "bench-secret-4b1d"

func relaydRows(o Options, sz sizes, work string, bins *Binaries) ([]Row, []string, error) {
	var rows []Row
	var notes []string
	if bins.Relayd == "" {
		why := "cmd/relayd does not build yet"
		for _, c := range sz.drainConc {
			target := "printed"
			if drainTargeted(c) {
				target = "≥ 0.7× the reference"
			}
			rows = append(rows, notMeasured(drainName(sz.drainN, c), refName(c), target, why))
			if drainTargeted(c) {
				rows = append(rows, notMeasured(pickupName(sz.drainN, c), refName(c), "printed", why))
			}
		}
		rows = append(rows,
			notMeasured("enqueue + drain, parallel callers", "—", "sustained, bounded, nothing lost", why),
			notMeasured(fmt.Sprintf("relayd RSS with %d queued", sz.memN), "—", "≤ 100 MB", why),
			notMeasured(fmt.Sprintf("startup recovery scan of %d", sz.memN), "—", "≤ 5 s", why),
			notMeasured(drainCPUName, "—", "printed", why))
		return rows, notes, nil
	}
	srv, err := smtptest.Start(smtptest.Options{Username: benchUser, Password: benchPass, NoStore: true, SMTPUTF8: true, DSN: true, BatchReplies: true})
	if err != nil {
		return nil, nil, err
	}
	defer srv.Close()
	up := srv.Upstream()

	if o.want("drain") {
		settle()
		var cpuPerMsg []float64
		for _, c := range sz.drainConc {
			// The reference for concurrency c is the bare client over c
			// connections, run alternately with relayd (reference, relayd,
			// reference, ...) so that both see the same machine. At the
			// targeted concurrencies relayd also runs from maildrop/
			// (pickup and delivery together), printed against the same
			// reference.
			var rates, refRates, mdRates, mdCPU []float64
			var peakRSS int64
			for i := 0; i < o.Runs; i++ {
				o.logf("reference: bare go-smtp client, %d connection(s), run %d, %d messages", c, i+1, sz.drainN)
				r, err := refClient(bins.RefSMTP, up.Host, up.Port, up.CAFile, sz.drainN, c)
				if err != nil {
					return nil, nil, fmt.Errorf("reference client: %w", err)
				}
				refRates = append(refRates, r)
				o.logf("drain of a pre-filled queue: concurrency %d, run %d, %d messages", c, i+1, sz.drainN)
				rate, cpu, rss, err := drainOnce(o, filepath.Join(work, fmt.Sprintf("drain-%d-%d", c, i)), bins, srv, c, sz.drainN, true)
				if err != nil {
					return nil, nil, err
				}
				rates = append(rates, rate)
				cpuPerMsg = append(cpuPerMsg, cpu)
				peakRSS = max(peakRSS, rss)
				if drainTargeted(c) {
					o.logf("pickup + drain from maildrop/: concurrency %d, run %d, %d messages", c, i+1, sz.drainN)
					rate, cpu, _, err := drainOnce(o, filepath.Join(work, fmt.Sprintf("maildrop-%d-%d", c, i)), bins, srv, c, sz.drainN, false)
					if err != nil {
						return nil, nil, err
					}
					mdRates = append(mdRates, rate)
					mdCPU = append(mdCPU, cpu)
				}
			}
			// The same client in the upstream's own process, once, for
			// the note: what the process boundary costs the reference.
			inproc, err := BareClient(up.Host, up.Port, up.CAFile, sz.drainN, c)
			if err != nil {
				return nil, nil, fmt.Errorf("reference client in the driver: %w", err)
			}
			s, ref := Summarise(rates), Summarise(refRates)
			ratio := s.Median / ref.Median
			row := Row{Name: drainName(sz.drainN, c), RefFor: refName(c),
				Unit: "msg/s", Subj: s, Ref: &ref, Ratio: fmt.Sprintf("%.2f×", ratio),
				Note: fmt.Sprintf("relayd peak RSS %.1f MB; run ratios: %s; the bare client inside the driver (the upstream's process): %.0f/s", float64(peakRSS)/1024, runRatios(rates, refRates), inproc)}
			if drainTargeted(c) {
				row.Target = "≥ 0.7× the reference"
				if ratio >= 0.7 {
					row.Verdict = "met"
				} else {
					row.Verdict = fmt.Sprintf("MISSED: %.2f× < 0.7×", ratio)
				}
			} else {
				row.Target = "printed"
				row.Verdict = "info"
			}
			rows = append(rows, row)
			if len(mdRates) > 0 {
				md := Summarise(mdRates)
				rows = append(rows, Row{Name: pickupName(sz.drainN, c), RefFor: refName(c),
					Unit: "msg/s", Subj: md, Ref: &ref, Ratio: fmt.Sprintf("%.2f×", md.Median/ref.Median), Target: "printed", Verdict: "info",
					Note: fmt.Sprintf("timed from exec; relayd CPU per message %.0f µs (median); run ratios: %s", Summarise(mdCPU).Median, runRatios(mdRates, refRates))})
			}
		}
		rows = append(rows, Row{Name: drainCPUName, RefFor: "—", Unit: "µs/msg",
			Subj: Summarise(cpuPerMsg), Ratio: "—", Target: "printed", Verdict: "info", Note: "over every pre-filled drain run, relayd's start and recovery included"})
	}
	if o.want("load") {
		settle()
		row, err := loadRow(o, sz, work, bins, srv)
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, row)
	}
	if o.want("loopback") {
		settle()
		row, err := loopbackRow(o, sz, work, bins, srv)
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, row)
	}
	if o.want("memory") {
		settle()
		r, err := memoryRows(o, sz, work, bins)
		if err != nil {
			return nil, nil, err
		}
		rows = append(rows, r...)
	}
	return rows, notes, nil
}

// drainOnce times relayd delivering n 2 KB messages at concurrency conc;
// it returns messages/s, relayd's CPU µs per message and its peak RSS in
// KB.
//
// With prefill, the n messages are in relayd's queue before the timed
// run: a first relayd, whose upstream refuses connections, picks them up
// from maildrop/ and is stopped; the second, against srv, is timed from
// its event=start line (after the spool's recovery, which has its own
// row) until srv has them all. That is the drain of a queue, what the
// bare client's reference does too. Without prefill, the messages are in
// maildrop/ and relayd is timed from exec: pickup and delivery together.
func drainOnce(o Options, dir string, bins *Binaries, srv *smtptest.Server, conc, n int, prefill bool) (rate, cpuUS float64, rssKB int64, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, 0, err
	}
	conf, err := upstreamTOML(dir, srv.Upstream())
	if err != nil {
		return 0, 0, 0, err
	}
	conf += fmt.Sprintf("\n[queue]\nconcurrency = %d\n", conc)
	site, err := NewSite(dir, &Binaries{}, conf)
	if err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(dir)
	if err := FillMaildrop(site.Maildrop, n, 2<<10, 0); err != nil {
		return 0, 0, 0, err
	}
	if prefill {
		if err := prefillQueue(bins.Relayd, site, n, conf); err != nil {
			return 0, 0, 0, err
		}
	}
	base := srv.Count()
	r, err := StartRelayd(bins.Relayd, site)
	if err != nil {
		return 0, 0, 0, err
	}
	defer r.Stop(30 * time.Second)
	if err := r.WaitFor(fmt.Sprintf("%d deliveries", n), 15*time.Minute, func() bool { return srv.Count()-base >= n }); err != nil {
		return 0, 0, 0, err
	}
	end := time.Now()
	start := r.Started
	if prefill {
		if start, err = startTime(r.LogPath); err != nil {
			return 0, 0, 0, err
		}
	}
	if err := r.WaitFor("an empty spool", 2*time.Minute, func() bool { return queued(site) == 0 }); err != nil {
		return 0, 0, 0, err
	}
	_, peak, _ := r.RSS()
	ru, err := r.Stop(30 * time.Second)
	if err != nil {
		return 0, 0, 0, err
	}
	if got := srv.Count() - base; got != n {
		return 0, 0, 0, fmt.Errorf("drain: %d messages queued, upstream got %d", n, got)
	}
	return float64(n) / end.Sub(start).Seconds(), float64(cpu(ru).Microseconds()) / float64(n), peak, nil
}

// prefillQueue moves the n messages of site's maildrop/ into relayd's
// queue: a relayd whose upstream refuses connections (a port just closed)
// picks them up and tries some, and is stopped; it returns once every
// message is due, with site's configuration conf again.
func prefillQueue(relayd string, site *Site, n int, conf string) error {
	refusing, err := refusingUpstream("1s")
	if err != nil {
		return err
	}
	if err := site.Reconfigure(refusing); err != nil {
		return err
	}
	r, err := StartRelayd(relayd, site)
	if err != nil {
		return err
	}
	if err := r.WaitFor("pickup of every maildrop file", 10*time.Minute, func() bool {
		return countFiles(site.Maildrop) == 0 && queued(site) == n
	}); err != nil {
		r.Stop(30 * time.Second)
		return err
	}
	if _, err := r.Stop(30 * time.Second); err != nil {
		return err
	}
	// A message tried is due again after the retry schedule's 1 s, or,
	// tried while the upstream's breaker was open, after its backoff,
	// which grows with the outage (up to 30 s): the timed relayd must
	// find every message due, not wait for some.
	q, err := spool.Snapshot(site.Spool)
	if err != nil {
		return err
	}
	due := time.Now()
	for _, e := range q {
		if e.Delivery != nil && e.Delivery.Next.After(due) {
			due = e.Delivery.Next
		}
	}
	time.Sleep(time.Until(due) + 100*time.Millisecond)
	return site.Reconfigure(conf)
}

// refusingUpstream is the configuration of a site whose only upstream
// refuses connections (a loopback port just closed), retried every
// retry.
func refusingUpstream(retry string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return fmt.Sprintf("\n[[upstream]]\nhost = \"127.0.0.1\"\nport = %d\ntls = \"none\"\n[queue]\nretry = [%q]\n", port, retry), nil
}

// startTime is the time of relayd's event=start line in the log at path.
func startTime(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, " event=start") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(l, "ts="), " ")
		return time.Parse(time.RFC3339Nano, ts)
	}
	return time.Time{}, fmt.Errorf("no event=start in %s", path)
}

// The drain rows' names.
func drainName(n, c int) string {
	return fmt.Sprintf("drain of a pre-filled queue, %d × 2 KB, STARTTLS+AUTH, concurrency %d", n, c)
}

func pickupName(n, c int) string {
	return fmt.Sprintf("pickup from maildrop/ + drain, %d × 2 KB, concurrency %d", n, c)
}

const drainCPUName = "relayd CPU (user+sys) per delivered message, drain of a pre-filled queue"

// drainTargeted reports whether the drain at concurrency c is held to
// the 0.7× target (1, 4 and 8; the others are printed).
func drainTargeted(c int) bool { return c == 1 || c == 4 || c == 8 }

// refName describes the drain's reference at concurrency c.
func refName(c int) string {
	if c == 1 {
		return "bare go-smtp client, one connection"
	}
	return fmt.Sprintf("bare go-smtp client, %d connections", c)
}

// BareClient sends n 2 KB messages over conns authenticated STARTTLS
// connections at once (one goroutine each, the messages split between
// them) and returns messages/s from the first dial until the last QUIT:
// the reference for relayd's drain at concurrency conns (run in a process
// of its own by bench/refsmtp; see refClient).
func BareClient(host string, port int, caFile string, n, conns int) (float64, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	msg := message(2<<10, 0)
	conns = max(1, min(conns, n))
	errs := make([]error, conns)
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := 0; g < conns; g++ {
		share := n / conns
		if g < n%conns {
			share++
		}
		wg.Add(1)
		go func(g, share int) {
			defer wg.Done()
			errs[g] = bareSession(host, port, pool, msg, share)
		}(g, share)
	}
	wg.Wait()
	elapsed := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return float64(n) / elapsed.Seconds(), nil
}

// bareSession sends n copies of msg over one authenticated STARTTLS
// connection.
func bareSession(host string, port int, pool *x509.CertPool, msg []byte, n int) error {
	c, err := smtp.DialStartTLS(net.JoinHostPort(host, fmt.Sprint(port)), &tls.Config{RootCAs: pool, ServerName: host})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("bench.example"); err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", benchUser, benchPass)); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
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
		if _, err := w.Write(msg); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return c.Quit()
}

// loadRow runs parallel sendmail callers while relayd drains, sampling the
// queue depth, then checks that everything accepted arrived.
func loadRow(o Options, sz sizes, work string, bins *Binaries, srv *smtptest.Server) (Row, error) {
	name := fmt.Sprintf("enqueue + drain, %d parallel sendmail callers for %v", sz.loadCallers, sz.loadFor)
	if bins.Sendmail == "" {
		return notMeasured(name, "—", "sustained, bounded, nothing lost", "cmd/sendmail does not build yet"), nil
	}
	dir := filepath.Join(work, "load")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Row{}, err
	}
	conf, err := upstreamTOML(dir, srv.Upstream())
	if err != nil {
		return Row{}, err
	}
	site, err := NewSite(dir, bins, conf)
	if err != nil {
		return Row{}, err
	}
	defer os.RemoveAll(dir)
	defer site.Close()
	if _, err := site.Probe(); err != nil {
		return Row{}, err
	}
	base := srv.Count()
	r, err := StartRelayd(bins.Relayd, site)
	if err != nil {
		return Row{}, err
	}
	defer r.Stop(30 * time.Second)
	o.logf("load: %d callers for %v", sz.loadCallers, sz.loadFor)
	var accepted, failed atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(sz.loadFor)
	var wg sync.WaitGroup
	for g := 0; g < sz.loadCallers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				p := site.sendmail("", "-t", "-i")
				p.StdinData = message(2<<10, g*1_000_000+i)
				if _, err := p.Run(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				accepted.Add(1)
			}
		}(g)
	}
	var depths []float64
	t0 := time.Now()
	for time.Now().Before(stop) {
		depths = append(depths, float64(queued(site)))
		time.Sleep(100 * time.Millisecond) // sampling period, not synchronisation
	}
	wg.Wait()
	enq := time.Since(t0)
	n := int(accepted.Load())
	deliveredDuring := srv.Count() - base
	if err := r.WaitFor("the load's last deliveries", 10*time.Minute, func() bool { return srv.Count()-base >= n && queued(site) == 0 }); err != nil {
		return Row{}, err
	}
	total := time.Since(t0)
	d := Summarise(depths)
	rate := float64(n) / total.Seconds()
	row := Row{Name: name, RefFor: "—", Unit: "msg/s", Subj: Summarise([]float64{rate}), Ratio: "—",
		Target: "sustained, queue bounded, nothing lost"}
	row.Note = fmt.Sprintf("%d accepted (%.0f/s enqueued), %d delivered during the run, all %d delivered %.1f s after the callers stopped; queue depth median %.0f, max %.0f; %d sendmail failures",
		n, float64(n)/enq.Seconds(), deliveredDuring, n, (total - enq).Seconds(), d.Median, d.Max, failed.Load())
	lost := n - (srv.Count() - base)
	switch {
	case failed.Load() > 0:
		row.Verdict = fmt.Sprintf("MISSED: %d sendmail calls failed (%v)", failed.Load(), firstErr.Load())
	case lost != 0:
		row.Verdict = fmt.Sprintf("MISSED: %d accepted, upstream got %d", n, srv.Count()-base)
	case float64(deliveredDuring)/enq.Seconds() < 0.9*float64(n)/enq.Seconds():
		row.Verdict = fmt.Sprintf("MISSED: queue not bounded (relayd drained %.0f/s while callers enqueued %.0f/s); nothing lost",
			float64(deliveredDuring)/enq.Seconds(), float64(n)/enq.Seconds())
	default:
		row.Verdict = "met (nothing lost, queue bounded)"
	}
	return row, nil
}

// memoryRows queues many messages behind an upstream that refuses
// connections, lets relayd pick them all up (retry in an hour, so that
// they stay queued and idle), restarts it, and reports how long the
// restarted relayd takes to log event=start (its recovery scan and queue
// load come first) and its RSS with everything queued: right after start
// and the peak over the next ten seconds.
func memoryRows(o Options, sz sizes, work string, bins *Binaries) ([]Row, error) {
	dir := filepath.Join(work, "memory")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	conf, err := refusingUpstream("1h")
	if err != nil {
		return nil, err
	}
	site, err := NewSite(dir, &Binaries{}, conf)
	if err != nil {
		return nil, err
	}
	o.logf("memory: queueing %d messages", sz.memN)
	if err := FillMaildrop(site.Maildrop, sz.memN, 2<<10, 0); err != nil {
		return nil, err
	}
	r, err := StartRelayd(bins.Relayd, site)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := r.WaitFor("pickup of every maildrop file", 60*time.Minute, func() bool { return countFiles(site.Maildrop) == 0 }); err != nil {
		r.Stop(30 * time.Second)
		return nil, err
	}
	pickup := time.Since(t0)
	_, pickupPeak, _ := r.RSS()
	if _, err := r.Stop(time.Minute); err != nil {
		return nil, err
	}
	o.logf("memory: restarting relayd with %d queued", sz.memN)
	r, err = StartRelayd(bins.Relayd, site)
	if err != nil {
		return nil, err
	}
	defer r.Stop(time.Minute)
	if err := r.WaitFor("event=start in the log", 10*time.Minute, func() bool {
		b, _ := os.ReadFile(r.LogPath)
		return strings.Contains(string(b), "event=start")
	}); err != nil {
		return nil, err
	}
	scan := time.Since(r.Started)
	atStart, _, err := r.RSS()
	if err != nil {
		return nil, err
	}
	var peak int64
	window := 10 * time.Second
	if o.Smoke {
		window = 2 * time.Second
	}
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, p, err := r.RSS(); err == nil {
			peak = max(peak, p)
		}
	}
	rss := Row{Name: fmt.Sprintf("relayd RSS with %d queued (after restart)", sz.memN), RefFor: "—", Unit: "MB",
		Subj: Summarise([]float64{float64(atStart) / 1024}), Ratio: "—", Target: "≤ 100 MB",
		Note: fmt.Sprintf("peak (VmHWM) %.1f MB within %v of start; %.1f MB peak during the first pickup (%.0f msg/s)", float64(peak)/1024, window, float64(pickupPeak)/1024, float64(sz.memN)/pickup.Seconds())}
	rss.Verdict = "met"
	if mb := float64(max(atStart, peak)) / 1024; mb > 100 {
		rss.Verdict = fmt.Sprintf("MISSED: %.1f MB > 100 MB", mb)
	}
	sc := Row{Name: fmt.Sprintf("startup recovery scan of %d queued", sz.memN), RefFor: "—", Unit: "s",
		Subj: Summarise([]float64{scan.Seconds()}), Ratio: "—", Target: "≤ 5 s",
		Note: "exec until relayd logs event=start (after spool recovery and queue load)"}
	sc.Verdict = "met"
	if scan > 5*time.Second {
		sc.Verdict = fmt.Sprintf("MISSED: %.1f s > 5 s", scan.Seconds())
	}
	return []Row{rss, sc}, nil
}

// runRatios lists each run's rate over its reference's, in run order.
func runRatios(rates, refs []float64) string {
	var b strings.Builder
	for i := range rates {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.2f", rates[i]/refs[i])
	}
	return b.String()
}

// refClient runs BareClient in a process of its own (bin, bench/refsmtp),
// as relayd is one: the reference and relayd reach the driver's
// in-process upstream across the same process boundary, and pay the same
// wake-ups of a thread in each process per round trip. (The same client
// inside the driver, in the upstream's process, is faster by what that
// saves: the notes give it.)
func refClient(bin, host string, port int, caFile string, n, conns int) (float64, error) {
	out, err := exec.Command(bin, host, strconv.Itoa(port), caFile, strconv.Itoa(n), strconv.Itoa(conns)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, err
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}

// settle writes back what earlier rows left dirty in the page cache
// (sync(2)) before a row starts, so that their writeback, which the
// kernel otherwise does over the next half minute, does not run during
// this row's runs: it competes with relayd's fdatasyncs (and not with
// the references, which write nothing) and would charge relayd for the
// rows before.
func settle() { unix.Sync() }
