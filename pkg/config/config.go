// Package config is mailshim's configuration: one struct, defaults in code,
// a strict TOML parse, validation, and a redacted view for check-config.
//
// sendmail (setgid) loads the same file but only uses the few keys it needs
// (spool, hostname, max_message_size, submit_socket, aliases for -bi); it
// never reads secrets: those are read by relayd alone, through LoadSecrets.
package config

import (
	"os"
	"time"
)

// DefaultPath is the system configuration file.
const DefaultPath = "/etc/mailshim/mailshim.conf"

// Config is the whole configuration.
type Config struct {
	// Hostname names this machine in Received:, Message-ID: and default
	// senders. Default: /etc/mailname, else the system host name.
	Hostname string
	// Spool is the spool root (maildrop/ and relayd's queue/ inside).
	Spool string
	// MaxMessageSize in bytes (config: "50MB", "512KB", or a number).
	MaxMessageSize int64

	ControlSocket string // default /run/mailshim/control.sock
	SubmitSocket  string // default /run/mailshim/submit.sock

	Upstreams []Upstream
	Queue     Queue
	Trace     Trace
	Log       Log

	// Aliases maps a local name to one or more addresses; merged with
	// /etc/aliases (AliasesFile) by relayd and by sendmail -bi.
	Aliases     map[string][]string
	AliasesFile string // default /etc/aliases; "" disables

	// Senders maps a local user name, "uid:N" or "*" to the address used
	// as envelope sender (and in a bare local From:) for mail that did not
	// give one, so that an upstream refusing foreign senders accepts
	// cron's and root's mail.
	Senders map[string]string

	// Policy is what local users may do ([policy]): the envelope senders
	// each may give. The zero value allows everything.
	Policy Policy

	// Source is the file this was loaded from ("" for defaults).
	Source string

	loc     *locator            // key → line, for errors found after Load
	aliases map[string][]string // Aliases merged with AliasesFile (LoadAliases)
}

// Upstream is one smarthost.
type Upstream struct {
	Host         string
	Port         int    // default 587 for starttls, 465 for tls, 25 for none
	TLS          string // "starttls" (default), "tls", "none" (loopback only)
	CAFile       string // default: system roots
	ServerName   string // TLS name to verify; default Host
	ClientCert   string // optional client certificate (PEM)
	ClientKey    string
	Username     string
	PasswordFile string
	Auth         []string // SASL mechanisms allowed, default PLAIN, LOGIN
	// SenderDomains, when set, limits this upstream to senders in these
	// domains (choice by sender domain); empty means any.
	SenderDomains []string

	// Password is filled in by LoadSecrets (relayd only), never printed.
	Password string `toml:"-"`
}

// Queue holds the retry schedule and limits.
type Queue struct {
	Retry       []time.Duration // default 1m 5m 15m 1h 4h, then every last interval
	Lifetime    time.Duration   // default 5 days
	Concurrency int             // parallel upstream connections, default 4
	// ScanInterval is the periodic maildrop scan beside inotify (default 1m).
	ScanInterval time.Duration
	// TempGrace is how old a maildrop temp file must be before relayd
	// removes it as abandoned (default 1h).
	TempGrace time.Duration
	// Timeouts for the SMTP session.
	ConnectTimeout time.Duration // default 30s
	CommandTimeout time.Duration // default 5m
	DataTimeout    time.Duration // default 10m
}

// Trace configures the origin header.
type Trace struct {
	Header string   // default X-Mailshim-Origin
	Fields []string // subset of uid, user, script; default all three; [] for no header
}

// Log configures relayd's logging.
type Log struct {
	// Protocol enables the SMTP protocol trace (redacted) on stderr.
	Protocol bool
}

// Default returns the configuration with every default filled in,
// including the host name (DefaultHostname).
func Default() *Config {
	c := defaults()
	c.Hostname = DefaultHostname()
	return c
}

// defaults is Default without the host name, which Load fills in only when
// the file does not set it.
func defaults() *Config {
	return &Config{
		Spool:          "/var/spool/mailshim",
		MaxMessageSize: 50 << 20,
		ControlSocket:  "/run/mailshim/control.sock",
		SubmitSocket:   "/run/mailshim/submit.sock",
		AliasesFile:    "/etc/aliases",
		Queue: Queue{
			Retry:          []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour},
			Lifetime:       5 * 24 * time.Hour,
			Concurrency:    4,
			ScanInterval:   time.Minute,
			TempGrace:      time.Hour,
			ConnectTimeout: 30 * time.Second,
			CommandTimeout: 5 * time.Minute,
			DataTimeout:    10 * time.Minute,
		},
		Trace: Trace{Header: "X-Mailshim-Origin", Fields: []string{"uid", "user", "script"}},
	}
}

// Path returns the configuration file to use: MAILSHIM_CONFIG when the
// process is not running setuid/setgid (real and effective IDs equal),
// else DefaultPath. A setgid sendmail never lets the caller pick the file.
func Path() string {
	if p := os.Getenv("MAILSHIM_CONFIG"); p != "" && !Privileged() {
		return p
	}
	return DefaultPath
}

// Privileged reports whether the process runs with effective IDs that
// differ from its real ones (setuid or setgid).
func Privileged() bool {
	return os.Getuid() != os.Geteuid() || os.Getgid() != os.Getegid()
}
