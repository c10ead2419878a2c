package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadProductExample(t *testing.T) {
	// The example of PRODUCT.md, "Configuration keys the tests rely on".
	p := writeFile(t, "mailshim.conf", `hostname = "web1.example.com"        # default: /etc/mailname, else the host name
spool = "/var/spool/mailshim"
max_message_size = "50MB"

[[upstream]]                         # one or more, tried in order
host = "smtp.example.com"
port = 587
tls = "starttls"                     # starttls | tls | none (none only for loopback hosts)
ca_file = "/etc/ssl/certs/ca-certificates.crt"   # default: the system roots
username = "relay@example.com"
password_file = "/etc/mailshim/upstream.secret"

[queue]
retry = ["1m", "5m", "15m", "1h", "4h"]          # then every last interval
lifetime = "5d"
concurrency = 4

[trace]
header = "X-Mailshim-Origin"
fields = ["uid", "user", "script"]               # [] for no origin header

[aliases]                            # local names; also read from /etc/aliases
root = "ops@example.com"
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.Hostname = "web1.example.com"
	want.Source = p
	want.Upstreams = []Upstream{{
		Host: "smtp.example.com", Port: 587, TLS: "starttls",
		CAFile: "/etc/ssl/certs/ca-certificates.crt", ServerName: "smtp.example.com",
		Username: "relay@example.com", PasswordFile: "/etc/mailshim/upstream.secret",
		Auth: []string{"PLAIN", "LOGIN"},
	}}
	want.Aliases = map[string][]string{"root": {"ops@example.com"}}
	c.loc, want.loc = nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestLoadEmptyIsDefaults(t *testing.T) {
	c, err := Load(writeFile(t, "empty.conf", "# nothing\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Source = c.Source
	c.loc = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.conf"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadNotRegular(t *testing.T) {
	_, err := Load(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadWorldWritable(t *testing.T) {
	p := writeFile(t, "mailshim.conf", "")
	os.Chmod(p, 0o646)
	_, err := Load(p)
	if err == nil || err.Error() != p+": file: mode 0646: writable by every user; run chmod o-w "+p {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadValues(t *testing.T) {
	c, err := Parse("t.conf", []byte(`
max_message_size = 1000
aliases_file = ""
[[upstream]]
host = "mail.example.net"
tls = "tls"
auth = ["plain", "OAUTHBEARER", "PLAIN"]
username = "u"
password_file = "/p"
sender_domains = ["Example.COM."]
[[upstream]]
host = "127.0.0.1"
tls = "none"
[[upstream]]
host = "::1"
tls = "none"
port = 2525
[[upstream]]
host = "localhost"
tls = "none"
[queue]
retry = "10m"
lifetime = "1w2d"
concurrency = 64
scan_interval = "30s"
temp_grace = "2h"
connect_timeout = "10s"
command_timeout = "1m"
data_timeout = "1h30m"
[trace]
header = "X-Origin"
fields = []
[log]
protocol = true
[aliases]
Root = ["ops@example.com", "admin"]
admin = "a@example.org"
[senders]
root = "root@example.com"
"uid:33" = "www@example.com"
"*" = "@example.com"
`))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	check("MaxMessageSize", c.MaxMessageSize, int64(1000))
	check("AliasesFile", c.AliasesFile, "")
	check("ports", []int{c.Upstreams[0].Port, c.Upstreams[1].Port, c.Upstreams[2].Port, c.Upstreams[3].Port}, []int{465, 25, 2525, 25})
	check("Auth", c.Upstreams[0].Auth, []string{"PLAIN", "OAUTHBEARER"})
	check("SenderDomains", c.Upstreams[0].SenderDomains, []string{"example.com"})
	check("Retry", c.Queue.Retry, []time.Duration{10 * time.Minute})
	check("Lifetime", c.Queue.Lifetime, 9*24*time.Hour)
	check("Concurrency", c.Queue.Concurrency, 64)
	check("ScanInterval", c.Queue.ScanInterval, 30*time.Second)
	check("TempGrace", c.Queue.TempGrace, 2*time.Hour)
	check("ConnectTimeout", c.Queue.ConnectTimeout, 10*time.Second)
	check("CommandTimeout", c.Queue.CommandTimeout, time.Minute)
	check("DataTimeout", c.Queue.DataTimeout, 90*time.Minute)
	check("Trace", c.Trace, Trace{Header: "X-Origin", Fields: []string{}})
	check("Protocol", c.Log.Protocol, true)
	check("Aliases", c.Aliases, map[string][]string{"root": {"ops@example.com", "admin"}, "admin": {"a@example.org"}})
	check("Senders", c.Senders, map[string]string{"root": "root@example.com", "uid:33": "www@example.com", "*": "@example.com"})
}

// TestLoadErrors: every error names the file, the line and the key.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       string // the exact first error line, after "t.conf:"
	}{
		{"syntax", "spool = \"/x\"\nspool = \n", `2: spool: expected value but found '\n' instead`},
		{"duplicate", "spool = \"/x\"\nspool = \"/y\"\n", `2: spool: Key 'spool' has already been defined.`},
		{"unknown top", "spool = \"/x\"\n\nbogus = 1\n", `3: bogus: unknown key`},
		{"misplaced", "\nretry = [\"1m\"]\n", `2: retry: unknown key (it belongs in [queue])`},
		{"unknown in queue", "[queue]\nlifetime = \"1d\"\nretries = 3\n", `3: queue.retries: unknown key`},
		{"unknown section", "[relay]\nhost = \"x\"\n", `1: relay: unknown key`},
		{"key case", "Spool = \"/x\"\n", `1: Spool: unknown key`},
		{"key case in section", "[[upstream]]\nHost = \"h.example\"\n", `1: upstream: host is required`},
		{"top-level key in section", "[queue]\nspool = \"/x\"\n", `2: queue.spool: unknown key (it belongs at the top of the file, before any [section])`},
		{"hostname", "hostname = \"web 1\"\n", `1: hostname: "web 1" is not a host name`},
		{"spool relative", "\nspool = \"var/spool\"\n", `2: spool: "var/spool" is not an absolute path`},
		{"spool type", "spool = 5\n", `1: spool: must be a string, not an integer`},
		{"size unit", "max_message_size = \"50XB\"\n", `1: max_message_size: "50XB" is not a size (write e.g. "50MB", "512KB", "1GB" or a number of bytes)`},
		{"size negative", "max_message_size = -1\n", `1: max_message_size: -1 is negative`},
		{"size zero", "max_message_size = \"0MB\"\n", `1: max_message_size: must be larger than zero`},
		{"size huge", "max_message_size = \"2000GB\"\n", `1: max_message_size: "2000GB" is too large (at most 1024GB)`},
		{"size float", "max_message_size = 1.5\n", `1: max_message_size: must be a size like "50MB", not a float`},
		{"socket", "control_socket = \"\"\n", `1: control_socket: "" is not an absolute path`},
		{"upstream table", "[upstream]\nhost = \"x\"\n", `1: upstream: write [[upstream]] (an array of tables, one per smarthost), not [upstream]`},
		{"upstream no host", "spool = \"/s\"\n\n[[upstream]]\nport = 25\n", `3: upstream: host is required`},
		{"upstream bad host", "[[upstream]]\nhost = \"smtp example\"\n", `2: upstream.host: "smtp example" is not a host name or IP address`},
		{"second upstream", "[[upstream]]\nhost = \"a.example\"\n\n[[upstream]]\nhost = \"b.example\"\ntls = \"ssl\"\n", `6: upstream.tls: "ssl" is not one of starttls, tls, none`},
		{"tls none remote", "[[upstream]]\nhost = \"smtp.example.com\"\ntls = \"none\"\n", `3: upstream.tls: tls = "none" is only allowed for a loopback host (127.0.0.0/8, ::1, localhost), not "smtp.example.com"; use starttls or tls`},
		{"tls none private ip", "[[upstream]]\ntls = \"none\"\nhost = \"10.1.2.3\"\n", `2: upstream.tls: tls = "none" is only allowed for a loopback host (127.0.0.0/8, ::1, localhost), not "10.1.2.3"; use starttls or tls`},
		{"tls none with auth", "[[upstream]]\nhost = \"127.0.0.1\"\ntls = \"none\"\nusername = \"u\"\npassword_file = \"/p\"\n", `4: upstream.username: credentials are never sent without TLS: remove username/password_file or use starttls or tls`},
		{"port zero", "[[upstream]]\nhost = \"h.example\"\nport = 0\n", `3: upstream.port: 0 is out of range (1..65535)`},
		{"port string", "[[upstream]]\nhost = \"h.example\"\nport = \"587\"\n", `3: upstream.port: must be an integer, not a string`},
		{"username alone", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\n", `3: upstream.username: username without password_file (or oauth_flow)`},
		{"password_file alone", "[[upstream]]\nhost = \"h.example\"\npassword_file = \"/etc/p\"\n", `3: upstream.password_file: password_file without username`},
		{"password_file relative", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\npassword_file = \"p\"\n", `4: upstream.password_file: "p" is not an absolute path`},
		{"password inline", "[[upstream]]\nhost = \"h.example\"\npassword = \"hunter2\"\n", `3: upstream.password: passwords never go in this file (sendmail's callers can read it); put it in a file of its own, mode 0600, and name it in password_file`},
		{"oauth without flow", "[[upstream]]\nhost = \"h.example\"\noauth_client_id = \"x\"\n", `3: upstream.oauth_client_id: needs oauth_flow ("refresh_token" or "client_credentials")`},
		{"oauth bad flow", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\noauth_flow = \"password\"\noauth_token_url = \"https://t.example/token\"\noauth_client_id = \"x\"\n", `4: upstream.oauth_flow: "password" is not one of refresh_token, client_credentials`},
		{"oauth no refresh file", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\noauth_flow = \"refresh_token\"\noauth_token_url = \"https://t.example/token\"\noauth_client_id = \"x\"\n", `4: upstream.oauth_flow: oauth_flow = "refresh_token" needs oauth_refresh_token_file`},
		{"oauth http url", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\noauth_flow = \"client_credentials\"\noauth_token_url = \"http://t.example/token\"\noauth_client_id = \"x\"\noauth_client_secret_file = \"/s\"\n", `5: upstream.oauth_token_url: "http://t.example/token": the token endpoint must be https (http only for a loopback host)`},
		{"oauth and password", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\npassword_file = \"/p\"\noauth_flow = \"client_credentials\"\noauth_token_url = \"https://t.example/token\"\noauth_client_id = \"x\"\noauth_client_secret_file = \"/s\"\n", `4: upstream.password_file: password_file and oauth_flow exclude each other: the token comes from oauth_token_url`},
		{"oauth plain", "[[upstream]]\nhost = \"h.example\"\nusername = \"u\"\nauth = [\"PLAIN\"]\noauth_flow = \"client_credentials\"\noauth_token_url = \"https://t.example/token\"\noauth_client_id = \"x\"\noauth_client_secret_file = \"/s\"\n", `4: upstream.auth: with oauth_flow, auth may name only XOAUTH2 and OAUTHBEARER, not PLAIN`},
		{"cram-md5", "[[upstream]]\nhost = \"h.example\"\nauth = [\"PLAIN\", \"CRAM-MD5\"]\n", `3: upstream.auth: "CRAM-MD5" is not a supported mechanism (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER)`},
		{"auth empty", "[[upstream]]\nhost = \"h.example\"\nauth = []\n", `3: upstream.auth: must name at least one mechanism (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER)`},
		{"auth type", "[[upstream]]\nhost = \"h.example\"\nauth = [1]\n", `3: upstream.auth: element 1 must be a string, not an integer`},
		{"client_cert alone", "[[upstream]]\nhost = \"h.example\"\nclient_cert = \"/c.pem\"\n", `3: upstream.client_cert: client_cert without client_key`},
		{"client_key alone", "[[upstream]]\nhost = \"h.example\"\nclient_key = \"/k.pem\"\n", `3: upstream.client_key: client_key without client_cert`},
		{"ca_file relative", "[[upstream]]\nhost = \"h.example\"\nca_file = \"ca.pem\"\n", `3: upstream.ca_file: "ca.pem" is not an absolute path`},
		{"sender_domains", "[[upstream]]\nhost = \"h.example\"\nsender_domains = [\"example.com\", \"@x\"]\n", `3: upstream.sender_domains: "@x" is not a domain`},
		{"upstream unknown", "[[upstream]]\nhost = \"h.example\"\nstarttls = true\n", `3: upstream.starttls: unknown key`},
		{"inline upstream", "upstream = [{host = \"h.example\", tls = \"bad\"}]\n", `1: upstream.tls: "bad" is not one of starttls, tls, none`},
		{"retry empty", "[queue]\nretry = []\n", `2: queue.retry: must list at least one interval`},
		{"retry unit", "[queue]\nretry = [\n  \"1m\",\n  \"5x\",\n]\n", `2: queue.retry: "5x" is not a duration (write e.g. "30s", "5m", "4h", "5d" or "1h30m")`},
		{"retry int", "[queue]\nretry = [60]\n", `2: queue.retry: must be a duration string with a unit, e.g. "60s"`},
		{"retry table", "[queue]\nretry = {a = 1}\n", `2: queue.retry: must be an array of durations, e.g. ["1m", "5m", "1h"], not a table`},
		{"lifetime zero", "[queue]\nlifetime = \"0s\"\n", `2: queue.lifetime: must be longer than zero`},
		{"lifetime short", "[queue]\nretry = [\"1h\"]\nlifetime = \"30m\"\n", `3: queue.lifetime: lifetime 30m is shorter than the first retry interval 1h`},
		{"retry over lifetime", "[queue]\nretry = [\"10d\"]\n", `2: queue.retry: the first retry interval 10d is longer than lifetime (default 5d)`},
		{"lifetime huge", "[queue]\nlifetime = \"99999d\"\n", `2: queue.lifetime: "99999d" is too long (at most 10 years)`},
		{"duration float", "[queue]\nlifetime = \"1.5h\"\n", `2: queue.lifetime: "1.5h" is not a duration (write e.g. "30s", "5m", "4h", "5d" or "1h30m")`},
		{"concurrency 0", "[queue]\nconcurrency = 0\n", `2: queue.concurrency: 0 is out of range (1..64)`},
		{"concurrency 65", "[queue]\nconcurrency = 65\n", `2: queue.concurrency: 65 is out of range (1..64)`},
		{"timeout type", "[queue]\ndata_timeout = true\n", `2: queue.data_timeout: must be a duration string (e.g. "5m"), not a boolean`},
		{"queue not table", "queue = 5\n", `1: queue: must be a table ([queue]), not an integer`},
		{"trace field", "[trace]\nfields = [\"uid\", \"pid\"]\n", `2: trace.fields: "pid" is not one of uid, user, script`},
		{"trace dup", "[trace]\nfields = [\"uid\", \"uid\"]\n", `2: trace.fields: "uid" is listed twice`},
		{"trace header", "[trace]\nheader = \"X Origin\"\n", `2: trace.header: "X Origin" is not a header field name (printable ASCII, no colon or space)`},
		{"trace header empty", "[trace]\nheader = \"\"\n", `2: trace.header: empty header name`},
		{"log protocol", "[log]\nprotocol = \"yes\"\n", `2: log.protocol: must be true or false, not a string`},
		{"log unknown", "[log]\nlevel = \"debug\"\n", `2: log.level: unknown key`},
		{"alias pipe", "[aliases]\nroot = \"ops@example.com\"\nbackup = \"|/usr/bin/backup\"\n", `3: aliases.backup: "|/usr/bin/backup": delivery to a program is not supported (mailshim only relays mail)`},
		{"alias file", "[aliases]\nlog = [\"a@example.com\", \"/var/log/mail\"]\n", `2: aliases.log: "/var/log/mail": delivery to a file is not supported (mailshim only relays mail)`},
		{"alias include", "[aliases]\nlist = \":include:/etc/list\"\n", `2: aliases.list: ":include:/etc/list": :include: is not supported; list the addresses`},
		{"alias empty", "[aliases]\nroot = []\n", `2: aliases.root: must name at least one address`},
		{"alias type", "[aliases]\nroot = 1\n", `2: aliases.root: must be an array of strings, not an integer`},
		{"alias bad address", "[aliases]\nroot = \"ops@exa mple.com\"\n", `2: aliases.root: "ops@exa mple.com" is not an address: bad domain "exa mple.com"`},
		{"alias name", "[aliases]\n\"a b\" = \"x@example.com\"\n", `2: aliases.a b: character ' ' not allowed in a local part`},
		{"alias case dup", "[aliases]\nroot = \"a@example.com\"\nROOT = \"b@example.com\"\n", `3: aliases.ROOT: alias "root" is defined twice (names are case-insensitive)`},
		{"senders uid", "[senders]\n\"uid:x\" = \"a@example.com\"\n", `2: senders.uid:x: "uid:x": want "uid:" and a number`},
		{"senders user", "[senders]\n\"bad user\" = \"a@example.com\"\n", `2: senders.bad user: "bad user" is not a user name, "uid:N" or "*"`},
		{"senders address", "[senders]\nroot = \"Root <root@example.com>\"\n", `2: senders.root: "Root <root@example.com>" is not an address: character ' ' not allowed in a local part`},
		{"senders bare", "[senders]\nroot = \"root\"\n", `2: senders.root: "root" is not an address (want local@domain)`},
		{"senders domain", "[senders]\n\"*\" = \"@\"\n", `2: senders.*: "@": bad domain after @`},
		{"senders type", "[senders]\nroot = [\"a@example.com\"]\n", `2: senders.root: must be a string, not an array`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("t.conf", []byte(tc.text))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Errorf("config returned with an error")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			if want := "t.conf:" + tc.want; first != want {
				t.Errorf("error\n got  %s\n want %s", first, want)
			}
			for _, e := range Errors(err) {
				if e.Line == 0 || e.File != "t.conf" {
					t.Errorf("error without file or line: %v", e)
				}
			}
		})
	}
}

