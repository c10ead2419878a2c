package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/oauth"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/sockdiag"
	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// stderr is where relayd's lines go: os.Stderr, or while the daemon
// runs the mail log's buffer in front of it (run), so that every line —
// mail log, protocol trace, a fatal error — keeps its order.
var stderr io.Writer = os.Stderr

// fatal prints one line and returns the exit code.
func fatal(code int, format string, args ...any) int {
	fmt.Fprintf(stderr, "relayd: "+format+"\n", args...)
	return code
}

// lineWriter prefixes protocol trace lines so that they are told apart
// from mail log lines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		io.WriteString(l.w, "trace: "+line)
	}
	return len(p), nil
}

// queueSettings is the queue's part of cfg, with rw's aliases for the
// recipients of its bounces and notices.
func queueSettings(cfg *config.Config, rw *pickup.Rewriter, log *maillog.Logger) queue.Settings {
	set := queue.SettingsFrom(cfg, relayOptions(cfg, rw.Hostname, log))
	set.Aliases = rw.Recipients
	return set
}

func relayOptions(cfg *config.Config, host string, log *maillog.Logger) relay.Options {
	opts := relay.OptionsFrom(cfg)
	opts.Hostname = host
	if cfg.Log.Protocol {
		opts.Trace = &lineWriter{w: stderr}
	}
	// OAuth2 bearer tokens (XOAUTH2, OAUTHBEARER); a reload starts with
	// fresh token sources.
	oc := &oauth.Clients{StateDir: filepath.Join(cfg.Spool, "oauth"), Options: oauth.Options{Warn: func(msg string, err error) {
		log.Warning(msg, err)
	}}}
	opts.SASL = oc.Client
	return opts
}

