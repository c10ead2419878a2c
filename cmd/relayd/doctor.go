package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"sort"
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
	cfg, err := config.Load(path)
	if err != nil {
		printConfigErr(err)
		return sysexits.Config
	}
	if !mayRunDoctor(cfg) {
		fmt.Fprintf(os.Stderr, "relayd doctor: run it as root or as relayd's user (mailshim): it reads the upstream secrets and the spool\n")
		return sysexits.NoPerm
	}
	if err := cfg.LoadSecrets(); err != nil {
		printConfigErr(err)
		return sysexits.Config
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
	if len(from) == 0 {
		from = configuredSenders(cfg)
	}
	var secrets []string
	for i, up := range cfg.Upstreams {
		secrets = append(secrets, up.Password)
		if *upN != 0 && i+1 != *upN {
			continue
		}
		uo := doctor.UpstreamOptions{Hostname: cfg.Hostname, MaxMessageSize: cfg.MaxMessageSize,
			Senders: sendersFor(up, from), Rcpt: *rcpt, Timeout: *timeout, SASL: (&oauth.Clients{}).Client}
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

// configuredSenders are the distinct senders of the [senders] map ("@d"
// entries as root@d), else the sender root's mail gets.
func configuredSenders(cfg *config.Config) []string {
	var out []string
	seen := map[string]bool{}
	keys := make([]string, 0, len(cfg.Senders))
	for k := range cfg.Senders {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := cfg.Senders[k]
		if strings.HasPrefix(v, "@") {
			v = "root" + v
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		s, ok := cfg.SenderFor("root", 0)
		if !ok {
			s = "root@" + cfg.Hostname
		}
		out = append(out, s)
	}
	return out
}

// sendersFor keeps the senders this upstream may carry (sender_domains).
func sendersFor(up config.Upstream, from []string) []string {
	if len(up.SenderDomains) == 0 {
		return from
	}
	var out []string
	for _, s := range from {
		_, d, _ := strings.Cut(s, "@")
		for _, sd := range up.SenderDomains {
			if strings.EqualFold(d, sd) {
				out = append(out, s)
				break
			}
		}
	}
	if len(out) == 0 {
		return []string{"postmaster@" + up.SenderDomains[0]}
	}
	return out
}
