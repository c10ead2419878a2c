package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/mailshim/mailshim/packaging"
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/doctor"
	"github.com/mailshim/mailshim/pkg/oauth"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

const doctorUsage = `usage: relayd doctor [--config FILE] [--upstream N] [--sender ADDR]... [--rcpt ADDR]
                     [--send-to ADDR [--log-file FILE]] [--timeout 10s] [--json]
`

// doctorMain runs `relayd doctor` when it is the command in args (after
// the global --config, if any); ok is false for every other command.
// doctor has flags of its own, which the global flag set does not know.
func doctorMain(args []string) (code int, ok bool) {
	i := 0
	for i < len(args) {
		a := args[i]
		switch {
		case a == "--config" || a == "-c" || a == "--stop-timeout":
			i += 2
			continue
		case strings.HasPrefix(a, "-"):
			i++
			continue
		}
		break
	}
	if i >= len(args) || args[i] != "doctor" {
		return 0, false
	}
	rest := append(append([]string{}, args[:i]...), args[i+1:]...)
	return doctorCmd(rest), true
}

func doctorCmd(args []string) int {
	fs := pflag.NewFlagSet("relayd doctor", pflag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, doctorUsage) }
	cfgPath := fs.StringP("config", "c", "", "configuration file (default "+config.DefaultPath+", or $MAILSHIM_CONFIG)")
	fs.Duration("stop-timeout", 0, "ignored (the daemon's flag)")
	upN := fs.Int("upstream", 0, "check only the Nth [[upstream]] (1 for the first)")
	senders := fs.StringArray("sender", nil, "envelope sender to try with MAIL FROM (repeatable; default: the [senders] map, else root's sender)")
	rcpt := fs.String("rcpt", doctor.DefaultRcpt, "recipient for the relay test (outside the upstream's own domains)")
	sendTo := fs.String("send-to", "", "send one test message to this address through the queue and wait for its outcome")
	timeout := fs.Duration("timeout", doctor.DefaultTimeout, "limit for each step (DNS, connect, handshake, each reply)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	sendmail := fs.String("sendmail", "/usr/sbin/sendmail", "the sendmail to check (another path after make install PREFIX=...)")
	logFile := fs.String("log-file", "", "relayd's log, to find the upstream's queue id of the --send-to message (default: the journal)")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return sysexits.OK
		}
		fmt.Fprintf(os.Stderr, "relayd doctor: %v\n", err)
		fs.Usage()
		return sysexits.Usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "relayd doctor: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return sysexits.Usage
	}
	path := *cfgPath
	if path == "" {
		path = config.Path()
	}
	// A configuration that does not load is exit 78 with its errors on
	// stderr; with --json also one object (a failed "config" check) on
	// stdout, for the scripts that read it.
	configErr := func(err error) int {
		printConfigErr(err)
		if *asJSON {
			var lines []string
			if es := config.Errors(err); len(es) > 0 {
				for _, e := range es {
					lines = append(lines, e.Error())
				}
			} else {
				lines = append(lines, err.Error())
			}
			rep := &doctor.Report{}
			rep.Add(doctor.Check{Name: doctor.CConfig, Status: doctor.Fail, Saw: strings.Join(lines, "; "),
				Cause: "the configuration does not load: relayd would not start", Fix: "correct what the error names (relayd check-config says the same)"})
			rep.WriteJSON(os.Stdout)
		}
		return sysexits.Config
	}
	cfg, err := config.Load(path)
	if err != nil {
		return configErr(err)
	}
	if !mayRunDoctor(cfg) {
		fmt.Fprintf(os.Stderr, "relayd doctor: run it as root or as relayd's user (mailshim): it reads the upstream secrets and the spool\n")
		return sysexits.NoPerm
	}
	if err := cfg.LoadSecrets(); err != nil {
		return configErr(err)
	}
	if *upN < 0 || *upN > len(cfg.Upstreams) {
		fmt.Fprintf(os.Stderr, "relayd doctor: --upstream %d: the configuration has %d upstream(s)\n", *upN, len(cfg.Upstreams))
		return sysexits.Usage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	lo := doctor.LocalOptions{Config: cfg, Owner: checkOwner(cfg.Spool), Sendmail: *sendmail, Timeout: *timeout}
	if path == config.DefaultPath {
		if l, err := packaging.Layout(); err == nil {
			lo.Layout = l
		}
	}
	rep := &doctor.Report{}
	rep.Add(doctor.Local(ctx, lo)...)

	from := *senders
	var cands []senderOrigin
	if len(from) == 0 {
		cands = configuredOrigins(cfg)
		for _, c := range cands {
			from = append(from, c.Sender)
		}
	} else {
		// Given senders: whoever sends them (a route by user does
		// not apply).
		for _, s := range from {
			cands = append(cands, senderOrigin{RouteOrigin: config.RouteOrigin{Sender: s, UID: -1}})
		}
	}
	perUpstream := routedSenders(cfg, cands)
	var secrets []string
	for i, up := range cfg.Upstreams {
		secrets = append(secrets, up.Password)
		if *upN != 0 && i+1 != *upN {
			continue
		}
		uo := doctor.UpstreamOptions{Hostname: cfg.Hostname, MaxMessageSize: cfg.MaxMessageSize,
			Senders: perUpstream[i], Rcpt: *rcpt, Timeout: *timeout, SASL: (&oauth.Clients{}).Client}
		rep.Add(doctor.Upstream(ctx, i+1, up, uo)...)
	}
	if *sendTo != "" {
		so := doctor.SendOptions{Config: cfg, To: *sendTo, From: firstOr(from, ""), Wait: 2 * time.Minute}
		if *logFile != "" {
			so.Log = func(context.Context, string) string {
				b, _ := os.ReadFile(*logFile)
				return string(b)
			}
		}
		rep.Sent = doctor.SendTest(ctx, so)
	}
	rep.Redact(secrets...)
	if *asJSON {
		err = rep.WriteJSON(os.Stdout)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "relayd doctor: %v\n", err)
		return sysexits.IOErr
	}
	if rep.Failed() {
		return 1
	}
	return sysexits.OK
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// mayRunDoctor: root, the mailshim user, or the user who owns this
// configuration's spool (relayd's user for a private spool).
func mayRunDoctor(cfg *config.Config) bool {
	if os.Geteuid() == 0 {
		return true
	}
	if u, err := user.Lookup("mailshim"); err == nil && u.Uid == fmt.Sprint(os.Geteuid()) {
		return true
	}
	fi, err := os.Stat(cfg.Spool)
	return err == nil && int(fi.Sys().(*syscall.Stat_t).Uid) == os.Geteuid()
}

