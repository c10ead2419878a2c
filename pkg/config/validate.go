package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// validator checks decoded values. Each section has a validate method that
// reports through v.errf with the key's path, so that errors carry the
// key's line; it may normalise values (lower-case domains, trim a final
// dot) but never sets defaults that depend on other keys after the check.
type validator struct {
	*decoder
}

// errf reports a problem with the key at path, unless decoding that key
// already failed (one error per key is enough).
func (v validator) errf(path []string, format string, args ...any) {
	if ok, found := v.seen[strings.Join(path, ".")]; found && !ok {
		return
	}
	v.decoder.errf(path, format, args...)
}

// has reports whether the key at path is written in the file.
func (v validator) has(path ...string) bool {
	_, found := v.seen[strings.Join(path, ".")]
	return found
}

// intRange reports n outside min..max, when the key is written.
func (v validator) intRange(path []string, n, min, max int) {
	if v.has(path...) && (n < min || n > max) {
		v.errf(path, "%d is out of range (%d..%d)", n, min, max)
	}
}

// path checks an absolute path; optional allows "".
func (v validator) path(p []string, s string, optional bool) {
	if optional && s == "" {
		return
	}
	if err := checkPath(s); err != nil {
		v.errf(p, "%v", err)
	}
}

// validate checks the whole configuration, section by section.
func (c *Config) validate(v validator) {
	if c.Hostname != "" {
		if !validDomain(c.Hostname) {
			v.errf([]string{"hostname"}, "%q is not a host name", c.Hostname)
		}
		c.Hostname = strings.TrimSuffix(c.Hostname, ".")
	} else if v.has("hostname") {
		v.errf([]string{"hostname"}, "%q is not a host name", c.Hostname)
	}
	v.path([]string{"spool"}, c.Spool, false)
	v.path([]string{"control_socket"}, c.ControlSocket, false)
	v.path([]string{"submit_socket"}, c.SubmitSocket, false)
	v.path([]string{"aliases_file"}, c.AliasesFile, true)
	for i := range c.Upstreams {
		c.Upstreams[i].validate(v, []string{"upstream", index(i)})
	}
	c.validateRoutes(v)
	c.Queue.validate(v, []string{"queue"})
	c.Trace.validate(v, []string{"trace"})
	c.Aliases = validateAliases(v, []string{"aliases"}, c.Aliases)
	c.validateSenders(v, []string{"senders"})
	c.Policy.validate(v, []string{"policy"})
	c.Metrics.validate(v, []string{"metrics"})
	c.Listen.validate(v, []string{"listen"})
}

// Auth mechanisms mailshim can use: go-sasl's clients and XOAUTH2
// (pkg/oauth).
var authMechs = []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"}

// bearerMechs are the mechanisms that present an OAuth2 token.
var bearerMechs = []string{"XOAUTH2", "OAUTHBEARER"}

func (u *Upstream) refuseKey(k string) string {
	if k == "password" {
		return "passwords never go in this file (sendmail's callers can read it); put it in a file of its own, mode 0600, and name it in password_file"
	}
	return ""
}

