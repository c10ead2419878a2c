package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite golden files")

func loadWithSecret(t *testing.T, mode os.FileMode, content string) (*Config, string, error) {
	t.Helper()
	dir := t.TempDir()
	secret := filepath.Join(dir, "upstream.secret")
	if err := os.WriteFile(secret, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secret, mode); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "mailshim.conf")
	os.WriteFile(conf, []byte("[[upstream]]\nhost = \"smtp.example.com\"\nusername = \"u\"\npassword_file = \""+secret+"\"\n"), 0o644)
	c, err := Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	return c, secret, c.LoadSecrets()
}

func TestLoadSecrets(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"plain", "s3cret", "s3cret"},
		{"newline", "s3cret\n", "s3cret"},
		{"crlf", "s3cret\r\n", "s3cret"},
		{"spaces kept", " s3 cret ", " s3 cret "},
	} {
		c, _, err := loadWithSecret(t, 0o600, tc.content)
		if err != nil || c.Upstreams[0].Password != tc.want {
			t.Errorf("%s: password %q, err %v; want %q", tc.name, c.Upstreams[0].Password, err, tc.want)
		}
	}
	for _, mode := range []os.FileMode{0o400, 0o700} {
		if _, _, err := loadWithSecret(t, mode, "x"); err != nil {
			t.Errorf("mode %o refused: %v", mode, err)
		}
	}
}

func TestLoadSecretsRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    os.FileMode
		content string
		want    string
	}{
		{"group readable", 0o640, "pw", "mode 0640 lets group or others read it; run chmod 600"},
		{"world readable", 0o604, "pw", "mode 0604 lets group or others read it"},
		{"group writable", 0o620, "pw", "mode 0620 lets group or others read it"},
		{"empty", 0o600, "", "empty"},
		{"only newline", 0o600, "\n", "empty"},
		{"two newlines", 0o600, "pw\n\n", "the secret contains a NUL or line break"},
		{"two lines", 0o600, "user\npw\n", "the secret contains a NUL or line break"},
		{"nul", 0o600, "p\x00w", "the secret contains a NUL or line break"},
	} {
		c, secret, err := loadWithSecret(t, tc.mode, tc.content)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		// The error names the config file, the line of password_file and the key.
		want := c.Source + ":4: upstream.password_file: " + secret + ": " + tc.want
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s:\n got  %v\n want %s...", tc.name, err, want)
		}
		if c.Upstreams[0].Password != "" {
			t.Errorf("%s: password set although refused", tc.name)
		}
	}
}

func TestLoadSecretsNotRegular(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.secret")
	os.WriteFile(real, []byte("pw"), 0o600)
	link := filepath.Join(dir, "link.secret")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir.secret")
	os.Mkdir(sub, 0o700)
	for path, want := range map[string]string{
		link:                             "is a symbolic link",
		sub:                              "not a regular file",
		filepath.Join(dir, "missing.pw"): "no such file or directory",
	} {
		if _, err := ReadSecret(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadSecret(%s) = %v, want %q", filepath.Base(path), err, want)
		}
	}
	// A FIFO must not block the read.
	fifo := filepath.Join(dir, "fifo.secret")
	if err := mkfifo(fifo); err == nil {
		if _, err := ReadSecret(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ReadSecret(fifo) = %v", err)
		}
	}
}

func TestLoadSecretsFiles(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("pem"), 0o644)
	conf := "\n[[upstream]]\nhost = \"a.example\"\nca_file = \"" + ca + "\"\n\n" +
		"[[upstream]]\nhost = \"b.example\"\nca_file = \"" + dir + "/missing.pem\"\n" +
		"client_cert = \"" + dir + "\"\nclient_key = \"" + ca + "\"\n"
	c, err := Parse("t.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	// TLSFilesCheck (pkg/relay's, in relayd) is given only the files that
	// opened: one that did not is reported once, by LoadSecrets.
	var calls []string
	old := TLSFilesCheck
	TLSFilesCheck = func(caFile, cert, key string) (error, error) {
		calls = append(calls, caFile+"|"+cert+"|"+key)
		return nil, nil
	}
	t.Cleanup(func() { TLSFilesCheck = old })
	got := c.LoadSecrets()
	errs := Errors(got)
	if len(errs) != 2 || errs[0].Line != 8 || errs[0].Key != "upstream.ca_file" || errs[1].Line != 9 || errs[1].Key != "upstream.client_cert" {
		t.Errorf("LoadSecrets:\n%v", got)
	}
	if want := []string{ca + "||", "||"}; !reflect.DeepEqual(calls, want) {
		t.Errorf("TLSFilesCheck called with %q, want %q", calls, want)
	}
}

func TestNoUpstream(t *testing.T) {
	c, err := Parse("t.conf", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LoadSecrets(); err == nil || err.Error() != "t.conf: upstream: "+ErrNoUpstream.Error() {
		t.Errorf("LoadSecrets = %v", err)
	}
}

// TestRedacted pins check-config's output, checks that the password never
// appears, and that the output is a configuration Load reads back to the
// same values.
func TestRedacted(t *testing.T) {
	const password = "hunter2-Sup3rSecret"
	c, secret, err := loadWithSecret(t, 0o600, password+"\n")
	if err != nil {
		t.Fatal(err)
	}
	_ = secret
	// A fuller configuration around the loaded upstream, with fixed paths
	// for the golden file.
	full, err := Parse("/etc/mailshim/mailshim.conf", []byte(`hostname = "web1.example.com"
max_message_size = "10MB"
[[upstream]]
host = "smtp.example.com"
username = "relay@example.com"
password_file = "/etc/mailshim/upstream.secret"
sender_domains = ["example.com"]
[[upstream]]
host = "127.0.0.1"
port = 2525
tls = "none"
[queue]
retry = ["1m", "1h30m"]
[trace]
fields = ["uid"]
[log]
protocol = true
[aliases]
root = "ops@example.com"
team = ["a@example.com", "b@example.com"]
"first.last" = "x@example.com"
[senders]
"*" = "@example.com"
"uid:0" = "root@example.com"
`))
	if err != nil {
		t.Fatal(err)
	}
	full.Upstreams[0].Password = c.Upstreams[0].Password
	out := full.Redacted()
	if strings.Contains(out, password) || strings.Contains(out, "Sup3r") {
		t.Fatalf("password printed:\n%s", out)
	}
	if !strings.Contains(out, `<redacted>`) {
		t.Errorf("no <redacted> marker:\n%s", out)
	}
	golden := filepath.Join("testdata", "redacted.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(golden, []byte(out), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("Redacted() differs from %s (go test -update to rewrite):\n%s", golden, out)
	}
	back, err := Parse("/etc/mailshim/mailshim.conf", []byte(out))
	if err != nil {
		t.Fatalf("Redacted output does not parse: %v", err)
	}
	full.Upstreams[0].Password = ""
	back.loc, full.loc = nil, nil
	if !reflect.DeepEqual(back, full) {
		t.Errorf("round trip:\n got  %+v\n want %+v", back, full)
	}
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o600) }
