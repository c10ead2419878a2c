package attack

// Log injection: every value relayd logs that came from outside — the
// upstream's replies, addresses, script paths, options, the origin a
// socket client claims — is quoted and escaped (pkg/maillog), so that no
// caller or upstream can forge a mail log line or drive a terminal.

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mailshim/mailshim/pkg/spool"
)

// forged is what an attacker appends to a value in the hope of starting a
// log line of their own: CR/LF, a whole fake event, a terminal escape,
// DEL, invalid UTF-8, and Unicode line and bidi controls. (No NUL: argv
// and the environment cannot carry one; the upstream's reply does.)
const forged = "x\r\nts=2026-01-01T00:00:00.000Z event=FORGEDEVENT id=FORGED to=victim@example.net status=sent\n\x1b[2J\x7f\xff\xfe\u2028\u202e end"

// logPair is one key=value of a mail log line.
type logPair struct{ key, val string }

// parseLogLine parses a mail log line strictly: space-separated key=value
// pairs, each value bare (printable ASCII without '"', '=', '\\' or space)
// or a Go-quoted string.
func parseLogLine(line string) ([]logPair, error) {
	var out []logPair
	for rest := line; rest != ""; {
		key, after, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \"\\") {
			return nil, fmt.Errorf("no key=value at %q", short(rest))
		}
		var val string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return nil, fmt.Errorf("bad quoted value at %q", short(after))
			}
			val, _ = strconv.Unquote(q)
			after = after[len(q):]
		} else {
			i := strings.IndexByte(after, ' ')
			if i < 0 {
				i = len(after)
			}
			val = after[:i]
			for j := 0; j < len(val); j++ {
				if c := val[j]; c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\' {
					return nil, fmt.Errorf("unsafe byte %q in bare value %q", c, val)
				}
			}
			after = after[i:]
		}
		out = append(out, logPair{key, val})
		if after != "" {
			if after[0] != ' ' {
				return nil, fmt.Errorf("no space after value at %q", short(after))
			}
			after = after[1:]
		}
		rest = after
	}
	return out, nil
}

// checkLog fails t unless every line of relayd's log is one well-formed
// event (or a protocol trace or relayd's own diagnostic line) made only
// of printable characters, and none was forged.
func checkLog(t *testing.T, log string) {
	t.Helper()
	for i, line := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		if !utf8.ValidString(line) {
			t.Errorf("log line %d is not valid UTF-8: %q", i+1, line)
		}
		for _, r := range line {
			if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\u202e' || r == 0x85 {
				t.Errorf("log line %d holds the control character %U: %q", i+1, r, line)
				break
			}
		}
		if strings.HasPrefix(line, "trace: ") || strings.HasPrefix(line, "relayd: ") {
			continue
		}
		kv, err := parseLogLine(line)
		if err != nil {
			t.Errorf("log line %d is not a well-formed event: %v\n%q", i+1, err, line)
			continue
		}
		if len(kv) < 2 || kv[0].key != "ts" || kv[1].key != "event" {
			t.Errorf("log line %d does not start with ts= and event=: %q", i+1, line)
		}
		for _, p := range kv {
			if p.key == "event" && strings.Contains(p.val, "FORGED") || p.key == "id" && strings.Contains(p.val, "FORGED") {
				t.Errorf("log line %d is forged: %q", i+1, line)
			}
		}
	}
}