func TestLoadErrorsAllReported(t *testing.T) {
	_, err := Parse("t.conf", []byte("bogus = 1\n[queue]\nconcurrency = 0\n[[upstream]]\nport = 1\n"))
	got := Errors(err)
	var lines []int
	for _, e := range got {
		lines = append(lines, e.Line)
	}
	if !reflect.DeepEqual(lines, []int{1, 3, 4}) {
		t.Errorf("lines %v, want [1 3 4]; errors:\n%v", lines, err)
	}
}

// A key whose value has the wrong type gets one error, not a second one
// from the checks that would have looked at its value.
func TestLoadOneErrorPerKey(t *testing.T) {
	_, err := Parse("t.conf", []byte("[[upstream]]\nhost = 5\nport = \"x\"\n[queue]\nlifetime = 3\n"))
	want := "t.conf:2: upstream.host: must be a string, not an integer\n" +
		"t.conf:3: upstream.port: must be an integer, not a string\n" +
		"t.conf:5: queue.lifetime: must be a duration string with a unit, e.g. \"3s\""
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1000": 1000, "512KB": 512 << 10, "50MB": 50 << 20, "1GB": 1 << 30,
		"50mb": 50 << 20, "2 MiB": 2 << 20, "10k": 10 << 10, "7B": 7, "1024GB": 1 << 40,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, err := ParseSize(FormatSize(got)); err != nil || back != got {
			t.Errorf("FormatSize(%d) = %q does not parse back", got, FormatSize(got))
		}
	}
	for _, in := range []string{"", "MB", "-1", "1.5MB", "1TB", "1025GB", "99999999999999999999", "0x10"} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, n)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30s": 30 * time.Second, "1m": time.Minute, "4h": 4 * time.Hour, "5d": 120 * time.Hour,
		"2w": 14 * 24 * time.Hour, "1h30m": 90 * time.Minute, "1D": 24 * time.Hour, "0s": 0,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseDuration(FormatDuration(got)); err != nil || back != got {
			t.Errorf("FormatDuration(%v) = %q does not parse back", got, FormatDuration(got))
		}
	}
	for _, in := range []string{"", "5", "m", "1.5h", "-1m", "1ms", "5 d", "1y", "9999999999s"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
}

