package config

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Redacted returns the effective configuration as TOML, every key with its
// value after defaults (postconf -n style, for `relayd check-config`).
// Secrets are never printed: a loaded password shows as "<redacted>" in a
// comment; password_file, the path, is printed. The output parses with
// Load back to the same configuration.
func (c *Config) Redacted() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	src := c.Source
	if src == "" {
		src = "built-in defaults"
	}
	w("# mailshim effective configuration (from %s)\n", strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, src))
	w("hostname = %s\n", quote(c.Hostname))
	w("spool = %s\n", quote(c.Spool))
	w("max_message_size = %s\n", quote(FormatSize(c.MaxMessageSize)))
	w("control_socket = %s\n", quote(c.ControlSocket))
	w("submit_socket = %s\n", quote(c.SubmitSocket))
	w("aliases_file = %s\n", quote(c.AliasesFile))
	if len(c.Upstreams) == 0 {
		w("\n# no [[upstream]]: relayd cannot deliver\n")
	}
	for _, u := range c.Upstreams {
		w("\n[[upstream]]\n")
		if u.Name != "" {
			w("name = %s\n", quote(u.Name))
		}
		if u.RoutedOnly {
			w("routed_only = true\n")
		}
		w("host = %s\n", quote(u.Host))
		w("port = %d\n", u.Port)
		w("tls = %s\n", quote(u.TLS))
		w("ca_file = %s\n", quote(u.CAFile))
		w("server_name = %s\n", quote(u.ServerName))
		w("client_cert = %s\n", quote(u.ClientCert))
		w("client_key = %s\n", quote(u.ClientKey))
		w("username = %s\n", quote(u.Username))
		w("password_file = %s\n", quote(u.PasswordFile))
		if u.Password != "" {
			w("# password = \"<redacted>\" (read from password_file)\n")
		}
		w("auth = %s\n", quoteList(u.Auth))
		w("sender_domains = %s\n", quoteList(u.SenderDomains))
		if u.OAuthFlow != "" {
			w("oauth_flow = %s\n", quote(u.OAuthFlow))
			w("oauth_token_url = %s\n", quote(u.OAuthTokenURL))
			w("oauth_client_id = %s\n", quote(u.OAuthClientID))
			if u.OAuthClientSecretFile != "" {
				w("oauth_client_secret_file = %s\n", quote(u.OAuthClientSecretFile))
			}
			if u.OAuthRefreshTokenFile != "" {
				w("oauth_refresh_token_file = %s\n", quote(u.OAuthRefreshTokenFile))
			}
			w("oauth_scopes = %s\n", quoteList(u.OAuthScopes))
		}
	}
	for _, r := range c.Routes {
		w("\n[[route]]\n")
		w("users = %s\n", quoteList(r.Users))
		w("sender_domains = %s\n", quoteList(r.SenderDomains))
		w("upstream = %s\n", quoteList(r.Upstream))
	}
	q := c.Queue
	w("\n[queue]\n")
	retry := make([]string, len(q.Retry))
	for i, d := range q.Retry {
		retry[i] = FormatDuration(d)
	}
	w("retry = %s\n", quoteList(retry))
	w("lifetime = %s\n", quote(FormatDuration(q.Lifetime)))
	w("concurrency = %d\n", q.Concurrency)
	for _, kv := range []struct {
		k string
		d time.Duration
	}{
		{"delay_notice", q.DelayNotice},
		{"scan_interval", q.ScanInterval}, {"temp_grace", q.TempGrace},
		{"connect_timeout", q.ConnectTimeout}, {"command_timeout", q.CommandTimeout},
		{"data_timeout", q.DataTimeout},
	} {
		w("%s = %s\n", kv.k, quote(FormatDuration(kv.d)))
	}
	w("\n[trace]\n")
	w("header = %s\n", quote(c.Trace.Header))
	w("fields = %s\n", quoteList(c.Trace.Fields))
	w("key_file = %s\n", quote(c.Trace.KeyFile))
	w("\n[log]\n")
	w("protocol = %t\n", c.Log.Protocol)
	w("\n[metrics]\n")
	w("listen = %s\n", quote(c.Metrics.Listen))
	w("top_accounts = %d\n", c.Metrics.TopAccounts)
	w("\n[aliases]\n")
	for _, k := range sortedMapKeys(c.Aliases) {
		v := c.Aliases[k]
		if len(v) == 1 {
			w("%s = %s\n", key(k), quote(v[0]))
		} else {
			w("%s = %s\n", key(k), quoteList(v))
		}
	}
	w("\n[senders]\n")
	for _, k := range sortedMapKeys(c.Senders) {
		w("%s = %s\n", key(k), quote(c.Senders[k]))
	}
	c.Listen.redact(w)
	w("\n[policy]\n")
	w("notice_to = %s\n", quote(c.Policy.NoticeTo))
	for _, k := range sortedMapKeys(c.Policy.Accounts) {
		a := c.Policy.Accounts[k]
		w("\n[policy.%s]\n", key(k))
		for _, f := range []struct {
			name string
			val  string
		}{
			{"from_domains", quoteList(a.FromDomains)},
			{"max_recipients", fmt.Sprint(a.MaxRecipients)},
			{"max_size", quote(FormatSize(a.MaxSize))},
			{"messages_per_minute", fmt.Sprint(a.MessagesPerMinute)},
			{"messages_per_hour", fmt.Sprint(a.MessagesPerHour)},
			{"messages_per_day", fmt.Sprint(a.MessagesPerDay)},
			{"recipients_per_minute", fmt.Sprint(a.RecipientsPerMinute)},
			{"recipients_per_hour", fmt.Sprint(a.RecipientsPerHour)},
			{"recipients_per_day", fmt.Sprint(a.RecipientsPerDay)},
			{"action", quote(a.Action)},
			{"max_held", fmt.Sprint(a.MaxHeld)},
			{"max_quarantined", fmt.Sprint(a.MaxQuarantined)},
		} {
			// Only what the table sets: the rest falls through to the
			// next table, which an explicit value here would hide.
			if a.Set[f.name] {
				w("%s = %s\n", f.name, f.val)
			}
		}
	}
	if len(c.Policy.AllowedSenders) > 0 {
		w("\n[policy.allowed_senders]\n")
		for _, k := range sortedMapKeys(c.Policy.AllowedSenders) {
			w("%s = %s\n", key(k), quoteList(c.Policy.AllowedSenders[k]))
		}
	}
	return b.String()
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// key writes a TOML key: bare when it can be, quoted otherwise.
func key(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return quote(k)
		}
	}
	return k
}

// quote writes a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
