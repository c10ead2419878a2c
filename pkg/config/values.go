package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Size units are binary: 1KB = 1024 bytes, as in Default's 50 << 20.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
	{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1},
}

// maxSize bounds every size so that arithmetic on it cannot overflow.
const maxSize = 1 << 40

// ParseSize parses "50MB", "512KB", "1GB", "1000" (bytes). Units are
// binary (1KB = 1024), case-insensitive; KiB/MiB/GiB are accepted too.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	if t == "" || strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("%q is not a size (write e.g. \"50MB\", \"512KB\", \"1GB\" or a number of bytes)", s)
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > maxSize/mult {
		return 0, fmt.Errorf("%q is too large (at most 1024GB)", s)
	}
	return n * mult, nil
}

// FormatSize is ParseSize's inverse: the largest exact unit.
func FormatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KB"
	}
	return strconv.FormatInt(n, 10)
}

var durationUnits = map[string]time.Duration{
	"s": time.Second, "m": time.Minute, "h": time.Hour,
	"d": 24 * time.Hour, "w": 7 * 24 * time.Hour,
}

// maxDuration bounds durations (about 10 years) against overflow.
const maxDuration = 10 * 365 * 24 * time.Hour

// ParseDuration parses "30s", "1m", "4h", "5d", "2w" and sums such as
// "1h30m". Counts are whole numbers; there is no unit smaller than s.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a duration (write e.g. \"30s\", \"5m\", \"4h\", \"5d\" or \"1h30m\")", s)
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, bad
	}
	var total time.Duration
	for t != "" {
		i := 0
		for i < len(t) && t[i] >= '0' && t[i] <= '9' {
			i++
		}
		if i == 0 || i > 9 || i == len(t) {
			return 0, bad
		}
		n, _ := strconv.Atoi(t[:i])
		unit, ok := durationUnits[strings.ToLower(t[i:i+1])]
		if !ok {
			return 0, bad
		}
		total += time.Duration(n) * unit
		if total > maxDuration {
			return 0, fmt.Errorf("%q is too long (at most 10 years)", s)
		}
		t = t[i+1:]
	}
	return total, nil
}

// FormatDuration is ParseDuration's inverse ("1h30m", "5d", "0s").
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.d; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10) + u.unit)
			d -= n * u.d
		}
	}
	if b.Len() == 0 { // below one second: not writable in the file
		return d.String()
	}
	return b.String()
}

// validDomain reports whether s looks like a host or domain name:
// dot-separated labels of letters, digits, '-' and '_', no empty label.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// validHost accepts a domain name or an IP address literal (IPv6 without
// brackets).
func validHost(s string) bool {
	return net.ParseIP(s) != nil || validDomain(s)
}

// isLoopback reports whether host is "localhost" or a loopback IP literal
// (127.0.0.0/8, ::1). No name resolution: Load stays cheap and offline.
func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkLocalPart refuses what cannot appear in an unquoted local part.
func checkLocalPart(s string) error {
	if s == "" {
		return errors.New("empty local part")
	}
	if len(s) > 64 {
		return errors.New("local part longer than 64 octets")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),:;<>@[\]`, c) >= 0 {
			return fmt.Errorf("character %q not allowed in a local part", c)
		}
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return errors.New("misplaced dot in local part")
	}
	return nil
}

// checkAddress validates a bare mailbox "local@domain": no display name,
// no angle brackets, no white space or control characters.
func checkAddress(s string) error {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return fmt.Errorf("%q is not an address (want local@domain)", s)
	}
	if err := checkLocalPart(s[:at]); err != nil {
		return fmt.Errorf("%q is not an address: %v", s, err)
	}
	if !validDomain(s[at+1:]) {
		return fmt.Errorf("%q is not an address: bad domain %q", s, s[at+1:])
	}
	return nil
}

// checkPath validates an absolute file system path.
func checkPath(s string) error {
	if !strings.HasPrefix(s, "/") {
		return fmt.Errorf("%q is not an absolute path", s)
	}
	if strings.ContainsAny(s, "\x00\n\r") {
		return fmt.Errorf("%q contains a control character", s)
	}
	return nil
}

// checkHeaderName validates a header field name (RFC 5322 section 3.6.8:
// printable US-ASCII except colon).
func checkHeaderName(s string) error {
	if s == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return fmt.Errorf("%q is not a header field name (printable ASCII, no colon or space)", s)
		}
	}
	return nil
}

// checkUserName accepts POSIX-ish login names (letters, digits, . _ - and a
// final $), the keys of [senders].
func checkUserName(s string) error {
	if s == "" || len(s) > 256 || s[0] == '-' {
		return fmt.Errorf("%q is not a user name", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || (c == '$' && i == len(s)-1)
		if !ok {
			return fmt.Errorf("%q is not a user name, \"uid:N\" or \"*\"", s)
		}
	}
	return nil
}

// checkTokenURL validates an OAuth2 token endpoint: https, or http to a
// loopback host (tests, a local token proxy). (No net/url here: sendmail
// links this package and stays small.)
func checkTokenURL(s string) error {
	rest, https := strings.CutPrefix(s, "https://")
	if !https {
		var ok bool
		if rest, ok = strings.CutPrefix(s, "http://"); !ok {
			return fmt.Errorf("%q: the token endpoint must be an https:// URL", s)
		}
	}
	host, _, _ := strings.Cut(rest, "/")
	if host == "" || strings.ContainsAny(s, " \t\x00\r\n") {
		return fmt.Errorf("%q is not a URL", s)
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if !https && !isLoopback(host) {
		return fmt.Errorf("%q: the token endpoint must be https (http only for a loopback host)", s)
	}
	return nil
}