func TestLocate(t *testing.T) {
	text := `# comment [not.a.table]
a = """
b = 1
[fake]
"""
'quoted.key' = 'x' # c = 2
"q\"k" = 1
dotted.key = 2
arr = [
  "x", # y = 3
  { z = 4 },
]

[[upstream]]
host = "a"

[[upstream]]
host = "b" # [[upstream]]
str = "[[upstream]]"

[queue]
retry = ['''1m''']
lifetime = "1d"
`
	l := locate(text)
	for path, want := range map[string]int{
		"a": 2, "quoted.key": 6, `q"k`: 7, "dotted.key": 8, "arr": 9,
		"upstream": 14, "upstream.\x000": 14, "upstream.\x000.host": 15,
		"upstream.\x001": 17, "upstream.\x001.host": 18, "upstream.\x001.str": 19, "dotted": 8,
		"queue": 21, "queue.retry": 22, "queue.lifetime": 23,
	} {
		if got := l.lines[path]; got != want {
			t.Errorf("line of %q = %d, want %d", path, got, want)
		}
	}
	for _, bogus := range []string{"b", "fake", "c", "y", "z", "upstream.0", "upstream.1"} {
		if n, ok := l.lines[bogus]; ok {
			t.Errorf("%q found at line %d; it is not a key", bogus, n)
		}
	}
	if got := l.line("upstream", index(1), "missing"); got != 17 {
		t.Errorf("fallback line = %d, want 17", got)
	}
}

