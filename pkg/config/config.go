// Package config is mailshim's configuration: typed structs, defaults in
// code, a strict TOML parse, validation, and a redacted view for
// check-config. Its Go API is not stable.
//
// sendmail (setgid) loads the same file but only uses the few keys it needs
// (spool, hostname, max_message_size, submit_socket, aliases for -bi); it
// never reads secrets: those are read by relayd alone, through LoadSecrets.
//
// # How to add a key
//
// The structs below are the schema: Load decodes the file into them (see
// decode.go), so a key's name, type, default and documentation live here.
//
//  1. Add a field with a `toml:"key_name"` tag and a doc comment to the
//     section's struct (Config for top-level keys). Supported types: string,
//     bool, int, int64, []string and []int (a single value is a one-element
//     list), time.Duration and []time.Duration ("5m", "4h", "5d"), int64
//     with `conf:"size"` ("50MB"), a struct (a [section]), a []struct (an
//     array of tables, with `each:"noun"` for its error message),
//     map[string]string or map[string][]string (a table of free keys), and
//     a map tagged `conf:"rest"`, which takes every key of its section that
//     no other field names (the [policy.<account>] tables).
//  2. Set its default in defaults() (the zero value needs nothing).
//  3. Check its value in the section's validate method (validate.go), with
//     v.errf(path, ...) so that the error reads "file:line: key: message".
//  4. Print it in Redacted (redact.go) so that check-config shows it.
//  5. Document it in man/mailshim.conf.5.scd (a "*key_name* = _type_" line)
//     and show it, commented out with its default, in packaging/mailshim.conf;
//     TestSchemaDocumented fails until both are done.
//
// A new section is a struct type with its own validate method, a field of
// Config with a `toml:"section"` tag, and a call to its validate method in
// (*Config).validate.
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
	Hostname string `toml:"hostname"`
	// Spool is the spool root (maildrop/ and relayd's queue/ inside).
	Spool string `toml:"spool"`
	// MaxMessageSize in bytes (config: "50MB", "512KB", or a number).
	MaxMessageSize int64 `toml:"max_message_size" conf:"size"`

	// ControlSocket is relayd's control socket (relayd queue, mailq,
	// sendmail -q).
	ControlSocket string `toml:"control_socket"`
	// SubmitSocket is the submission socket sendmail falls back to when it
	// is not setgid.
	SubmitSocket string `toml:"submit_socket"`

	// AliasesFile is an aliases(5) file merged with [aliases] by relayd and
	// by sendmail -bi; "" reads none.
	AliasesFile string `toml:"aliases_file"`

	// Upstreams are the smarthosts, tried in order ([[upstream]]).
	Upstreams []Upstream `toml:"upstream" each:"smarthost"`
	// Routes send the mail of some local users or sender domains through
	// upstreams of their own ([[route]], route.go); the first that
	// matches wins. Mail no route matches uses the upstreams that are not
	// routed_only.
	Routes  []Route `toml:"route" each:"route"`
	Queue   Queue   `toml:"queue"`
	Trace   Trace   `toml:"trace"`
	Log     Log     `toml:"log"`
	Metrics Metrics `toml:"metrics"`

	// Aliases maps a local name to one or more addresses; merged with
	// /etc/aliases (AliasesFile) by relayd and by sendmail -bi.
	Aliases map[string][]string `toml:"aliases"`

	// Senders maps a local user name, "uid:N" or "*" to the address used
	// as envelope sender (and in a bare local From:) for mail that did not
	// give one, so that an upstream refusing foreign senders accepts
	// cron's and root's mail.
	Senders map[string]string `toml:"senders"`

	// Policy is what local users may do ([policy]): the envelope senders
	// each may give, and the per-account limits relayd applies.
	Policy Policy `toml:"policy"`

	// Listen is the loopback SMTP listener ([listen], listen.go).
	Listen Listen `toml:"listen"`

	// Source is the file this was loaded from ("" for defaults).
	Source string `toml:"-"`

	loc     *locator            // key → line, for errors found after Load
	aliases map[string][]string // Aliases merged with AliasesFile (LoadAliases)
}

