package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/smtpd"
	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/submit"
)

// listenGrace is how long SMTP sessions inside DATA may go on after
// SIGTERM; then their connections are closed (their clients got no 250
// for that message, so they still have it).
const listenGrace = 10 * time.Second

// startListen starts the loopback SMTP listener: the sockets systemd
// passed (relayd.socket), plus every configured address, port and the
// Unix socket that systemd did not pass, bound here. A socket that cannot
// be bound (a port under 1024 without root or socket activation, a port in
// use) is logged and skipped: the sendmail doors work on regardless. It
// returns the function that stops the listener (nil when none runs).
// scan says whether the /proc scan's capabilities are permitted (run
// took them out of force at start: sockdiag.LowerCaps).
func startListen(cfg *config.Config, host string, intake *submit.Intake, log *maillog.Logger, scan bool) func(context.Context) {
	ls := cfg.Listen
	passed, _ := activation.Listeners()
	var lns []net.Listener
	covered := map[string]bool{}
	for _, ln := range passed {
		if ln == nil {
			continue
		}
		if !ls.Enabled {
			ln.Close()
			continue
		}
		if err := checkPassed(ln); err != nil {
			log.Error("socket from systemd not used", err, slog.String("addr", ln.Addr().String()),
				slog.String("fix", "ListenStream= in relayd.socket: only loopback addresses and Unix sockets"))
			ln.Close()
			continue
		}
		covered[ln.Addr().String()] = true
		lns = append(lns, ln)
		log.Listening(ln.Addr().String(), "systemd")
	}
	if !ls.Enabled {
		if len(passed) > 0 {
			log.ListenStatus("disabled", "[listen] enabled = false; the sockets systemd passed are closed",
				"systemctl disable --now relayd.socket")
		}
		return nil
	}
	for _, a := range ls.Addresses {
		for _, p := range ls.Ports {
			addr := net.JoinHostPort(a, strconv.Itoa(p))
			if covered[addr] {
				continue
			}
			ln, err := loopbackListen.Listen(context.Background(), "tcp", addr)
			if err != nil {
				fix := ""
				switch {
				case errors.Is(err, fs.ErrPermission):
					fix = "ports under 1024 come from systemd (relayd.socket) or root; or set [listen] ports"
				case errors.Is(err, syscall.EADDRINUSE):
					// Often the MTA mailshim replaces, still running.
					fix = fmt.Sprintf("another program listens there (ss -ltnp 'sport = :%d' names it; on 25 often the MTA mailshim replaces): stop it, or set [listen] ports", p)
				}
				log.ListenUnavailable(addr, err, fix)
				continue
			}
			lns = append(lns, ln)
			log.Listening(ln.Addr().String(), "bound")
		}
	}
	if ls.Socket != "" && !covered[ls.Socket] {
		ln, err := listen(ls.Socket)
		if err != nil {
			log.ListenUnavailable(ls.Socket, err, "")
		} else {
			lns = append(lns, ln)
			log.Listening(ls.Socket, "bound")
		}
	}
	if len(lns) == 0 {
		log.ListenStatus("none", "no SMTP listener socket could be had; the sendmail doors work on", "")
		return nil
	}
	if !scan && os.Geteuid() != 0 {
		log.ListenProcessLookup("own-user-only", "without CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE relayd finds the client's process only for its own user; other users' mail is recorded under the kernel's UID without it",
			"the shipped relayd.service grants both (AmbientCapabilities=)")
	}
	tlsConf := listenTLS(ls, log)
	lim := sockserve.ListenLimiter(ls.MaxConnections, ls.MaxConnectionsPerUID)
	srv := smtpd.New(smtpd.Options{
		Hostname: host, MaxMessageSize: cfg.MaxMessageSize, MaxRecipients: ls.MaxRecipients,
		MaxLineLength: ls.MaxLineLength, TLS: tlsConf,
		CommandTimeout: ls.CommandTimeout, DataTimeout: ls.DataTimeout, IdleTimeout: ls.IdleTimeout, SessionTimeout: ls.SessionTimeout,
		Limiter: lim, Intake: intake, Log: log,
	})
	for _, ln := range lns {
		go srv.Serve(ln)
	}
	return func(ctx context.Context) { srv.Shutdown(ctx) }
}

// recipientLimit is each account's recipient limit ([policy]
// max_recipients, as the gate resolves it: user, uid:N, group:NAME, "*";
// a reload replaces it), which the listener applies at RCPT.
type recipientLimit struct{ gate *policy.Gate }

func (r recipientLimit) MaxRecipients(user string, uid int) int {
	return r.gate.Limits(&policy.Message{Account: policy.Account{UID: uid, User: user}}).MaxRecipients
}

// listenCertFix is what to do about a listener certificate that does not
// load (unreadable, damaged, or not the key's): check-config's warning
// and relayd's log line at start say the same.
const listenCertFix = "run relayd tls-init, or set [listen] cert_file and key_file"

// listenWarnings is what check-config says about [listen] beyond the
// syntax: a certificate that does not load (STARTTLS would not be
// offered).
func listenWarnings(cfg *config.Config) []string {
	l := cfg.Listen
	if !l.Enabled || l.CertFile == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile); err != nil {
		return []string{fmt.Sprintf("[listen] cert_file/key_file: %v: STARTTLS will not be offered (%s)", err, listenCertFix)}
	}
	return nil
}

// listenChanged reports whether [listen] differs between two
// configurations: the listener takes a new one only at the next start.
func listenChanged(a, b *config.Config) bool {
	return !reflect.DeepEqual(a.Listen, b.Listen) || a.MaxMessageSize != b.MaxMessageSize
}

// loopbackListen binds the TCP sockets relayd binds itself. TCP
// keep-alive is off (KeepAlive < 0): its probes only find peers that
// vanished without a reset, which on the loopback cannot happen (the
// kernel resets a dead process's connections, and every stage of a
// session has its timeout), and Go's default (on, 15 s) costs four
// setsockopt(2) calls at every accept (TCP_NODELAY remains). The sockets
// systemd passes (net.FileListener) keep Go's default: turning it off
// again on each accepted connection would cost one more call, not save
// the four.
var loopbackListen = net.ListenConfig{KeepAlive: -1}

// checkPassed refuses a socket from systemd that would serve the network:
// a TCP socket must be bound to a loopback address.
func checkPassed(ln net.Listener) error {
	switch a := ln.Addr().(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.Unmap().IsLoopback() {
			return fmt.Errorf("%s is not a loopback address", a.IP)
		}
	case *net.UnixAddr:
	default:
		return fmt.Errorf("not a stream socket (%s)", ln.Addr().Network())
	}
	return nil
}

// listenTLS loads the certificate for STARTTLS; nil (STARTTLS not
// offered, logged once) when there is none or it does not load.
func listenTLS(ls config.Listen, log *maillog.Logger) *tls.Config {
	if ls.CertFile == "" || ls.KeyFile == "" {
		log.ListenTLSOff(nil, "no cert_file/key_file in [listen]: STARTTLS not offered", "")
		return nil
	}
	cert, err := tls.LoadX509KeyPair(ls.CertFile, ls.KeyFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			log.ListenTLSOff(err, "no certificate: STARTTLS not offered", "create "+ls.CertFile+" and "+ls.KeyFile+" (the package does at install), or set [listen] cert_file and key_file")
		} else {
			log.ListenTLSOff(err, "the certificate does not load: STARTTLS not offered", listenCertFix)
		}
		return nil
	}
	log.ListenTLSOn(ls.CertFile)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}
