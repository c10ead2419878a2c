package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
)

// MaxFileSize bounds the configuration file; Load refuses larger files.
const MaxFileSize = 1 << 20

// Error is one configuration error, printed as "<file>:<line>: <key>: <msg>".
// Key is the dotted key without array indices ("upstream.tls"); Line is 0
// when unknown.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

// Errors lists the *Error values in err (one, or several joined by Load).
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var e *Error
		if errors.As(err, &e) {
			out = append(out, e)
		}
	}
	walk(err)
	return out
}

// Load reads and validates the file at path, on top of the defaults. It
// never reads secrets (see LoadSecrets), never touches the network and never
// resolves names: sendmail runs it at every call.
//
// The file must not be writable by every user, and when the process runs
// setuid/setgid it must belong to root.
//
// A missing file is returned as an error that satisfies
// errors.Is(err, fs.ErrNotExist); callers decide whether Default() will do.
// Every other error lists all problems found, one *Error per line (see
// Errors), sorted by line.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{File: path, Key: "file", Msg: "not a regular file"}
	}
	// Whoever can write this file chooses where every local message goes.
	if fi.Mode().Perm()&0o002 != 0 {
		return nil, &Error{File: path, Key: "file", Msg: fmt.Sprintf("mode %04o: writable by every user; run chmod o-w %s", fi.Mode().Perm(), path)}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && Privileged() && st.Uid != 0 {
		return nil, &Error{File: path, Key: "file", Msg: fmt.Sprintf("owned by uid %d, not root; run chown root %s", st.Uid, path)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: path, Key: "file", Msg: fmt.Sprintf("larger than %d bytes", MaxFileSize)}
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			key := pe.LastKey
			if key == "" {
				key = "syntax"
			}
			line := pe.Position.Line
			if line <= 0 { // toml v1.6 leaves it 0 for some errors at the end of input
				start := min(max(pe.Position.Start, 0), len(data))
				line = 1 + bytes.Count(data[:start], []byte("\n"))
			}
			return nil, &Error{File: name, Line: line, Key: key, Msg: pe.Message}
		}
		return nil, &Error{File: name, Key: "syntax", Msg: err.Error()}
	}
	l := &loader{file: name, loc: locate(string(data)), c: defaults()}
	l.c.Source = name
	l.c.loc = l.loc
	l.top(raw)
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(i, j int) bool { return l.errs[i].Line < l.errs[j].Line })
		errs := make([]error, len(l.errs))
		for i, e := range l.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	if l.c.Hostname == "" {
		l.c.Hostname = DefaultHostname()
	}
	l.c.placeSockets(func(k string) bool { _, ok := raw[k]; return ok })
	return l.c, nil
}

type loader struct {
	file string
	loc  *locator
	c    *Config
	errs []*Error
}

// errf records an error about the key at path (array indices included).
func (l *loader) errf(path []string, format string, args ...any) {
	l.errs = append(l.errs, &Error{
		File: l.file,
		Line: l.loc.line(path...),
		Key:  displayKey(path),
		Msg:  fmt.Sprintf(format, args...),
	})
}