// validate checks one [[upstream]] (at p) and resolves its defaults.
func (u *Upstream) validate(v validator, p []string) {
	at := func(k string) []string { return sub(p, k) }
	if !v.has(at("host")...) {
		v.errf(p, "host is required")
	} else if !validHost(u.Host) {
		v.errf(at("host"), "%q is not a host name or IP address", u.Host)
	}
	v.intRange(at("port"), u.Port, 1, 65535)
	if v.has(at("tls")...) {
		if _, ok := defaultPorts[u.TLS]; !ok {
			v.errf(at("tls"), "%q is not one of starttls, tls, none", u.TLS)
		}
	}
	v.path(at("ca_file"), u.CAFile, true)
	if u.ServerName != "" && !validHost(u.ServerName) {
		v.errf(at("server_name"), "%q is not a host name", u.ServerName)
	}
	v.path(at("client_cert"), u.ClientCert, true)
	v.path(at("client_key"), u.ClientKey, true)
	if strings.ContainsAny(u.Username, "\x00\r\n") {
		v.errf(at("username"), "contains a control character")
	}
	v.path(at("password_file"), u.PasswordFile, true)
	if v.has(at("auth")...) {
		if len(u.Auth) == 0 {
			v.errf(at("auth"), "must name at least one mechanism (%s)", strings.Join(authMechs, ", "))
		}
		var mechs []string
		for _, mech := range u.Auth {
			mech = strings.ToUpper(mech)
			switch {
			case slices.Contains(authMechs, mech):
				if !slices.Contains(mechs, mech) {
					mechs = append(mechs, mech)
				}
			default:
				v.errf(at("auth"), "%q is not a supported mechanism (%s)", mech, strings.Join(authMechs, ", "))
			}
		}
		u.Auth = mechs
	}
	var domains []string
	for _, d := range u.SenderDomains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if !validDomain(d) {
			v.errf(at("sender_domains"), "%q is not a domain", d)
			continue
		}
		domains = append(domains, d)
	}
	u.SenderDomains = domains

	if u.TLS == "none" && u.Host != "" && !isLoopback(u.Host) {
		v.errf(at("tls"), "tls = \"none\" is only allowed for a loopback host (127.0.0.0/8, ::1, localhost), not %q; use starttls or tls", u.Host)
	}
	if u.TLS == "none" && u.Username != "" {
		v.errf(at("username"), "credentials are never sent without TLS: remove username/password_file or use starttls or tls")
	}
	u.validateOAuth(v, p)
	if u.Username != "" && u.PasswordFile == "" && u.OAuthFlow == "" {
		v.errf(at("username"), "username without password_file (or oauth_flow)")
	}
	if u.PasswordFile != "" && u.Username == "" {
		v.errf(at("password_file"), "password_file without username")
	}
	if (u.ClientCert != "") != (u.ClientKey != "") {
		if u.ClientCert == "" {
			v.errf(at("client_key"), "client_key without client_cert")
		} else {
			v.errf(at("client_cert"), "client_cert without client_key")
		}
	}
	if u.TLS == "none" && (u.CAFile != "" || u.ClientCert != "") {
		v.errf(at("tls"), "ca_file and client_cert need tls = \"starttls\" or \"tls\"")
	}
	*u = u.WithDefaults()
}

// validateOAuth checks the oauth_* keys of one [[upstream]] (at p).
func (u *Upstream) validateOAuth(v validator, p []string) {
	at := func(k string) []string { return sub(p, k) }
	if u.OAuthFlow == "" {
		for _, k := range []string{"oauth_token_url", "oauth_client_id", "oauth_client_secret_file", "oauth_refresh_token_file", "oauth_scopes"} {
			if v.has(at(k)...) {
				v.errf(at(k), "needs oauth_flow (\"refresh_token\" or \"client_credentials\")")
			}
		}
		return
	}
	switch u.OAuthFlow {
	case "refresh_token":
		if u.OAuthRefreshTokenFile == "" {
			v.errf(at("oauth_flow"), "oauth_flow = \"refresh_token\" needs oauth_refresh_token_file")
		}
	case "client_credentials":
		if u.OAuthClientSecretFile == "" {
			v.errf(at("oauth_flow"), "oauth_flow = \"client_credentials\" needs oauth_client_secret_file")
		}
		if v.has(at("oauth_refresh_token_file")...) {
			v.errf(at("oauth_refresh_token_file"), "not used with oauth_flow = \"client_credentials\"")
		}
	default:
		v.errf(at("oauth_flow"), "%q is not one of refresh_token, client_credentials", u.OAuthFlow)
	}
	if u.OAuthTokenURL == "" {
		v.errf(at("oauth_flow"), "oauth_flow needs oauth_token_url")
	} else if err := checkTokenURL(u.OAuthTokenURL); err != nil {
		v.errf(at("oauth_token_url"), "%v", err)
	}
	if u.OAuthClientID == "" {
		v.errf(at("oauth_flow"), "oauth_flow needs oauth_client_id")
	} else if strings.ContainsAny(u.OAuthClientID, "\x00\r\n") {
		v.errf(at("oauth_client_id"), "contains a control character")
	}
	v.path(at("oauth_client_secret_file"), u.OAuthClientSecretFile, true)
	v.path(at("oauth_refresh_token_file"), u.OAuthRefreshTokenFile, true)
	for _, sc := range u.OAuthScopes {
		if sc == "" || strings.ContainsAny(sc, " \t\x00\r\n") {
			v.errf(at("oauth_scopes"), "%q is not a scope (one per string, no spaces)", sc)
		}
	}
	if u.Username == "" {
		v.errf(at("oauth_flow"), "oauth_flow needs username (the mailbox the token is for)")
	}
	if u.PasswordFile != "" {
		v.errf(at("password_file"), "password_file and oauth_flow exclude each other: the token comes from oauth_token_url")
	}
	if u.TLS == "none" {
		v.errf(at("oauth_flow"), "tokens are never sent without TLS: use starttls or tls")
	}
	for _, m := range u.Auth {
		if !slices.Contains(bearerMechs, m) {
			v.errf(at("auth"), "with oauth_flow, auth may name only XOAUTH2 and OAUTHBEARER, not %s", m)
		}
	}
}