// run runs the daemon until SIGTERM or SIGINT; drainTimeout bounds how
// long the sessions in flight may finish before they are aborted.
func run(path string, drainTimeout time.Duration) int {
	// The capabilities of the SMTP listener's /proc scan (relayd.service
	// grants them) go out of force before anything else runs: relayd's
	// own files (configuration, secrets, spool) are read with the daemon
	// user's rights only, at start as at a reload, and the scan raises
	// them only for the scan, on the thread that runs it
	// (sockdiag.WithScanCaps).
	scanCaps, capsErr := sockdiag.LowerCaps()
	keepHeapFloor(heapFloor)
	cfg, ok := loadConfig(path)
	if !ok {
		return sysexits.Config
	}
	// The log lines of a busy drain (several per message) are written
	// out together, at most maillog.FlushDelay after the first; every
	// return below flushes what is left.
	out := maillog.NewBuffer(os.Stderr, maillog.FlushDelay)
	stderr = out
	defer func() {
		out.Close()
		stderr = os.Stderr
	}()
	log := maillog.New(out, nil)
	if capsErr != nil {
		log.Warning("cannot lower CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE out of relayd's effective set", capsErr)
	}
	owner := spool.CurrentOwner()
	if err := spool.Prepare(cfg.Spool, owner); err != nil {
		for _, e := range unjoin(err) {
			fmt.Fprintf(stderr, "relayd: %v\n", e)
		}
		return sysexits.Config
	}
	lock, err := spool.Lock(cfg.Spool)
	if err != nil {
		return fatal(sysexits.TempFail, "%v", err)
	}
	defer lock.Close()
	sq, err := spool.OpenQueue(cfg.Spool)
	if err != nil {
		return fatal(sysexits.OSErr, "%v", err)
	}
	defer sq.Close()

	rw, aerrs := pickup.NewRewriter(cfg)
	for _, e := range aerrs {
		log.ConfigWarning(e)
	}
	pk, err := pickup.New(sq, rw, log)
	if err != nil {
		return fatal(sysexits.OSErr, "%v", err)
	}
	defer pk.Close()
	pk.SetIntervals(cfg.Queue.ScanInterval, cfg.Queue.TempGrace)

	actions, err := sq.Recover(pk.HasDrop)
	for _, a := range actions {
		log.Recover(a)
	}
	if err != nil {
		return fatal(sysexits.OSErr, "recovering the queue: %v", err)
	}

	qu := queue.New(sq, log, nil, queueSettings(cfg, rw, log))
	if err := qu.Load(); err != nil {
		return fatal(sysexits.OSErr, "loading the queue: %v", err)
	}
	pk.Enqueued = func(string) { qu.Kick() }
	qu.Holds = pk.Holds
	pk.Reject = qu.Reject
	ab, err := newAbuse(cfg, rw.Hostname, pk, sq, qu, log)
	if err != nil {
		return fatal(sysexits.OSErr, "policy state: %v", err)
	}
	mt, metricsLn, err := newMetrics(cfg, sq, qu.AccountOf, namedAccounts(ab.gate.Policy()))
	if err != nil {
		return fatal(sysexits.OSErr, "metrics: %v", err)
	}
	st, err := openStats(cfg, qu.AccountOf, log)
	if err != nil {
		return fatal(sysexits.OSErr, "stats state: %v", err)
	}
	ab.stats = st
	if mt != nil {
		log.SetObserver(func(e *maillog.Entry) {
			mt.Observe(e)
			st.Observe(e)
		})
	} else {
		log.SetObserver(st.Observe)
	}

	ctlLn, err := listen(cfg.ControlSocket)
	if err != nil {
		return fatal(sysexits.OSErr, "control socket: %v; set control_socket in %s to a path relayd may create", err, path)
	}
	subLn, err := listen(cfg.SubmitSocket)
	if err != nil {
		ctlLn.Close()
		return fatal(sysexits.OSErr, "submission socket: %v; set submit_socket in %s to a path relayd may create", err, path)
	}

	// Signals are caught before the control socket answers and before
	// event=start: whoever waits for either may send SIGHUP at once (the
	// default action would kill relayd).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	ctx, stop := context.WithCancel(context.Background())
	sendCtx, abort := context.WithCancel(context.Background())
	defer abort()
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	goRun(func() {
		srv := &control.Server{Handler: ab.handle, Log: log}
		if err := srv.Serve(ctx, ctlLn); err != nil {
			log.Error("control socket", err)
		}
	})
	policy := &livePolicy{}
	policy.cfg.Store(cfg)
	intake := submit.Intake{Store: pk.Store(cfg.MaxMessageSize), Policy: policy, Recipients: recipientLimit{ab.gate}, Sender: pk.Sender}
	srv := &submitsock.Server{Intake: intake, Budget: submitsock.DefaultHeaderBudget()}
	goRun(func() { serveSubmit(ctx, subLn, sockserve.SubmitLimiter(), srv, log) })
	goRun(func() { pk.Run(ctx) })
	goRun(func() { ab.run(ctx) })
	if mt != nil {
		log.MetricsListen(metricsLn.Addr().String())
		goRun(func() { serveMetrics(ctx, mt, metricsLn, log) })
	}
	// The loopback SMTP listener (listen.go) shares the intake.
	if stopListen := startListen(cfg, rw.Hostname, &intake, log, scanCaps); stopListen != nil {
		goRun(func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), listenGrace)
			defer cancel()
			stopListen(sctx)
		})
	}
	queueDone := make(chan struct{})
	go func() {
		defer close(queueDone)
		qu.Run(ctx, sendCtx)
	}()
	// The queue's housekeeping: the Done records made durable, emptied
	// segments removed, the journal and old segments compacted.
	goRun(func() { maintainQueue(ctx, sq, log) })
	log.Start(os.Getpid(), cfg.Spool, path, len(cfg.Upstreams), rw.Hostname)
	sdNotify(log, fmt.Sprintf("READY=1\nSTATUS=relaying from %s to %d upstream(s)", cfg.Spool, len(cfg.Upstreams)))
	goRun(func() { watchdog(ctx, log) })

	boot := cfg // what the restart-only settings stay at until a restart
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			prev := cfg
			cfg = reload(path, cfg, boot, pk, qu, log)
			at := time.Now().UTC().Format(time.RFC3339)
			if cfg == prev {
				// Refused: systemctl reload has long returned, and
				// systemctl status is where the admin looks.
				sdNotify(log, "STATUS=relaying; reload at "+at+" refused, the previous configuration kept: "+path+" has errors (relayd check-config, or the reload line in the log)")
				continue
			}
			policy.cfg.Store(cfg)
			ab.configure(cfg, pickupHostname(cfg))
			if mt != nil {
				mt.SetNamed(namedAccounts(ab.gate.Policy()))
			}
			sdNotify(log, "STATUS=relaying; configuration (re)loaded at "+at+" from "+path)
			continue
		}
		log.Stop(sig.String(), drainTimeout)
		sdNotify(log, "STOPPING=1\nSTATUS=stopping: finishing the sessions in flight")
		break
	}
	signal.Stop(sigs)
	qu.Stop()
	stop()
	t := time.NewTimer(drainTimeout)
	select {
	case <-queueDone:
	case <-t.C:
		log.StopAbort("sessions still in flight after the drain timeout; aborting them")
		abort()
		<-queueDone
	}
	t.Stop()
	wg.Wait()
	ab.save(true)
	log.Stopped(os.Getpid())
	return sysexits.OK
}

