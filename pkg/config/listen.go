package config

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"time"
)

// Listen is the loopback SMTP listener ([listen]): the door for
// applications that speak SMTP to 127.0.0.1, [::1] or a Unix socket.
// Under systemd, relayd.socket binds the TCP ports and the socket and
// passes them to relayd; Addresses, Ports and Socket are what relayd binds
// itself for what systemd did not pass (relayd started by hand).
type Listen struct {
	// Enabled serves the listener. Default: true for the system spool,
	// false for a private spool (tests, the demo), so that a private
	// instance never takes ports 25 and 587 from the system's relayd.
	Enabled bool `toml:"enabled"`
	// Addresses relayd binds (loopback addresses only: the listener
	// serves this host, never the network). Default 127.0.0.1 and ::1.
	Addresses []string `toml:"addresses"`
	// Ports relayd binds on each address (0: any free port, logged).
	// Default 25 and 587.
	Ports []int `toml:"ports"`
	// Socket is the Unix socket ("" for none). Default
	// /run/mailshim/smtp.sock, <spool>/smtp.sock for a private spool.
	Socket string `toml:"socket"`
	// CertFile and KeyFile are the certificate (PEM, the chain after the
	// leaf) and key for STARTTLS; when they do not exist, STARTTLS is not
	// offered. Default: what relayd tls-init makes.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// MaxConnections and MaxConnectionsPerUID cap the sessions served at
	// once, in all and per local user (default 100 and 10); four times as
	// many may wait up to 30 s for a slot, more are refused with 421.
	MaxConnections       int `toml:"max_connections"`
	MaxConnectionsPerUID int `toml:"max_connections_per_uid"`
	// MaxRecipients bounds RCPT TO per message (default 20000, as for
	// sendmail).
	MaxRecipients int `toml:"max_recipients"`
	// MaxLineLength bounds every line, command or data (default 65536).
	MaxLineLength int `toml:"max_line_length"`
	// Timeouts: CommandTimeout for each command (default 5m), DataTimeout
	// for a whole DATA section (10m), IdleTimeout between bytes of it
	// (3m), SessionTimeout for a whole connection (1h).
	CommandTimeout time.Duration `toml:"command_timeout"`
	DataTimeout    time.Duration `toml:"data_timeout"`
	IdleTimeout    time.Duration `toml:"idle_timeout"`
	SessionTimeout time.Duration `toml:"session_timeout"`
}

// SpoolSMTPSocket is the listener's socket inside a private spool.
const SpoolSMTPSocket = "smtp.sock"

// Default certificate of the listener (made by relayd tls-init).
const (
	DefaultListenCert = "/etc/mailshim/tls/local.crt"
	DefaultListenKey  = "/etc/mailshim/tls/local.key"
)

func defaultListen() Listen {
	return Listen{
		Enabled:              true,
		Addresses:            []string{"127.0.0.1", "::1"},
		Ports:                []int{25, 587},
		Socket:               "/run/mailshim/smtp.sock",
		CertFile:             DefaultListenCert,
		KeyFile:              DefaultListenKey,
		MaxConnections:       100,
		MaxConnectionsPerUID: 10,
		MaxRecipients:        20000,
		MaxLineLength:        64 << 10,
		CommandTimeout:       5 * time.Minute,
		DataTimeout:          10 * time.Minute,
		IdleTimeout:          3 * time.Minute,
		SessionTimeout:       time.Hour,
	}
}

// validate checks [listen] (at p).
func (l *Listen) validate(v validator, p []string) {
	at := func(k string) []string { return sub(p, k) }
	for _, a := range l.Addresses {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			v.errf(at("addresses"), "%q is not an IP address", a)
		case !ip.Unmap().IsLoopback():
			v.errf(at("addresses"), "%q is not a loopback address: the listener serves this host only, never the network", a)
		}
	}
	for _, n := range l.Ports {
		if n < 0 || n > 65535 {
			v.errf(at("ports"), "%d is out of range (0..65535)", n)
		}
	}
	v.path(at("socket"), l.Socket, true)
	v.path(at("cert_file"), l.CertFile, true)
	v.path(at("key_file"), l.KeyFile, true)
	if (l.CertFile == "") != (l.KeyFile == "") {
		v.errf(at("cert_file"), "cert_file and key_file go together: set both, or both to \"\" for no STARTTLS")
	}
	v.intRange(at("max_connections"), l.MaxConnections, 1, 100000)
	v.intRange(at("max_connections_per_uid"), l.MaxConnectionsPerUID, 1, 100000)
	v.intRange(at("max_recipients"), l.MaxRecipients, 1, 20000)
	v.intRange(at("max_line_length"), l.MaxLineLength, 1000, 1<<20)
	for k, d := range map[string]time.Duration{"command_timeout": l.CommandTimeout, "data_timeout": l.DataTimeout,
		"idle_timeout": l.IdleTimeout, "session_timeout": l.SessionTimeout} {
		if d <= 0 && v.has(at(k)...) {
			v.errf(at(k), "must be longer than 0")
		}
	}
}

// place applies the private-spool defaults (see placeSockets): a private
// spool serves no listener unless the file enables it, and its socket is
// <spool>/smtp.sock unless the file names one.
func (l *Listen) place(spool string, set func(key string) bool) {
	if filepath.Clean(spool) == DefaultSpool {
		return
	}
	if !set("enabled") {
		l.Enabled = false
	}
	if !set("socket") {
		l.Socket = filepath.Join(spool, SpoolSMTPSocket)
	}
}

// redact prints [listen] for Redacted.
func (l *Listen) redact(w func(format string, args ...any)) {
	w("\n[listen]\n")
	w("enabled = %t\n", l.Enabled)
	w("addresses = %s\n", quoteList(l.Addresses))
	ports := "["
	for i, n := range l.Ports {
		if i > 0 {
			ports += ", "
		}
		ports += strconv.Itoa(n)
	}
	w("ports = %s]\n", ports)
	w("socket = %s\n", quote(l.Socket))
	w("cert_file = %s\n", quote(l.CertFile))
	w("key_file = %s\n", quote(l.KeyFile))
	w("max_connections = %d\n", l.MaxConnections)
	w("max_connections_per_uid = %d\n", l.MaxConnectionsPerUID)
	w("max_recipients = %d\n", l.MaxRecipients)
	w("max_line_length = %d\n", l.MaxLineLength)
	w("command_timeout = %s\n", quote(FormatDuration(l.CommandTimeout)))
	w("data_timeout = %s\n", quote(FormatDuration(l.DataTimeout)))
	w("idle_timeout = %s\n", quote(FormatDuration(l.IdleTimeout)))
	w("session_timeout = %s\n", quote(FormatDuration(l.SessionTimeout)))
}
