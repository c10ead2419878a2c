package config

import (
	"os"
	"strings"
)

// MailnamePath is Debian's file naming the host in mail (mailname(5)).
const MailnamePath = "/etc/mailname"

// DefaultHostname returns the first line of /etc/mailname, trimmed, or else
// the system host name, or else "localhost".
func DefaultHostname() string {
	return defaultHostname(MailnamePath)
}

func defaultHostname(mailname string) string {
	if b, err := os.ReadFile(mailname); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		if line = strings.TrimSpace(line); line != "" && validDomain(line) {
			return strings.TrimSuffix(line, ".")
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// LocalDomain reports whether domain names this host in mail: hostname
// (the configured one, else DefaultHostname), localhost,
// localhost.localdomain or the system host name when it is short (no dot),
// much as Postfix's mydestination and exim's local_domains "@:localhost"
// have it (fail2ban's jail.conf mails root@localhost from root@<its host
// name>). An address at such a domain is a local name, as a bare one is.
// A system host name with a dot is not taken: it may be a domain with
// real mailboxes elsewhere (a one-server site whose host is named after
// the site), whose mail must leave as it is and whose addresses a local
// user may not claim; a fully qualified name of this host is hostname.
func LocalDomain(hostname, domain string) bool {
	if domain == "" {
		return false
	}
	if strings.EqualFold(domain, hostname) || strings.EqualFold(domain, "localhost") || strings.EqualFold(domain, "localhost.localdomain") {
		return true
	}
	// Only a short system host name counts, so a domain with a dot (every
	// address that leaves this host) is decided without asking the
	// system: pickup asks once per address.
	if strings.Contains(domain, ".") {
		return false
	}
	h, err := os.Hostname()
	return err == nil && h != "" && strings.EqualFold(domain, h)
}
