package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

const shipped = "../../packaging/mailshim.conf"

// uncomment turns on every setting of the shipped example: a line "#key"
// or "#[table]" (no space after "#") loses its "#"; explanations ("# text")
// stay comments.
func uncomment(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if len(l) > 1 && l[0] == '#' && (l[1] == '[' || l[1] == '"' || l[1] >= 'a' && l[1] <= 'z') {
			lines[i] = l[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// The shipped example parses as shipped (defaults only, no upstream: relayd
// says so until the admin configures one) and with every example turned on.
func TestShippedExample(t *testing.T) {
	c, err := Load(shipped)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Source, c.loc = shipped, nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("shipped file is not all defaults:\n got  %+v\n want %+v", c, want)
	}
	if err := c.LoadSecrets(); err == nil || !strings.Contains(err.Error(), "no [[upstream]] configured") {
		t.Errorf("LoadSecrets without upstream: %v", err)
	}

	data, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	on := uncomment(string(data))
	c, err = Parse("uncommented", []byte(on))
	if err != nil {
		t.Fatalf("%v\n%s", err, on)
	}
	// Every setting shown with its default really is the default.
	d := Default()
	if c.Spool != d.Spool || c.MaxMessageSize != d.MaxMessageSize || c.ControlSocket != d.ControlSocket ||
		c.SubmitSocket != d.SubmitSocket || c.AliasesFile != d.AliasesFile ||
		!reflect.DeepEqual(c.Queue, d.Queue) || !reflect.DeepEqual(c.Trace, d.Trace) || c.Log != d.Log {
		t.Errorf("a commented default differs from Default():\n got  %+v\n want %+v", c, d)
	}
	if len(c.Upstreams) != 3 {
		t.Fatalf("%d upstreams, want the 3 examples", len(c.Upstreams))
	}
	u := c.Upstreams
	if u[0].Port != 587 || u[0].TLS != "starttls" || u[1].Port != 465 || u[1].TLS != "tls" || u[2].TLS != "none" {
		t.Errorf("examples: %+v", u)
	}
	if got := c.Resolve("postmaster"); !reflect.DeepEqual(got, []string{"ops@example.com"}) {
		t.Errorf("Resolve(postmaster) = %v", got)
	}
	if got, _ := c.SenderFor("bob", 1000); got != "bob@example.com" {
		t.Errorf("SenderFor(bob) = %q", got)
	}

	// Every key the loader knows is documented in the example.
	for _, k := range knownKeys {
		if !strings.Contains(string(data), "#"+k+" = ") && !strings.Contains(string(data), " "+k+":") && !strings.Contains(string(data), " "+k+",") {
			t.Errorf("key %q is not documented in %s", k, shipped)
		}
	}
}

// knownKeys lists every key Load accepts (for the documentation tests).
var knownKeys = []string{
	"hostname", "spool", "max_message_size", "control_socket", "submit_socket", "aliases_file",
	"host", "port", "tls", "ca_file", "server_name", "client_cert", "client_key", "username",
	"password_file", "auth", "sender_domains",
	"retry", "lifetime", "concurrency", "scan_interval", "temp_grace",
	"connect_timeout", "command_timeout", "data_timeout",
	"header", "fields", "protocol",
}

// Every key the loader knows has its entry in mailshim.conf(5).
func TestManPageDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../man/mailshim.conf.5.scd")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(knownKeys, "[[upstream]]", "[queue]", "[trace]", "[log]", "[aliases]", "[senders]") {
		if !strings.Contains(string(data), "*"+k+"*") {
			t.Errorf("mailshim.conf.5.scd does not document *%s*", k)
		}
	}
}
