package config

import (
	"os"
	"reflect"
	"testing"

	"github.com/BurntSushi/toml"
)

// The files mailshim.conf is written as are decoded by parseSimple, and
// exactly as BurntSushi/toml decodes them.
func TestParseSimpleAccepts(t *testing.T) {
	shipped, err := os.ReadFile("../../packaging/mailshim.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{
		"",
		"\n\n",
		string(blankComments(shipped)),
		// The benchmark's file.
		"hostname = \"bench.example\"\nspool = \"/tmp/b/spool\"\nmax_message_size = \"200MB\"\ncontrol_socket = \"/tmp/b/control.sock\"\nsubmit_socket = \"/tmp/b/submit.sock\"\n\n[policy.nobody]\nmax_recipients = 0\nmessages_per_minute = 0\n",
		"spool = '/var/spool/mailshim' # where\n[[upstream]]\nhost = \"smtp.example.com\"\nport = 587\ntls = \"starttls\"\nusername = \"u\"\npassword_file = \"/etc/mailshim/pw\"\n[[upstream]]\nhost = \"backup.example.com\"\n",
		"[queue]\nretry = [\"1m\", \"5m\", \"1h\",]\nconcurrency = +4\n[aliases]\nroot = [ \"a@b.c\" , 'x' ]\nnone = []\n[senders]\n\"*\" = \"@b.c\"\n'uid:33' = \"www@b.c\"\n",
		"[trace]\nheader = \"X-Mailshim-Origin\"\nfields = [\"uid\", \"user\"]\n[listen]\nenabled = false\naddresses = [\"127.0.0.1:25\"]\n",
		"a = -0\nb = 9223372036854775807\nc = -9223372036854775808\nd = true\n\t e\t=\t\"tab\there\"\n[x]\n[ x . y ]\n[x.z]\n",
	} {
		got, ok := parseSimple([]byte(doc))
		if !ok {
			t.Errorf("parseSimple refused\n%s", doc)
			continue
		}
		var want map[string]any
		if _, err := toml.Decode(doc, &want); err != nil {
			t.Errorf("BurntSushi/toml refuses what parseSimple accepted: %v\n%s", err, doc)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("parseSimple:\n%#v\nBurntSushi/toml:\n%#v\nfor\n%s", got, want, doc)
		}
	}
}

// What parseSimple does not decode exactly as BurntSushi/toml would, it
// leaves to it: escapes, floats, dates, inline tables, dotted keys,
// multi-line values, CR, non-ASCII, and anything defined twice.
func TestParseSimpleRefuses(t *testing.T) {
	for _, doc := range []string{
		"a = \"x\\ty\"\n",
		"a = 1.5\n",
		"a = 1e3\n",
		"a = 1_000\n",
		"a = 0x10\n",
		"a = 007\n",
		"a = 9223372036854775808\n",
		"a = inf\n",
		"a = 1979-05-27\n",
		"a = {b = 1}\n",
		"a.b = 1\n",
		"a = \"\"\"x\"\"\"\n",
		"a = '''x'''\n",
		"a = [\n1]\n",
		"a = [[1], [2]]\n",
		"a = [1 2]\n",
		"a = 1\r\n",
		"a = \"é\"\n",
		"\"\" = 1\n",
		"a = 1\na = 2\n",
		"[a]\n[a]\n",
		"[a.b]\n[a]\n",
		"a = 1\n[a]\n",
		"[a]\nb = 1\n[a.b]\n",
		"[[a]]\n[a]\n",
		"[a]\n[[a]]\n",
		"[[a]]\n[a.b]\n",
		"[ [a]]\n",
		"[[a] ]\n",
		"a = 1 b = 2\n",
		"= 1\n",
		"a = \n",
		"a = \"x\n",
		"a = 1 # \x01\n",
		"a = true1\n",
	} {
		if m, ok := parseSimple([]byte(doc)); ok {
			t.Errorf("parseSimple accepted %q: %#v", doc, m)
		}
	}
}