// Upstream is one smarthost ([[upstream]]). After Load every field has its
// resolved value (WithDefaults): users never default Port, TLS, ServerName
// or Auth again.
type Upstream struct {
	// Name names the upstream for [[route]] upstream lists and the logs;
	// unique. Default "" (unnamed).
	Name string `toml:"name"`
	// RoutedOnly keeps the upstream for the mail of the [[route]]s that
	// name it (a user's own smarthost account): other mail never goes
	// through it. Needs a name.
	RoutedOnly bool `toml:"routed_only"`
	// Host is the smarthost's name or IP address. Required.
	Host string `toml:"host"`
	// Port defaults to 587 for starttls, 465 for tls, 25 for none.
	Port int `toml:"port"`
	// TLS is "starttls" (default), "tls" (implicit) or "none" (loopback
	// hosts only).
	TLS string `toml:"tls"`
	// CAFile holds the trusted CAs (PEM); default: the system roots.
	CAFile string `toml:"ca_file"`
	// ServerName is the name the certificate must carry; default Host.
	ServerName string `toml:"server_name"`
	// ClientCert and ClientKey are an optional client certificate (PEM).
	ClientCert string `toml:"client_cert"`
	ClientKey  string `toml:"client_key"`
	// Username and PasswordFile are SASL credentials, both or neither.
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// Auth lists the SASL mechanisms allowed, in order; default PLAIN, LOGIN.
	Auth []string `toml:"auth"`
	// SenderDomains, when set, limits this upstream to senders in these
	// domains (choice by sender domain); empty means any.
	SenderDomains []string `toml:"sender_domains"`

	// OAuthFlow, when set, makes relayd get the XOAUTH2/OAUTHBEARER
	// bearer token from OAuthTokenURL (pkg/oauth) instead of
	// password_file: "refresh_token" (Gmail, Microsoft 365 delegated) or
	// "client_credentials" (Microsoft 365 app-only).
	OAuthFlow string `toml:"oauth_flow"`
	// OAuthTokenURL is the provider's token endpoint (https).
	OAuthTokenURL string `toml:"oauth_token_url"`
	// OAuthClientID is the application's client ID.
	OAuthClientID string `toml:"oauth_client_id"`
	// OAuthClientSecretFile holds the client secret (required for
	// client_credentials), a secret file like password_file.
	OAuthClientSecretFile string `toml:"oauth_client_secret_file"`
	// OAuthRefreshTokenFile holds the refresh token (refresh_token flow),
	// a secret file like password_file; relayd replaces it when the
	// provider rotates the token and it may.
	OAuthRefreshTokenFile string `toml:"oauth_refresh_token_file"`
	// OAuthScopes are the scopes asked for (the provider's default when
	// empty).
	OAuthScopes []string `toml:"oauth_scopes"`

	// Password is filled in by LoadSecrets (relayd only), never printed.
	Password string `toml:"-"`
}

// Queue holds the retry schedule and limits ([queue]).
type Queue struct {
	// Retry is the schedule of retry intervals; after the last one, every
	// last interval. Default 1m 5m 15m 1h 4h.
	Retry []time.Duration `toml:"retry"`
	// Lifetime is how long a message is retried before it bounces
	// (default 5 days).
	Lifetime time.Duration `toml:"lifetime"`
	// Concurrency is the number of parallel upstream connections
	// (default 4).
	Concurrency int `toml:"concurrency"`
	// ScanInterval is the periodic maildrop scan beside inotify (default 1m).
	ScanInterval time.Duration `toml:"scan_interval"`
	// TempGrace is how old a maildrop temp file must be before relayd
	// removes it as abandoned (default 1h).
	TempGrace time.Duration `toml:"temp_grace"`
	// DelayNotice is how long a message may wait before its sender gets
	// one "delayed" DSN (RFC 3464); 0 sends none. Default 4h.
	DelayNotice time.Duration `toml:"delay_notice"`
	// Timeouts for the SMTP session.
	ConnectTimeout time.Duration `toml:"connect_timeout"` // default 30s
	CommandTimeout time.Duration `toml:"command_timeout"` // default 5m
	DataTimeout    time.Duration `toml:"data_timeout"`    // default 10m
}

