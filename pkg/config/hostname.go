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