// senderOrigin is an envelope sender doctor tries and whose mail it is,
// for routing.
type senderOrigin struct {
	config.RouteOrigin
}

// configuredOrigins are the distinct senders the [senders] map gives,
// each with a local user whose mail gets it: for each entry the user it
// names ("uid:N" as that UID's user), for "*" a user without an entry of
// its own (root, else nobody, else one without a name), the sender being
// config.SenderFor's, the rule pickup applies. An entry that another one
// overrides for its user is no one's sender and is not tried. Without
// any, the sender root's mail gets.
func configuredOrigins(cfg *config.Config) []senderOrigin {
	var out []senderOrigin
	seen := map[string]bool{}
	keys := make([]string, 0, len(cfg.Senders))
	for k := range cfg.Senders {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var name string
		var uid int
		switch {
		case k == "*":
			name, uid = starUser(cfg)
		case strings.HasPrefix(k, "uid:"):
			n, err := strconv.Atoi(k[4:])
			if err != nil {
				continue
			}
			name, uid = "", n
			if u, err := user.LookupId(k[4:]); err == nil {
				name = u.Username
			}
		default:
			name, uid = k, -1
			if u, err := user.Lookup(k); err == nil {
				uid, _ = strconv.Atoi(u.Uid)
			}
		}
		v, ok := cfg.SenderFor(name, uid)
		if ok && !seen[v] {
			seen[v] = true
			out = append(out, senderOrigin{config.RouteOrigin{Sender: v, User: name, UID: uid}})
		}
	}
	if len(out) == 0 {
		s, ok := cfg.SenderFor("root", 0)
		if !ok {
			s = "root@" + cfg.Hostname
		}
		out = append(out, senderOrigin{config.RouteOrigin{Sender: s, User: "root", UID: 0}})
	}
	return out
}