func (q *Queue) validate(v validator, p []string) {
	v.intRange(sub(p, "concurrency"), q.Concurrency, 1, 64)
	if len(q.Retry) > 0 && q.Lifetime < q.Retry[0] {
		if v.has(sub(p, "lifetime")...) {
			v.errf(sub(p, "lifetime"), "lifetime %s is shorter than the first retry interval %s", FormatDuration(q.Lifetime), FormatDuration(q.Retry[0]))
		} else {
			v.errf(sub(p, "retry"), "the first retry interval %s is longer than lifetime (default %s)", FormatDuration(q.Retry[0]), FormatDuration(q.Lifetime))
		}
	}
}

// TraceFields are the values allowed in [trace] fields.
var TraceFields = []string{"uid", "user", "script"}

func (t *Trace) validate(v validator, p []string) {
	if err := checkHeaderName(t.Header); err != nil {
		v.errf(sub(p, "header"), "%v", err)
	}
	fields := make([]string, 0, len(t.Fields))
	for _, f := range t.Fields {
		switch {
		case !slices.Contains(TraceFields, f):
			v.errf(sub(p, "fields"), "%q is not one of uid, user, script", f)
		case slices.Contains(fields, f):
			v.errf(sub(p, "fields"), "%q is listed twice", f)
		default:
			fields = append(fields, f)
		}
	}
	t.Fields = fields
	v.path(sub(p, "key_file"), t.KeyFile, true)
}

// validateAliases checks [aliases] and returns it with lower-case names.
func validateAliases(v validator, p []string, m map[string][]string) map[string][]string {
	if m == nil {
		return nil
	}
	out := make(map[string][]string, len(m))
	for _, k := range sortedByLine(v, p, m) {
		kp := sub(p, k)
		name := strings.ToLower(k)
		if err := checkAliasName(name); err != nil {
			v.errf(kp, "%v", err)
			continue
		}
		if _, dup := out[name]; dup {
			v.errf(kp, "alias %q is defined twice (names are case-insensitive)", name)
			continue
		}
		list := m[k]
		if len(list) == 0 {
			v.errf(kp, "must name at least one address")
			continue
		}
		for _, t := range list {
			if err := checkAliasTarget(t); err != nil {
				v.errf(kp, "%v", err)
			}
		}
		out[name] = list
	}
	return out
}

func (c *Config) validateSenders(v validator, p []string) {
	for _, k := range sortedByLine(v, p, c.Senders) {
		kp := sub(p, k)
		switch {
		case k == "*":
		case strings.HasPrefix(k, "uid:"):
			if n, err := strconv.ParseUint(k[4:], 10, 32); err != nil || strconv.FormatUint(n, 10) != k[4:] {
				v.errf(kp, "%q: want \"uid:\" and a number", k)
				continue
			}
		default:
			if err := checkUserName(k); err != nil {
				v.errf(kp, "%v", err)
				continue
			}
		}
		s := c.Senders[k]
		if strings.HasPrefix(s, "@") {
			if !validDomain(s[1:]) {
				v.errf(kp, "%q: bad domain after @", s)
			}
		} else if err := checkAddress(s); err != nil {
			v.errf(kp, "%v", err)
		}
	}
}

func (pol *Policy) validate(v validator, p []string) {
	pol.validateAccounts(v, p)
	p = sub(p, "allowed_senders")
	for _, k := range sortedByLine(v, p, pol.AllowedSenders) {
		kp := sub(p, k)
		if err := checkPolicyKey(k); err != nil {
			v.errf(kp, "%v", err)
			continue
		}
		for _, s := range pol.AllowedSenders[k] {
			if err := checkSenderPattern(s); err != nil {
				v.errf(kp, "%v", err)
			}
		}
	}
	if len(pol.AllowedSenders) == 0 {
		pol.AllowedSenders = nil
	}
}

// sortedByLine returns m's keys in the order they are written in the file
// (then by name), so that "defined twice" is reported on the later line.
func sortedByLine[V any](v validator, p []string, m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return v.sortKeys(p, keys)
}