// Trace configures the origin header ([trace]).
type Trace struct {
	// Header is the header field's name (default X-Mailshim-Origin).
	Header string `toml:"header"`
	// Fields is a subset of uid, user, script; default all three; [] for
	// no header.
	Fields []string `toml:"fields"`
	// KeyFile, when set, is a secret (like password_file: readable by the
	// daemon user only) with which relayd signs the origin header: it
	// then ends in "id=<queue id> mac=<HMAC>", and relayd verify-origin
	// tells a genuine one from a copy. "" (the default): no signature.
	KeyFile string `toml:"key_file"`

	// Key is KeyFile's content, read by LoadSecrets (relayd only).
	Key string `toml:"-"`
}

// Metrics configures relayd's Prometheus endpoint ([metrics]).
type Metrics struct {
	// Listen is where relayd serves /metrics: a loopback address and port
	// ("127.0.0.1:9154", "[::1]:9154", "localhost:9154") or the absolute
	// path of a Unix socket. "" (the default): no endpoint.
	Listen string `toml:"listen"`
	// TopAccounts is how many accounts, besides those [policy] names, get
	// an account label of their own (the busiest); the rest are "other".
	// Default 20.
	TopAccounts int `toml:"top_accounts"`
}

// Log configures relayd's logging ([log]).
type Log struct {
	// Protocol enables the SMTP protocol trace (redacted) on stderr.
	Protocol bool `toml:"protocol"`
}

// Default returns the configuration with every default filled in,
// including the host name (DefaultHostname).
func Default() *Config {
	c := defaults()
	c.Hostname = DefaultHostname()
	return c
}

// defaults is Default without the host name, which Load fills in only when
// the file does not set it. Defaults of [[upstream]] elements, which depend
// on other keys, are in (Upstream).WithDefaults.
func defaults() *Config {
	return &Config{
		Spool:          DefaultSpool,
		MaxMessageSize: 50 << 20,
		ControlSocket:  "/run/mailshim/control.sock",
		SubmitSocket:   "/run/mailshim/submit.sock",
		AliasesFile:    "/etc/aliases",
		Queue: Queue{
			Retry:          []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour},
			Lifetime:       5 * 24 * time.Hour,
			DelayNotice:    4 * time.Hour,
			Concurrency:    4,
			ScanInterval:   time.Minute,
			TempGrace:      time.Hour,
			ConnectTimeout: 30 * time.Second,
			CommandTimeout: 5 * time.Minute,
			DataTimeout:    10 * time.Minute,
		},
		Trace:   Trace{Header: "X-Mailshim-Origin", Fields: []string{"uid", "user", "script"}},
		Policy:  Policy{NoticeTo: "root"},
		Metrics: Metrics{TopAccounts: 20},
		Listen:  defaultListen(),
	}
}

// defaultPorts is the port of each TLS mode.
var defaultPorts = map[string]int{"starttls": 587, "tls": 465, "none": 25}

// WithDefaults returns u with every unset field resolved: TLS "starttls",
// Port from the TLS mode, ServerName Host, Auth PLAIN and LOGIN. Load
// applies it to every [[upstream]]; code that builds an Upstream by hand
// (tests) calls it too.
func (u Upstream) WithDefaults() Upstream {
	if u.TLS == "" {
		u.TLS = "starttls"
	}
	if u.Port == 0 {
		u.Port = defaultPorts[u.TLS]
	}
	if u.ServerName == "" {
		u.ServerName = u.Host
	}
	if len(u.Auth) == 0 {
		u.Auth = []string{"PLAIN", "LOGIN"}
		if u.OAuthFlow != "" {
			u.Auth = []string{"XOAUTH2", "OAUTHBEARER"}
		}
	}
	return u
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
