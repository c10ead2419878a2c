package attack

// relayd's loopback SMTP listener ([listen]) attacked by local users:
// smuggling, floods of sessions from many UIDs, claimed identities.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

const listenConf = `
[listen]
enabled = true
addresses = ["127.0.0.1"]
ports = [0]
cert_file = ""
key_file = ""
`

var listenLine = regexp.MustCompile(`event=listen addr=(127\.\S+) from=`)

// listenAddr waits for the listener and returns "tcp:127.0.0.1:PORT".
func (e *env) listenAddr() string {
	e.t.Helper()
	var addr string
	e.waitFor("the SMTP listener", 30*time.Second, func() bool {
		if m := listenLine.FindStringSubmatch(e.log()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	return "tcp:" + addr
}

func TestListenerAttacks(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", listenConf)
	addr := e.listenAddr()

	t.Run("smuggling", func(t *testing.T) {
		e.use(t)
		tried(t, "every SMTP smuggling end-of-data variant in a session on the loopback listener (as nobody)",
			"no message reaches the smuggled recipient; at most one message per session")
		skip := len(e.up.Messages())
		for _, c := range smtptest.SmugglingCases() {
			out := e.raw(nobody, addr, []byte(smtptest.SmugglingDialogue(c, "nobody@example.org", "owner-"+c.Name+"@example.org")))
			if n := strings.Count(out, " Ok: queued as "); n > 1 {
				t.Errorf("%s: %d messages accepted in one session:\n%s", c.Name, n, out)
			}
		}
		e.drained(t)
		for _, m := range e.up.Messages()[skip:] {
			if strings.Contains(strings.Join(m.To, ","), smtptest.SmuggledRcpt) {
				t.Errorf("smuggled to %v:\n%q", m.To, m.Data)
			}
		}
	})
	t.Run("claimed-identity", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody authenticates on the listener as root (AUTH PLAIN root) and claims uid 0 in HELO",
			"the message is recorded and traced as uid 65534")
		skip := len(e.up.Messages())
		dialogue := "EHLO uid0.root\r\nAUTH PLAIN AHJvb3QAcm9vdA==\r\nMAIL FROM:<nobody@example.org>\r\nRCPT TO:<claimed@example.net>\r\nDATA\r\nSubject: claimed on the listener\r\n\r\nx\r\n.\r\nQUIT\r\n"
		out := e.raw(nobody, addr, []byte(dialogue))
		if !strings.Contains(out, "\r\n250 2.0.0 ") {
			t.Fatalf("not accepted:\n%s", out)
		}
		e.waitFor("delivery", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: claimed on the listener")) == 1 })
		data := string(e.delivered(skip, "Subject: claimed on the listener")[0].Data)
		if !strings.Contains(data, "uid=65534") || strings.Contains(data, "from uid 0 ") {
			t.Errorf("the trace does not name uid 65534:\n%s", data)
		}
	})
	t.Run("flood", func(t *testing.T) {
		e.use(t)
		const users, each = 10, 50
		tried(t, fmt.Sprintf("%d UIDs x %d idle sessions on the listener, then an 11th user's message", users, each),
			"the 11th user's message is accepted and delivered")
		for i := 0; i < users; i++ {
			e.hold(attacker(20+i), addr, each, "")
		}
		e.settle()
		skip := len(e.up.Messages())
		out := e.raw(attacker(60), addr, []byte("EHLO x\r\nMAIL FROM:<eleventh@example.org>\r\nRCPT TO:<eleventh@example.net>\r\nDATA\r\nSubject: eleventh\r\n\r\nx\r\n.\r\nQUIT\r\n"))
		if !strings.Contains(out, "\r\n250 2.0.0 ") {
			t.Fatalf("the 11th user's session:\n%s", out)
		}
		e.waitFor("delivery", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: eleventh")) == 1 })
	})
}