func TestDefaultHostname(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "mailname")
	os.WriteFile(p, []byte("  mail.example.org \nsecond.line\n"), 0o644)
	if got := defaultHostname(p); got != "mail.example.org" {
		t.Errorf("from mailname: %q", got)
	}
	sys, _ := os.Hostname()
	if sys == "" {
		sys = "localhost"
	}
	os.WriteFile(p, []byte("\n"), 0o644)
	if got := defaultHostname(p); got != sys {
		t.Errorf("empty mailname: %q, want %q", got, sys)
	}
	if got := defaultHostname(filepath.Join(dir, "missing")); got != sys {
		t.Errorf("no mailname: %q, want %q", got, sys)
	}
}

func BenchmarkLoad(b *testing.B) {
	data, err := os.ReadFile("../../packaging/mailshim.conf")
	if err != nil {
		b.Skip("packaging/mailshim.conf:", err)
	}
	p := filepath.Join(b.TempDir(), "mailshim.conf")
	// The shipped example, uncommented: a typical full file.
	if err := os.WriteFile(p, []byte(uncomment(string(data))), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadShipped is what sendmail pays at every call on a default
// installation: the shipped file, all comments.
func BenchmarkLoadShipped(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load("../../packaging/mailshim.conf"); err != nil {
			b.Fatal(err)
		}
	}
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func FuzzLoad(f *testing.F) {
	f.Add([]byte("spool = \"/x\"\n[[upstream]]\nhost = \"127.0.0.1\"\ntls = \"none\"\n"))
	f.Add([]byte("[queue]\nretry = [\"1m\", \"1d\"]\n[aliases]\nroot = [\"a@b.c\", \"x\"]\n[senders]\n\"*\" = \"@b.c\"\n"))
	f.Add([]byte("a = '''\n[x]\n'''\n[[upstream]]\nhost = \"h\"\nport = 1\n"))
	if data, err := os.ReadFile("../../packaging/mailshim.conf"); err == nil {
		f.Add(data)
		f.Add([]byte(uncomment(string(data))))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Removing the comments changes nothing the TOML parser sees.
		var full, blanked map[string]any
		_, errFull := toml.Decode(string(data), &full)
		_, errBlanked := toml.Decode(string(blankComments(data)), &blanked)
		if (errFull == nil) != (errBlanked == nil) || errFull == nil && !reflect.DeepEqual(full, blanked) {
			t.Fatalf("blankComments changed the document: %v / %v\n%q\n%q", errFull, errBlanked, data, blankComments(data))
		}
		if bytes.Count(data, []byte("\n")) != bytes.Count(blankComments(data), []byte("\n")) {
			t.Fatalf("blankComments changed the number of lines:\n%q\n%q", data, blankComments(data))
		}
		c, err := Parse("fuzz.conf", data)
		if err != nil {
			var raw map[string]any
			_, synErr := toml.Decode(string(data), &raw)
			lines := strings.Split(string(data), "\n")
			for _, e := range Errors(err) {
				if e.File != "fuzz.conf" || e.Line <= 0 || e.Line > len(lines) {
					t.Fatalf("error without file or line: %v\n%q", e, data)
				}
				// A semantic error points at a line that names its key.
				k := e.Key[strings.LastIndexByte(e.Key, '.')+1:]
				if synErr == nil && bareKey.MatchString(k) && !strings.Contains(lines[e.Line-1], k) {
					t.Fatalf("error %v points at line %q\n%q", e, lines[e.Line-1], data)
				}
			}
			return
		}
		// What Load accepts, Redacted prints in a form Load accepts again.
		c2, err := Parse("redacted.conf", []byte(c.Redacted()))
		if c2 != nil {
			c2.Source = c.Source
		}
		if err != nil {
			t.Fatalf("Redacted output does not parse: %v\n%s", err, c.Redacted())
		}
		if c.Redacted() != c2.Redacted() {
			t.Fatalf("Redacted not stable:\n%s\n---\n%s", c.Redacted(), c2.Redacted())
		}
	})
}