// validateAccounts checks the limit tables of [policy], records which keys
// each sets, and moves their allowed_senders into AllowedSenders.
func (pol *Policy) validateAccounts(v validator, p []string) {
	if v.has(sub(p, "notice_to")...) && pol.NoticeTo != "" {
		if err := checkAddress(pol.NoticeTo); err != nil && checkLocalPart(pol.NoticeTo) != nil {
			v.errf(sub(p, "notice_to"), "%v", err)
		}
	}
	for _, k := range sortedByLine(v, p, pol.Accounts) {
		kp := sub(p, k)
		a := pol.Accounts[k]
		if err := checkAccountKey(k); err != nil {
			v.errf(kp, "%v", err)
			continue
		}
		a.Set = map[string]bool{}
		for _, f := range fieldsOf(reflect.TypeOf(a)) {
			if v.has(sub(kp, f.name)...) {
				a.Set[f.name] = true
			}
		}
		for _, f := range []struct {
			name string
			n    int
		}{
			{"max_recipients", a.MaxRecipients}, {"max_held", a.MaxHeld}, {"max_quarantined", a.MaxQuarantined},
			{"messages_per_minute", a.MessagesPerMinute}, {"messages_per_hour", a.MessagesPerHour}, {"messages_per_day", a.MessagesPerDay},
			{"recipients_per_minute", a.RecipientsPerMinute}, {"recipients_per_hour", a.RecipientsPerHour}, {"recipients_per_day", a.RecipientsPerDay},
		} {
			v.intRange(sub(kp, f.name), f.n, 0, 1<<30)
		}
		if a.Set["max_size"] && a.MaxSize < 0 {
			v.errf(sub(kp, "max_size"), "must not be negative")
		}
		if a.Set["action"] {
			switch a.Action {
			case "defer", "hold", "refuse":
			default:
				v.errf(sub(kp, "action"), "%q: want \"defer\", \"hold\" or \"refuse\"", a.Action)
			}
		}
		for i, d := range a.FromDomains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			a.FromDomains[i] = d
			if d != "*" && !validDomain(strings.TrimPrefix(d, "*.")) {
				v.errf(sub(kp, "from_domains"), "%q: not a domain (\"example.com\", \"*.example.com\" or \"*\")", d)
			}
		}
		if a.Set["allowed_senders"] {
			switch {
			case strings.HasPrefix(k, "group:"):
				v.errf(sub(kp, "allowed_senders"), "allowed_senders applies to a user name, \"uid:N\" or \"*\", not to a group")
			case pol.AllowedSenders[k] != nil:
				v.errf(sub(kp, "allowed_senders"), "%q already has [policy.allowed_senders] %s: give its senders in one place", k, quote(k))
			default:
				if pol.AllowedSenders == nil {
					pol.AllowedSenders = map[string][]string{}
				}
				pol.AllowedSenders[k] = append([]string{}, a.AllowedSenders...)
			}
			// One home for each list: AllowedSenders (and check-config
			// prints it there).
			a.AllowedSenders = nil
			delete(a.Set, "allowed_senders")
		}
		pol.Accounts[k] = a
	}
	if len(pol.Accounts) == 0 {
		pol.Accounts = nil
	}
}

// checkAccountKey validates the key of a [policy] limit table.
func checkAccountKey(k string) error {
	if g, ok := strings.CutPrefix(k, "group:"); ok {
		if err := checkUserName(g); err != nil {
			return fmt.Errorf("%q: want \"group:\" and a group name", k)
		}
		return nil
	}
	if err := checkPolicyKey(k); err != nil {
		return errors.New(strings.Replace(err.Error(), "\"uid:N\" or \"*\"", "\"uid:N\", \"group:NAME\" or \"*\" (a [policy] table)", 1))
	}
	return nil
}

func (m *Metrics) validate(v validator, p []string) {
	v.intRange(sub(p, "top_accounts"), m.TopAccounts, 1, 1000)
	if m.Listen == "" || strings.HasPrefix(m.Listen, "/") {
		v.path(sub(p, "listen"), m.Listen, true)
		return
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil {
		v.errf(sub(p, "listen"), "%q: want a loopback address and port (\"127.0.0.1:9154\") or a Unix socket's absolute path", m.Listen)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errf(sub(p, "listen"), "%q: bad port %q", m.Listen, port)
		return
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		v.errf(sub(p, "listen"), "%q: the metrics name every account: serve them on a loopback address (127.0.0.1, ::1, localhost) or a Unix socket, and let a local agent or proxy carry them further", m.Listen)
	}
}
