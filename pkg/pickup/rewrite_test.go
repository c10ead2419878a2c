package pickup

import (
	"testing"

	"github.com/mailshim/mailshim/pkg/spool"
)

func TestRewriteFrom(t *testing.T) {
	cfg := testConfig()
	cfg.Senders = map[string]string{"root": "root@example.com", "uid:1001": "site@example.com"}
	rw, _ := NewRewriter(cfg)
	o := &spool.Origin{UID: 1001, User: "smtest"}
	for in, want := range map[string]string{
		"root (Cron Daemon)":                 "root@example.com (Cron Daemon)",
		"Cron Daemon <root>":                 "Cron Daemon <root@example.com>",
		"root@web1.example.com":              "root@example.com",
		"smtest":                             "site@example.com",
		`"smtest" <smtest@WEB1.example.com>`: `"smtest" <site@example.com>`,
		"www-data":                           "www-data@web1.example.com",
		"someone@example.org":                "someone@example.org",
		"a, b":                               "a, b",
		"Group: a@b;":                        "Group: a@b;",
		"(only a comment)":                   "(only a comment)",
		"two words":                          "two words",
		"x\"quoted\"":                        "x\"quoted\"",
	} {
		if got := rw.RewriteFrom(in, o); got != want {
			t.Errorf("RewriteFrom(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSender(t *testing.T) {
	cfg := testConfig()
	cfg.Senders = map[string]string{"uid:1001": "site@example.com"}
	rw, _ := NewRewriter(cfg)
	o := &spool.Origin{UID: 1001, User: "smtest"}
	for in, want := range map[string]string{
		"":                        "site@example.com",
		"<>":                      "<>",
		"smtest":                  "site@example.com",
		"smtest@web1.example.com": "site@example.com",
		"other":                   "other@web1.example.com",
		"me@example.org":          "me@example.org",
	} {
		if got := rw.Sender(in, o); got != want {
			t.Errorf("Sender(%q) = %q, want %q", in, got, want)
		}
	}
	if got := rw.Sender("", &spool.Origin{UID: 77}); got != "uid77@web1.example.com" {
		t.Errorf("sender of a uid without name: %q", got)
	}
}

func TestOriginHeader(t *testing.T) {
	cfg := testConfig()
	rw, _ := NewRewriter(cfg)
	o := &spool.Origin{UID: 1001, User: "smtest", Script: "/srv/my site/x.php\r\nBcc: evil"}
	if got, want := rw.Origin(o), `uid=1001 user=smtest script="/srv/my site/x.php\r\nBcc: evil"`; got != want {
		t.Errorf("Origin = %s, want %s", got, want)
	}
	cfg.Trace.Fields = nil
	rw, _ = NewRewriter(cfg)
	if got := rw.Origin(o); got != "" {
		t.Errorf("no fields: %q", got)
	}
}

func TestQualifyField(t *testing.T) {
	r := &Rewriter{Hostname: "web1.example.com"}
	for in, want := range map[string]string{
		"To: root\n":                             "To: root@web1.example.com\n",
		"To: root, bob@example.org\n":            "To: root@web1.example.com, bob@example.org\n",
		"Cc: Ops Team <ops>, alice (Alice)\n":    "Cc: Ops Team <ops@web1.example.com>, alice@web1.example.com (Alice)\n",
		"To: root,\n  alice\n":                   "To: root@web1.example.com,\n  alice@web1.example.com\n",
		"To : root\n":                            "To : root@web1.example.com\n",
		"From: \"Cron Daemon\" <root>\n":         "From: \"Cron Daemon\" <root@web1.example.com>\n",
		"To: friends: a, b@example.org;, c\n":    "To: friends: a@web1.example.com, b@example.org;, c@web1.example.com\n",
		"To: undisclosed-recipients:;\n":         "To: undisclosed-recipients:;\n",
		"To: bob@example.org\n":                  "To: bob@example.org\n",
		"To: John Smith\n":                       "To: John Smith\n",
		"To: \"a b\"@example.org\n":              "To: \"a b\"@example.org\n",
		"To: \"unterminated\n":                   "To: \"unterminated\n",
		"To: <root\n":                            "To: <root\n",
		"To: \n":                                 "To: \n",
		"To: first.last\r\n":                     "To: first.last@web1.example.com\r\n",
		"To: =?utf-8?q?J=C3=BCrgen?= <jurgen>\n": "To: =?utf-8?q?J=C3=BCrgen?= <jurgen@web1.example.com>\n",
		"To: \"root, x\" <root>\n":               "To: \"root, x\" <root@web1.example.com>\n",
		"To: r\xc3\xb6ot\n":                      "To: r\xc3\xb6ot\n",
	} {
		if got := string(r.QualifyField([]byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// A bare name in a header field is qualified when it is a local name by
// the rule the envelope's recipients follow (message.IsLocalName), and
// only then: not a program, a file or an option.
func TestQualifyFieldLocalNameRule(t *testing.T) {
	r := &Rewriter{Hostname: "web1.example.com"}
	for in, want := range map[string]string{
		"To: web-admin\n": "To: web-admin@web1.example.com\n",
		"To: |cmd\n":      "To: |cmd\n",
		"To: /tmp/x\n":    "To: /tmp/x\n",
		"To: -oQ/tmp\n":   "To: -oQ/tmp\n",
	} {
		if got := string(r.QualifyField([]byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