// displayKey drops array indices: "upstream.\x001.host" → "upstream.host".
func displayKey(path []string) string {
	var parts []string
	for _, p := range path {
		if strings.HasPrefix(p, "\x00") {
			continue
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ".")
}

func sub(path []string, k string) []string {
	return append(append(make([]string, 0, len(path)+1), path...), k)
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date"
	case map[string]any:
		return "a table"
	case []map[string]any, []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// Typed getters: each records an error and returns ok=false on a mismatch.

func (l *loader) str(path []string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		l.errf(path, "must be a string, not %s", typeName(v))
	}
	return s, ok
}

func (l *loader) strList(path []string, v any) ([]string, bool) {
	if s, ok := v.(string); ok { // a single string is a one-element list
		return []string{s}, true
	}
	arr, ok := v.([]any)
	if !ok {
		l.errf(path, "must be an array of strings, not %s", typeName(v))
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			l.errf(path, "element %d must be a string, not %s", i+1, typeName(e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (l *loader) table(path []string, v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		l.errf(path, "must be a table ([%s]), not %s", displayKey(path), typeName(v))
	}
	return m, ok
}

func (l *loader) path(p []string, v any) (string, bool) {
	s, ok := l.str(p, v)
	if !ok {
		return "", false
	}
	if err := checkPath(s); err != nil {
		l.errf(p, "%v", err)
		return "", false
	}
	return s, true
}

// optPath is a path where "" means unset.
func (l *loader) optPath(p []string, v any) (string, bool) {
	if s, ok := v.(string); ok && s == "" {
		return "", true
	}
	return l.path(p, v)
}

func (l *loader) duration(p []string, v any) (time.Duration, bool) {
	s, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			l.errf(p, "must be a duration string with a unit, e.g. \"%ds\"", n)
		} else {
			l.errf(p, "must be a duration string (e.g. \"5m\"), not %s", typeName(v))
		}
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		l.errf(p, "%v", err)
		return 0, false
	}
	if d <= 0 {
		l.errf(p, "must be longer than zero")
		return 0, false
	}
	return d, true
}

func (l *loader) integer(p []string, v any, min, max int64) (int64, bool) {
	n, ok := v.(int64)
	if !ok {
		l.errf(p, "must be an integer, not %s", typeName(v))
		return 0, false
	}
	if n < min || n > max {
		l.errf(p, "%d is out of range (%d..%d)", n, min, max)
		return 0, false
	}
	return n, true
}

func (l *loader) unknown(path []string, k string) {
	p := sub(path, k)
	if sec := sectionOf(k); sec != "" && (len(path) == 0 || !strings.Contains(sec, "["+path[0]+"]")) {
		l.errf(p, "unknown key (it belongs in %s)", sec)
		return
	}
	if len(path) > 0 && topLevelKey(k) {
		l.errf(p, "unknown key (it belongs at the top of the file, before any [section])")
		return
	}
	l.errf(p, "unknown key")
}

func topLevelKey(k string) bool {
	switch k {
	case "hostname", "spool", "max_message_size", "control_socket", "submit_socket", "aliases_file":
		return true
	}
	return false
}

// sectionOf names the section a misplaced top-level key belongs in.
func sectionOf(k string) string {
	switch k {
	case "host", "port", "tls", "ca_file", "server_name", "client_cert", "client_key",
		"username", "password_file", "auth", "sender_domains":
		return "[[upstream]]"
	case "retry", "lifetime", "concurrency", "scan_interval", "temp_grace",
		"connect_timeout", "command_timeout", "data_timeout":
		return "[queue]"
	case "header", "fields":
		return "[trace]"
	case "protocol":
		return "[log]"
	case "allowed_senders":
		return "[policy]"
	}
	return ""
}

// keys returns m's keys in the order they are written in the file (then by
// name), so that "defined twice" is reported on the later line and the
// result is deterministic.
func (l *loader) keys(path []string, m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := l.loc.line(sub(path, keys[i])...), l.loc.line(sub(path, keys[j])...)
		if li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	return keys
}

func (l *loader) top(raw map[string]any) {
	c := l.c
	for _, k := range l.keys(nil, raw) {
		v := raw[k]
		p := []string{k}
		switch k {
		case "hostname":
			if s, ok := l.str(p, v); ok {
				if !validDomain(s) {
					l.errf(p, "%q is not a host name", s)
				} else {
					c.Hostname = strings.TrimSuffix(s, ".")
				}
			}
		case "spool":
			if s, ok := l.path(p, v); ok {
				c.Spool = s
			}
		case "max_message_size":
			var n int64
			var err error
			switch x := v.(type) {
			case string:
				n, err = ParseSize(x)
			case int64:
				n, err = ParseSize(strconv.FormatInt(x, 10))
				if x < 0 {
					err = fmt.Errorf("%d is negative", x)
				}
			default:
				err = fmt.Errorf("must be a size like \"50MB\", not %s", typeName(v))
			}
			switch {
			case err != nil:
				l.errf(p, "%v", err)
			case n <= 0:
				l.errf(p, "must be larger than zero")
			default:
				c.MaxMessageSize = n
			}
		case "control_socket":
			if s, ok := l.path(p, v); ok {
				c.ControlSocket = s
			}
		case "submit_socket":
			if s, ok := l.path(p, v); ok {
				c.SubmitSocket = s
			}
		case "aliases_file":
			if s, ok := l.optPath(p, v); ok {
				c.AliasesFile = s
			}
		case "upstream":
			l.upstreams(p, v)
		case "queue":
			if m, ok := l.table(p, v); ok {
				l.queue(p, m)
			}
		case "trace":
			if m, ok := l.table(p, v); ok {
				l.trace(p, m)
			}
		case "log":
			if m, ok := l.table(p, v); ok {
				l.log(p, m)
			}
		case "aliases":
			if m, ok := l.table(p, v); ok {
				l.aliases(p, m)
			}
		case "senders":
			if m, ok := l.table(p, v); ok {
				l.senders(p, m)
			}
		case "policy":
			if m, ok := l.table(p, v); ok {
				l.policy(p, m)
			}
		default:
			l.unknown(nil, k)
		}
	}
}

func (l *loader) upstreams(p []string, v any) {
	var list []map[string]any
	switch x := v.(type) {
	case []map[string]any:
		list = x
	case []any: // upstream = [{...}, {...}]
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				l.errf(sub(p, index(i)), "must be a table, not %s", typeName(e))
				return
			}
			list = append(list, m)
		}
	case map[string]any:
		l.errf(p, "write [[upstream]] (an array of tables, one per smarthost), not [upstream]")
		return
	default:
		l.errf(p, "must be [[upstream]] tables, not %s", typeName(v))
		return
	}
	for i, m := range list {
		u, ok := l.upstream(sub(p, index(i)), m)
		if ok {
			l.c.Upstreams = append(l.c.Upstreams, u)
		}
	}
}

