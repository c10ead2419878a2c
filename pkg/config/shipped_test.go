package config

import (
	"os"
	"reflect"
	"regexp"
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
		!reflect.DeepEqual(c.Queue, d.Queue) || !reflect.DeepEqual(c.Trace, d.Trace) || c.Log != d.Log ||
		!reflect.DeepEqual(c.Listen, d.Listen) {
		t.Errorf("a commented default differs from Default():\n got  %+v\n want %+v", c, d)
	}
	if len(c.Upstreams) != 5 {
		t.Fatalf("%d upstreams, want the 5 examples", len(c.Upstreams))
	}
	if u := c.Upstreams; u[3].OAuthFlow != "refresh_token" || u[4].OAuthFlow != "client_credentials" ||
		!reflect.DeepEqual(u[3].Auth, []string{"XOAUTH2", "OAUTHBEARER"}) {
		t.Errorf("OAuth examples: %+v %+v", u[3], u[4])
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

	// Every key of the schema is shown in the example, commented out
	// ("#key = ") or named in an explanation ("# key," "# key:"), or as
	// a table header ("#[section.key]").
	for _, k := range schemaKeys() {
		name := k[strings.LastIndexByte(k, '.')+1:]
		if !strings.Contains(string(data), "#"+name+" = ") && !strings.Contains(string(data), " "+name+":") &&
			!strings.Contains(string(data), " "+name+",") && !strings.Contains(string(data), "#["+k+"]") {
			t.Errorf("key %q is not documented in %s", k, shipped)
		}
	}
}

// schemaKeys lists every key Load accepts, from the structs' toml tags:
// "spool", "upstream.host", "queue.retry", "policy.allowed_senders"; a
// section is listed too ("queue", "upstream", "aliases").
func schemaKeys() []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for _, f := range fieldsOf(t) {
			ft := t.Field(f.index).Type
			if ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct {
				// Tables under free keys ([policy.<account>]): their keys
				// are the schema's, the free key is not.
				walk(prefix+f.name+".", ft.Elem())
				continue
			}
			keys = append(keys, prefix+f.name)
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(prefix+f.name+".", ft)
			}
		}
	}
	walk("", configType)
	return keys
}

// manKey is a key's entry in mailshim.conf(5): "*key* = " at the start of
// a line, or after ", " on such a line (*client_cert* = _path_, *client_key* = _path_).
var manKey = regexp.MustCompile(`(?m)(?:^|, )\*([a-z_]+)\* = `)

// Every key of the schema has its entry in mailshim.conf(5), every section
// its heading, and every entry there is a key of the schema.
func TestSchemaDocumented(t *testing.T) {
	data, err := os.ReadFile("../../man/mailshim.conf.5.scd")
	if err != nil {
		t.Fatal(err)
	}
	man := string(data)
	documented := map[string]bool{}
	for _, m := range manKey.FindAllStringSubmatch(man, -1) {
		documented[m[1]] = true
	}
	inSchema := map[string]bool{}
	for _, k := range schemaKeys() {
		name := k[strings.LastIndexByte(k, '.')+1:]
		inSchema[name] = true
		ft := fieldType(k)
		switch {
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			if !strings.Contains(man, "*[["+k+"]]*") {
				t.Errorf("mailshim.conf.5.scd does not document *[[%s]]*", k)
			}
		case isSection(ft) && !strings.Contains(k, "."):
			if !strings.Contains(man, "*["+k+"]*") {
				t.Errorf("mailshim.conf.5.scd does not document *[%s]*", k)
			}
		default:
			if !documented[name] {
				t.Errorf("mailshim.conf.5.scd has no entry \"*%s* = ...\" for key %s", name, k)
			}
		}
	}
	for k := range documented {
		if !inSchema[k] {
			t.Errorf("mailshim.conf.5.scd documents *%s*, which is not a key of the configuration", k)
		}
	}
}

// fieldType is the Go type of the field of dotted key k.
func fieldType(k string) reflect.Type {
	t := configType
	var ft reflect.Type
	for _, name := range strings.Split(k, ".") {
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		for _, f := range fieldsOf(t) {
			if f.name == name {
				ft = t.Field(f.index).Type
			}
		}
		t = ft
	}
	return ft
}