// starUser is a local user whose mail the "*" entry of [senders] applies
// to: root or nobody, the first without an entry of its own, else a UID
// without a user name.
func starUser(cfg *config.Config) (string, int) {
	for _, name := range []string{"root", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		_, byName := cfg.Senders[name]
		_, byUID := cfg.Senders["uid:"+u.Uid]
		if !byName && !byUID {
			uid, _ := strconv.Atoi(u.Uid)
			return name, uid
		}
	}
	return "", -1
}

// routedSenders returns, for each upstream (by index), the senders doctor
// tries on it: those of cands whose mail goes through it, as relayd routes
// it ([[route]], routed_only, sender_domains). A route's upstream with
// none of them gets one for the route: a sender of its users ([senders],
// else user@hostname), or postmaster@ its first sender domain; any other
// upstream with none gets postmaster@ its first sender domain, or all of
// cands' senders.
func routedSenders(cfg *config.Config, cands []senderOrigin) [][]string {
	out := make([][]string, len(cfg.Upstreams))
	add := func(i int, s string) {
		for _, x := range out[i] {
			if x == s {
				return
			}
		}
		out[i] = append(out[i], s)
	}
	index := func(name string) int {
		for i, u := range cfg.Upstreams {
			if name != "" && u.Name == name {
				return i
			}
		}
		return -1
	}
	for _, c := range cands {
		ri, ups := config.SelectRoute(cfg.Upstreams, cfg.Routes, c.RouteOrigin)
		if ri >= 0 {
			for _, name := range cfg.Routes[ri].Upstream {
				if i := index(name); i >= 0 {
					add(i, c.Sender)
				}
			}
			continue
		}
		for _, u := range ups {
			for i := range cfg.Upstreams {
				if !cfg.Upstreams[i].RoutedOnly && sameUpstream(cfg.Upstreams[i], u) {
					add(i, c.Sender)
				}
			}
		}
	}
	for _, r := range cfg.Routes {
		for _, name := range r.Upstream {
			i := index(name)
			if i < 0 || len(out[i]) > 0 {
				continue
			}
			switch {
			case len(r.SenderDomains) > 0:
				add(i, "postmaster@"+r.SenderDomains[0])
			default:
				for _, u := range r.Users {
					if strings.HasPrefix(u, "group:") {
						continue
					}
					name, uid := u, -1
					if n, ok := strings.CutPrefix(u, "uid:"); ok {
						name = ""
						uid, _ = strconv.Atoi(n)
						if pw, err := user.LookupId(n); err == nil {
							name = pw.Username
						}
					}
					s, ok := cfg.SenderFor(name, uid)
					if !ok && name != "" {
						s, ok = name+"@"+cfg.Hostname, true
					}
					if ok {
						add(i, s)
					}
				}
			}
		}
	}
	for i, up := range cfg.Upstreams {
		if len(out[i]) > 0 {
			continue
		}
		if len(up.SenderDomains) > 0 {
			add(i, "postmaster@"+up.SenderDomains[0])
			continue
		}
		for _, c := range cands {
			add(i, c.Sender)
		}
	}
	return out
}

// sameUpstream reports whether a and b are the same [[upstream]] entry.
func sameUpstream(a, b config.Upstream) bool {
	return a.Name == b.Name && a.Host == b.Host && a.Port == b.Port && a.Username == b.Username && a.PasswordFile == b.PasswordFile
}