// Auth mechanisms mailshim can use: what go-sasl implements as a client.
var authMechs = []string{"PLAIN", "LOGIN", "OAUTHBEARER"}

func (l *loader) upstream(p []string, m map[string]any) (Upstream, bool) {
	u := Upstream{}
	nerr := len(l.errs)
	portSet := false
	for _, k := range l.keys(p, m) {
		v := m[k]
		kp := sub(p, k)
		switch k {
		case "host":
			if s, ok := l.str(kp, v); ok {
				if !validHost(s) {
					l.errf(kp, "%q is not a host name or IP address", s)
				}
				u.Host = s
			}
		case "port":
			if n, ok := l.integer(kp, v, 1, 65535); ok {
				u.Port = int(n)
				portSet = true
			}
		case "tls":
			if s, ok := l.str(kp, v); ok {
				switch s {
				case "starttls", "tls", "none":
					u.TLS = s
				default:
					l.errf(kp, "%q is not one of starttls, tls, none", s)
				}
			}
		case "ca_file":
			u.CAFile, _ = l.optPath(kp, v)
		case "server_name":
			if s, ok := l.str(kp, v); ok {
				if s != "" && !validHost(s) {
					l.errf(kp, "%q is not a host name", s)
				}
				u.ServerName = s
			}
		case "client_cert":
			u.ClientCert, _ = l.optPath(kp, v)
		case "client_key":
			u.ClientKey, _ = l.optPath(kp, v)
		case "username":
			if s, ok := l.str(kp, v); ok {
				if strings.ContainsAny(s, "\x00\r\n") {
					l.errf(kp, "contains a control character")
				}
				u.Username = s
			}
		case "password_file":
			u.PasswordFile, _ = l.optPath(kp, v)
		case "auth":
			if list, ok := l.strList(kp, v); ok {
				if len(list) == 0 {
					l.errf(kp, "must name at least one mechanism (%s)", strings.Join(authMechs, ", "))
				}
				for _, mech := range list {
					mech = strings.ToUpper(mech)
					switch {
					case slices.Contains(authMechs, mech):
						if !slices.Contains(u.Auth, mech) {
							u.Auth = append(u.Auth, mech)
						}
					case mech == "XOAUTH2":
						l.errf(kp, "XOAUTH2 is not supported (go-sasl has no client for it); use OAUTHBEARER")
					default:
						l.errf(kp, "%q is not a supported mechanism (%s)", mech, strings.Join(authMechs, ", "))
					}
				}
			}
		case "sender_domains":
			if list, ok := l.strList(kp, v); ok {
				for _, d := range list {
					d = strings.ToLower(strings.TrimSuffix(d, "."))
					if !validDomain(d) {
						l.errf(kp, "%q is not a domain", d)
						continue
					}
					u.SenderDomains = append(u.SenderDomains, d)
				}
			}
		case "password":
			l.errf(kp, "passwords never go in this file (sendmail's callers can read it); put it in a file of its own, mode 0600, and name it in password_file")
		default:
			l.unknown(p, k)
		}
	}
	if _, ok := m["host"]; !ok {
		l.errf(p, "host is required")
	}
	if u.TLS == "" {
		u.TLS = "starttls"
	}
	if !portSet {
		u.Port = map[string]int{"starttls": 587, "tls": 465, "none": 25}[u.TLS]
	}
	if u.TLS == "none" && u.Host != "" && !isLoopback(u.Host) {
		l.errf(sub(p, "tls"), "tls = \"none\" is only allowed for a loopback host (127.0.0.0/8, ::1, localhost), not %q; use starttls or tls", u.Host)
	}
	if u.TLS == "none" && u.Username != "" {
		l.errf(sub(p, "username"), "credentials are never sent without TLS: remove username/password_file or use starttls or tls")
	}
	has := func(k string) bool { s, ok := m[k].(string); return ok && s != "" }
	if has("username") && !has("password_file") {
		l.errf(sub(p, "username"), "username without password_file")
	}
	if has("password_file") && !has("username") {
		l.errf(sub(p, "password_file"), "password_file without username")
	}
	if has("client_cert") != has("client_key") {
		if !has("client_cert") {
			l.errf(sub(p, "client_key"), "client_key without client_cert")
		} else {
			l.errf(sub(p, "client_cert"), "client_cert without client_key")
		}
	}
	if u.TLS == "none" && (u.CAFile != "" || u.ClientCert != "") {
		l.errf(sub(p, "tls"), "ca_file and client_cert need tls = \"starttls\" or \"tls\"")
	}
	if len(u.Auth) == 0 {
		u.Auth = []string{"PLAIN", "LOGIN"}
	}
	if u.ServerName == "" {
		u.ServerName = u.Host
	}
	return u, len(l.errs) == nerr
}

