package config

import (
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// A Debian /etc/aliases as installed, plus what admins add to it.
const etcAliases = `# /etc/aliases
mailer-daemon: postmaster
postmaster: root
nobody: root
hostmaster: root
usenet: root
news: root
webmaster: root
www: root
ftp: root
abuse: root
noc: root
security: root
root: ops@example.com, "Admin@Example.Org"
team: alice@example.com,
	bob@example.com,
  carol
Backup: |/usr/local/bin/backup
logs: /var/log/mail.copy, logger@example.com
list: :include:/etc/mail/list
broken line without colon
bad name: x@example.com
root: dup@example.com
`

func TestReadAliases(t *testing.T) {
	p := writeFile(t, "aliases", etcAliases)
	got, errs := ReadAliases(p)
	want := map[string][]string{
		"mailer-daemon": {"postmaster"}, "postmaster": {"root"}, "nobody": {"root"},
		"hostmaster": {"root"}, "usenet": {"root"}, "news": {"root"}, "webmaster": {"root"},
		"www": {"root"}, "ftp": {"root"}, "abuse": {"root"}, "noc": {"root"}, "security": {"root"},
		"root": {"dup@example.com"},
		"team": {"alice@example.com", "bob@example.com", "carol"},
		"logs": {"logger@example.com"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("aliases:\n got  %v\n want %v", got, want)
	}
	var lines []string
	for _, e := range errs {
		lines = append(lines, strings.TrimPrefix(e.Error(), p))
	}
	wantErrs := []string{
		`:18: backup: "|/usr/local/bin/backup": delivery to a program is not supported (mailshim only relays mail); skipped`,
		`:19: logs: "/var/log/mail.copy": delivery to a file is not supported (mailshim only relays mail); skipped`,
		`:20: list: ":include:/etc/mail/list": :include: is not supported; list the addresses; skipped`,
		`:21: aliases: want "name: address, ..."`,
		`:22: bad name: character ' ' not allowed in a local part`,
		`:23: root: defined again; this definition wins`,
	}
	if !reflect.DeepEqual(lines, wantErrs) {
		t.Errorf("errors:\n got  %q\n want %q", lines, wantErrs)
	}
}

func TestReadAliasesMissing(t *testing.T) {
	got, errs := ReadAliases(filepath.Join(t.TempDir(), "aliases"))
	if len(got) != 0 || errs != nil {
		t.Errorf("missing file: %v, %v", got, errs)
	}
	_, errs = ReadAliases(t.TempDir())
	if len(errs) != 1 {
		t.Errorf("directory: %v", errs)
	}
}

func TestResolve(t *testing.T) {
	c, err := Parse("t.conf", []byte(`
aliases_file = "`+writeFile(t, "aliases", etcAliases)+`"
[aliases]
root = ["root", "ops@example.com"]          # keep a copy for the local name
ops = "ops@example.net"                     # not used: only bare names are looked up
loop1 = "loop2"
loop2 = ["loop1", "end@example.com"]
self = "self"
Mixed = "MiXeD@example.com"
dupe = ["a@example.com", "b", "A@example.com"]
b = "a@example.com"
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"root", []string{"root", "ops@example.com"}},
		{"mailer-daemon", []string{"postmaster"}}, // before LoadAliases: only [aliases]
		{"nobody-here", []string{"nobody-here"}},
		{"loop1", []string{"loop1", "end@example.com"}},
		{"self", []string{"self"}},
		{"MIXED", []string{"MiXeD@example.com"}},
		{"dupe", []string{"a@example.com"}},
		{"x@example.com", []string{"x@example.com"}},
	} {
		if tc.in == "mailer-daemon" {
			tc.want = []string{"mailer-daemon"}
		}
		if got := c.Resolve(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Resolve(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if errs := c.LoadAliases(); len(errs) != 6 {
		t.Errorf("LoadAliases: %d errors, want the 6 of the file: %v", len(errs), errs)
	}
	for in, want := range map[string][]string{
		// /etc/aliases chains to root, and [aliases] root wins over the file's.
		"mailer-daemon": {"root", "ops@example.com"},
		"team":          {"alice@example.com", "bob@example.com", "carol"},
		"loop2":         {"loop2", "end@example.com"},
	} {
		if got := c.Resolve(in); !reflect.DeepEqual(got, want) {
			t.Errorf("after LoadAliases: Resolve(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveDepth(t *testing.T) {
	c := Default()
	c.Aliases = map[string][]string{}
	for i := 0; i < 50; i++ {
		c.Aliases["a"+strconv.Itoa(i)] = []string{"a" + strconv.Itoa(i+1)}
	}
	got := c.Resolve("a0")
	if len(got) != 1 || got[0] != "a"+strconv.Itoa(maxAliasDepth) {
		t.Errorf("deep chain: %v", got)
	}
}

func TestSenderFor(t *testing.T) {
	c, err := Parse("t.conf", []byte(`[senders]
root = "alerts@example.com"
"uid:33" = "website@example.com"
"uid:1000" = "@example.org"
"*" = "@example.com"
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		uid  int
		want string
		ok   bool
	}{
		{"root", 0, "alerts@example.com", true},
		{"www-data", 33, "website@example.com", true},
		{"bob", 1000, "bob@example.org", true},
		{"carol", 1001, "carol@example.com", true},
		{"", 1001, "", false}, // "@domain" needs a user name
		{"", 33, "website@example.com", true},
	} {
		got, ok := c.SenderFor(tc.user, tc.uid)
		if got != tc.want || ok != tc.ok {
			t.Errorf("SenderFor(%q, %d) = %q, %v; want %q, %v", tc.user, tc.uid, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := Default().SenderFor("root", 0); ok {
		t.Errorf("no [senders]: %q", got)
	}
}

func TestUpstreamsFor(t *testing.T) {
	c, err := Parse("t.conf", []byte(`
[[upstream]]
host = "org.example"
sender_domains = ["example.org"]
[[upstream]]
host = "any.example"
[[upstream]]
host = "com.example"
sender_domains = ["example.com", "example.net"]
`))
	if err != nil {
		t.Fatal(err)
	}
	hosts := func(us []Upstream) []string {
		var h []string
		for _, u := range us {
			h = append(h, u.Host)
		}
		return h
	}
	for sender, want := range map[string][]string{
		"a@example.org":     {"org.example", "any.example"},
		"a@EXAMPLE.NET":     {"any.example", "com.example"},
		"a@sub.example.com": {"any.example"},
		"":                  {"any.example"},
	} {
		if got := hosts(c.UpstreamsFor(sender)); !reflect.DeepEqual(got, want) {
			t.Errorf("UpstreamsFor(%q) = %v, want %v", sender, got, want)
		}
	}
	c.Upstreams = c.Upstreams[2:]
	if got := hosts(c.UpstreamsFor("")); !reflect.DeepEqual(got, []string{"com.example"}) {
		t.Errorf("bounce with only domain upstreams: %v", got)
	}
}