// reload applies a new configuration on SIGHUP, or keeps the old one; it
// returns the configuration in force. The reload line's needs_restart
// compares the new one with boot, the configuration relayd started with:
// the restart-only settings are still boot's, whatever the reloads in
// between said.
func reload(path string, old, boot *config.Config, pk *pickup.Pickup, qu *queue.Queue, log *maillog.Logger) *config.Config {
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.LoadSecrets()
	}
	if err != nil {
		msg := err.Error()
		if es := config.Errors(err); len(es) > 0 {
			var s []string
			for _, e := range es {
				s = append(s, e.Error())
			}
			msg = strings.Join(s, "; ")
		}
		log.ReloadRefused(msg, old.Source)
		return old
	}
	rw, aerrs := pickup.NewRewriter(cfg)
	for _, e := range aerrs {
		log.ConfigWarning(e)
	}
	pk.SetRewriter(rw)
	pk.SetIntervals(cfg.Queue.ScanInterval, cfg.Queue.TempGrace)
	qu.SetSettings(queueSettings(cfg, rw, log))
	var restart []string
	if cfg.Spool != boot.Spool {
		restart = append(restart, "spool")
	}
	if cfg.ControlSocket != boot.ControlSocket {
		restart = append(restart, "control_socket")
	}
	if cfg.SubmitSocket != boot.SubmitSocket {
		restart = append(restart, "submit_socket")
	}
	if cfg.Queue.Concurrency != boot.Queue.Concurrency {
		restart = append(restart, "queue.concurrency")
	}
	if cfg.Metrics != boot.Metrics {
		restart = append(restart, "metrics")
	}
	if listenChanged(cfg, boot) {
		restart = append(restart, "listen")
	}
	log.Reloaded(path, len(cfg.Upstreams), restart)
	qu.Kick()
	return cfg
}

// listen creates a world-connectable socket (peers are checked per
// connection by SO_PEERCRED), creating its directory if missing.
func listen(path string) (*net.UnixListener, error) {
	if path == "" {
		return nil, errors.New("no path configured")
	}
	if dir := filepath.Dir(path); dir != "" {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		}
	}
	return sockserve.Listen(path, 0o666)
}

// livePolicy is the sender policy ([policy] allowed_senders) of the
// configuration in force, followed across reloads.
type livePolicy struct{ cfg atomic.Pointer[config.Config] }

func (p *livePolicy) CheckSender(user string, uid int, sender string) error {
	return p.cfg.Load().CheckSender(user, uid, sender)
}

// submitGrace is how long submissions in progress may go on after
// SIGTERM; then their connections are closed (the client is told nothing
// was stored, and sendmail exits non-zero).
const submitGrace = 5 * time.Second

// serveSubmit serves the submission socket: every local user may connect,
// so the connections served at once are capped (sockserve.SubmitLimiter:
// globally and per UID, taken from SO_PEERCRED before anything is read)
// and accept errors such as EMFILE are ridden out with a backoff and a
// rate-limited log line.
//
// The limiter is sockserve.Limiter rather than submitsock.Server's own: over the
// cap a peer waits for a slot (bounded) instead of being refused at once,
// so that a burst of a busy site's mail() calls is served, not lost.
func serveSubmit(ctx context.Context, ln *net.UnixListener, lim *sockserve.Limiter, srv *submitsock.Server, log *maillog.Logger) {
	var mu sync.Mutex
	conns := map[*net.UnixConn]bool{}
	go func() {
		<-ctx.Done()
		time.AfterFunc(submitGrace, func() {
			mu.Lock()
			defer mu.Unlock()
			for c := range conns {
				c.Close()
			}
		})
	}()
	busy := &sockserve.RateLog{Log: func(n int, kv ...any) {
		log.Warning("submission socket busy: peer refused", nil, append([]slog.Attr{slog.Int("refused", n)}, maillog.KV(kv...)...)...)
	}}
	acceptFailed := func(err error, n int) {
		log.Error("submission socket accept failed; backing off", err, slog.Int("failures", n))
	}
	sockserve.Serve(ctx, ln, acceptFailed, func(c *net.UnixConn) {
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
		cred, err := sockserve.PeerCred(c)
		if err != nil {
			log.SubmitError(err)
			return
		}
		uid := int(cred.Uid)
		if err := lim.Acquire(ctx, uid); err != nil {
			busy.Note("uid", uid, "pid", int(cred.Pid))
			c.SetWriteDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "error %d relayd is busy: %v\n", sysexits.IOErr, err)
			return
		}
		defer lim.Release(uid)
		if err := srv.Serve(c); err != nil {
			log.SubmitError(err)
		}
	})
}

// maintainEvery is how often relayd runs the queue's housekeeping
// (spool.Queue.Maintain): it bounds how many Done records a power loss
// can take back (each a duplicate) and how long an emptied segment stays.
const maintainEvery = 2 * time.Second

// maintainQueue runs sq.Maintain every maintainEvery until ctx is done;
// an error is logged when it begins and when it changes.
func maintainQueue(ctx context.Context, sq *spool.Queue, log *maillog.Logger) {
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := sq.Maintain()
		switch {
		case err == nil:
			last = ""
		case err.Error() != last:
			last = err.Error()
			log.Error("queue housekeeping", err)
		}
	}
}