func (l *loader) queue(p []string, m map[string]any) {
	q := &l.c.Queue
	for _, k := range l.keys(p, m) {
		v := m[k]
		kp := sub(p, k)
		switch k {
		case "retry":
			var items []any
			switch x := v.(type) {
			case []any:
				items = x
			case string:
				items = []any{x}
			default:
				l.errf(kp, "must be an array of durations, e.g. [\"1m\", \"5m\", \"1h\"], not %s", typeName(v))
				continue
			}
			if len(items) == 0 {
				l.errf(kp, "must list at least one interval")
				continue
			}
			var list []time.Duration
			for _, it := range items {
				if d, ok := l.duration(kp, it); ok {
					list = append(list, d)
				}
			}
			if len(list) == len(items) {
				q.Retry = list
			}
		case "lifetime":
			if d, ok := l.duration(kp, v); ok {
				q.Lifetime = d
			}
		case "concurrency":
			if n, ok := l.integer(kp, v, 1, 64); ok {
				q.Concurrency = int(n)
			}
		case "scan_interval":
			if d, ok := l.duration(kp, v); ok {
				q.ScanInterval = d
			}
		case "temp_grace":
			if d, ok := l.duration(kp, v); ok {
				q.TempGrace = d
			}
		case "connect_timeout":
			if d, ok := l.duration(kp, v); ok {
				q.ConnectTimeout = d
			}
		case "command_timeout":
			if d, ok := l.duration(kp, v); ok {
				q.CommandTimeout = d
			}
		case "data_timeout":
			if d, ok := l.duration(kp, v); ok {
				q.DataTimeout = d
			}
		default:
			l.unknown(p, k)
		}
	}
	if len(q.Retry) > 0 && q.Lifetime < q.Retry[0] {
		if _, set := m["lifetime"]; set {
			l.errf(sub(p, "lifetime"), "lifetime %s is shorter than the first retry interval %s", FormatDuration(q.Lifetime), FormatDuration(q.Retry[0]))
		} else {
			l.errf(sub(p, "retry"), "the first retry interval %s is longer than lifetime (default %s)", FormatDuration(q.Retry[0]), FormatDuration(q.Lifetime))
		}
	}
}