func TestLogInjection(t *testing.T) {
	fu := &fakeUpstream{Rcpt: func(rcpt string) string {
		if strings.HasPrefix(rcpt, "hostile-reply@") {
			return "451-4.3.0 first line\x1b[31m\xff\xfe\r\n451-ts=2026-01-01T00:00:00.000Z event=FORGEDEVENT id=FORGED status=sent\r\n" +
				"451 4.3.0 last\rts=2026-01-01T00:00:00.000Z event=FORGEDEVENT id=FORGED\x00\x7f\u2028 end\r\n"
		}
		return "250 2.1.5 Ok\r\n"
	}, DataEnd: "250 2.0.0 queued as FAKE\x1b[2J\xff\r\n"}
	e := newEnvRaw(t, fu, "", listenConf)
	msg := "Subject: log injection\n\nhello\n"
	waitLog := func(what string, cond func(string) bool) {
		t.Helper()
		e.waitFor(what, 30*time.Second, func() bool { return cond(e.log()) })
	}

	t.Run("upstream-reply", func(t *testing.T) {
		e.use(t)
		tried(t, "an upstream reply to RCPT with CR, LF, a forged event, ESC, NUL, DEL, invalid UTF-8 and U+2028; a DATA reply with ESC and invalid UTF-8",
			"the reply is logged quoted and escaped in one line; no event forged")
		if r := e.sendmail(run{uid: nobody, stdin: msg}, "-i", "hostile-reply@example.net", "plain@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
		waitLog("the deferral and the delivery logged", func(l string) bool {
			return strings.Contains(l, "to=hostile-reply@example.net") && strings.Contains(l, "status=deferred") &&
				strings.Contains(l, "to=plain@example.net")
		})
		checkLog(t, e.log())
	})
	t.Run("script-path", func(t *testing.T) {
		e.use(t)
		tried(t, "SCRIPT_FILENAME with CR/LF, a forged event and header, ESC, invalid UTF-8 (sendmail as nobody)",
			"logged quoted and escaped; no event forged; no header injected into the delivered message")
		before := len(fu.messages())
		env := []string{"SCRIPT_FILENAME=/var/www/" + forged + "\r\nBcc: injected@attacker.example\r\nX-Injected: yes"}
		if r := e.sendmail(run{uid: nobody, stdin: msg, env: env}, "-i", "script@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
		waitLog("the delivery", func(l string) bool {
			return strings.Contains(l, "to=script@example.net status=sent") || strings.Contains(l, "to=script@example.net upstream")
		})
		checkLog(t, e.log())
		e.waitFor("the message upstream", 30*time.Second, func() bool { return len(fu.messages()) > before })
		for _, m := range fu.messages()[before:] {
			hdr, _, _ := strings.Cut(m, "\r\n\r\n")
			for _, l := range strings.Split(hdr, "\r\n") {
				if strings.HasPrefix(l, "Bcc:") || strings.HasPrefix(l, "X-Injected:") || strings.HasPrefix(l, "ts=") {
					t.Errorf("header line injected through the script path: %q\n%s", l, hdr)
				}
			}
		}
	})
	t.Run("addresses", func(t *testing.T) {
		e.use(t)
		tried(t, "a sender and a recipient whose quoted local parts hold a forged event",
			"refused by sendmail, or logged quoted; no event forged")
		sender := `"a ts=2026-01-01T00:00:00.000Z event=FORGEDEVENT id=FORGED"@example.org`
		rcpt := `"b event=FORGEDEVENT id=FORGED \"x"@example.net`
		r := e.sendmail(run{uid: nobody, stdin: msg}, "-i", "-f", sender, rcpt)
		if r.code == 0 {
			waitLog("the pickup", func(l string) bool { return strings.Count(l, "event=pickup ") >= 3 })
		}
		t.Logf("sendmail: %v", r)
		checkLog(t, e.log())
	})
	t.Run("options", func(t *testing.T) {
		e.use(t)
		tried(t, "an unknown option (recorded and logged by relayd) holding CR/LF and a forged event",
			"logged quoted and escaped; no event forged")
		r := e.sendmail(run{uid: nobody, stdin: msg}, "-i", "-Y"+forged, "opts@example.net")
		t.Logf("sendmail: %v", r)
		if r.code == 0 {
			waitLog("the pickup", func(l string) bool { return strings.Contains(l, "ignored=") })
		}
		checkLog(t, e.log())
	})
	t.Run("socket-origin", func(t *testing.T) {
		e.use(t)
		tried(t, "a submission socket client (nobody) claiming a script, caller, parent command line and options with CR/LF, NUL and a forged event",
			"logged quoted and escaped; no event forged; the UID is nobody's")
		m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
			Env: spool.Envelope{Sender: "nobody@example.org", Recipients: []string{"socket@example.net"}},
			Origin: spool.Origin{UID: 0, User: "root\nts=x event=FORGEDEVENT", Script: "/x" + forged + "\x00", ScriptSource: "env" + forged,
				ParentCmdline: "php " + forged, Caller: "php" + forged, Ignored: []string{"-Y" + forged}}}
		hdr, _ := spool.EncodeHeader(m)
		body := "Subject: socket\n\nhi\n"
		req := "MAILSHIM-SUBMIT 1\n" + string(hdr) + fmt.Sprintf("%d\n%s0\n", len(body), body)
		ans := e.raw(nobody, e.submitSock(), []byte(req))
		t.Logf("answer: %q", ans)
		if strings.HasPrefix(ans, "ok ") {
			waitLog("the pickup", func(l string) bool { return strings.Contains(l, "via=socket") })
			for _, l := range strings.Split(e.log(), "\n") {
				if strings.Contains(l, "event=pickup") && strings.Contains(l, "via=socket") && !strings.Contains(l, " uid=65534 ") {
					t.Errorf("the socket client's claimed UID was believed: %q", l)
				}
			}
		}
		checkLog(t, e.log())
	})
	t.Run("header-values", func(t *testing.T) {
		e.use(t)
		tried(t, "header values relayd reads from a message (X-PHP-Originating-Script, a forged X-Mailshim-Origin and Received) holding ESC, DEL, C1, bidi controls, invalid UTF-8 and a forged event",
			"every log line well-formed (forged-trace names the fields, never their values); no event forged")
		before := len(fu.messages())
		hostile := "\x1b[2J\x7f\u009b31m\u202e\xff ts=2026-01-01T00:00:00.000Z event=FORGEDEVENT id=FORGED"
		msg := "X-PHP-Originating-Script: 65534:evil" + hostile + ".php\nX-Mailshim-Origin: uid=0" + hostile +
			"\nReceived: from uid 0 (root) by x (mailshim) id " + hostile + "\nSubject: header values\n\nx\n"
		if r := e.sendmail(run{uid: nobody, stdin: msg}, "-i", "headers@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
		e.waitFor("the message upstream", 30*time.Second, func() bool { return len(fu.messages()) > before })
		checkLog(t, e.log())
	})
	t.Run("listener-claims", func(t *testing.T) {
		e.use(t)
		tried(t, "a session on the SMTP listener (as nobody) with a HELO name holding ESC, DEL and bidi controls, and an AUTH PLAIN user name holding CR/LF and a forged event",
			"logged quoted and escaped; no event forged; no header injected into the delivered message")
		before := len(fu.messages())
		user := "u\r\nts=2026-01-01T00:00:00.000Z event=FORGEDEVENT id=FORGED\r\nBcc: injected@attacker.example\x1b[2J\xff"
		auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00password"))
		dialogue := "EHLO evil\x1b[2J\x7f\u202eexample\r\nAUTH PLAIN " + auth + "\r\nMAIL FROM:<nobody@example.org>\r\nRCPT TO:<listener@example.net>\r\n" +
			"DATA\r\nSubject: listener claims\r\n\r\nx\r\n.\r\nQUIT\r\n"
		out := e.raw(nobody, e.listenAddr(), []byte(dialogue))
		t.Logf("session: %q", out)
		if strings.Contains(out, " Ok: queued as ") {
			e.waitFor("the message upstream", 30*time.Second, func() bool { return len(fu.messages()) > before })
			for _, m := range fu.messages()[before:] {
				hdr, _, _ := strings.Cut(m, "\r\n\r\n")
				for _, l := range strings.Split(hdr, "\r\n") {
					if strings.HasPrefix(l, "Bcc:") || strings.HasPrefix(l, "ts=") {
						t.Errorf("header line injected through the session's claims: %q\n%s", l, hdr)
					}
				}
			}
		}
		checkLog(t, e.log())
	})
	t.Logf("relayd log:\n%s", e.log())
}