// TraceFields are the values allowed in [trace] fields.
var TraceFields = []string{"uid", "user", "script"}

func (l *loader) trace(p []string, m map[string]any) {
	t := &l.c.Trace
	for _, k := range l.keys(p, m) {
		v := m[k]
		kp := sub(p, k)
		switch k {
		case "header":
			if s, ok := l.str(kp, v); ok {
				if err := checkHeaderName(s); err != nil {
					l.errf(kp, "%v", err)
				} else {
					t.Header = s
				}
			}
		case "fields":
			list, ok := l.strList(kp, v)
			if !ok {
				continue
			}
			fields := []string{}
			for _, f := range list {
				switch {
				case !slices.Contains(TraceFields, f):
					l.errf(kp, "%q is not one of uid, user, script", f)
				case slices.Contains(fields, f):
					l.errf(kp, "%q is listed twice", f)
				default:
					fields = append(fields, f)
				}
			}
			t.Fields = fields
		default:
			l.unknown(p, k)
		}
	}
}

func (l *loader) log(p []string, m map[string]any) {
	for _, k := range l.keys(p, m) {
		v := m[k]
		kp := sub(p, k)
		switch k {
		case "protocol":
			b, ok := v.(bool)
			if !ok {
				l.errf(kp, "must be true or false, not %s", typeName(v))
				continue
			}
			l.c.Log.Protocol = b
		default:
			l.unknown(p, k)
		}
	}
}

func (l *loader) aliases(p []string, m map[string]any) {
	out := make(map[string][]string, len(m))
	for _, k := range l.keys(p, m) {
		kp := sub(p, k)
		name := strings.ToLower(k)
		if err := checkAliasName(name); err != nil {
			l.errf(kp, "%v", err)
			continue
		}
		if _, dup := out[name]; dup {
			l.errf(kp, "alias %q is defined twice (names are case-insensitive)", name)
			continue
		}
		list, ok := l.strList(kp, m[k])
		if !ok {
			continue
		}
		if len(list) == 0 {
			l.errf(kp, "must name at least one address")
			continue
		}
		good := true
		for _, t := range list {
			if err := checkAliasTarget(t); err != nil {
				l.errf(kp, "%v", err)
				good = false
			}
		}
		if good {
			out[name] = list
		}
	}
	l.c.Aliases = out
}

func (l *loader) senders(p []string, m map[string]any) {
	out := make(map[string]string, len(m))
	for _, k := range l.keys(p, m) {
		kp := sub(p, k)
		switch {
		case k == "*":
		case strings.HasPrefix(k, "uid:"):
			if n, err := strconv.ParseUint(k[4:], 10, 32); err != nil || strconv.FormatUint(n, 10) != k[4:] {
				l.errf(kp, "%q: want \"uid:\" and a number", k)
				continue
			}
		default:
			if err := checkUserName(k); err != nil {
				l.errf(kp, "%v", err)
				continue
			}
		}
		s, ok := l.str(kp, m[k])
		if !ok {
			continue
		}
		var err error
		if strings.HasPrefix(s, "@") {
			if !validDomain(s[1:]) {
				err = fmt.Errorf("%q: bad domain after @", s)
			}
		} else {
			err = checkAddress(s)
		}
		if err != nil {
			l.errf(kp, "%v", err)
			continue
		}
		out[k] = s
	}
	l.c.Senders = out
}
