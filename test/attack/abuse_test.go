package attack

// A local user against relayd's two sockets: impersonation, other users'
// mail, malformed and oversized requests, slow clients, smuggling through
// the submission socket.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

func TestControlSocketAbuse(t *testing.T) {
	var rc rcptCounter
	e := newEnv(t, smtptest.Options{Hook: rc.hook}, longRetry, "")
	if r := e.sendmail(run{uid: 0, stdin: "Subject: root's\n\nsecret report\n"}, "-i", "root-rcpt@example.net"); r.code != 0 {
		t.Fatalf("sendmail as root: %v", r)
	}
	e.waitFor("root's message deferred", 30*time.Second, func() bool { return len(e.idsOf(0)) == 1 && strings.Contains(e.log(), "event=deferred ") })
	rootID := e.idsOf(0)[0]
	stillQueued := func(t *testing.T) {
		t.Helper()
		r := e.relayd(run{uid: 0}, "queue", "list")
		if !strings.Contains(r.stdout, rootID+" deferred") {
			t.Errorf("root's message is no longer deferred:\n%s", r.stdout)
		}
	}

	t.Run("impersonate-admin", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody uses the admin verbs (list, show, hold, release, delete) on root's message, through relayd's client and as raw JSON claiming uid 0 and admin",
			"each refused (exit 77, \"only root and the mailshim user\"); root's message untouched")
		for _, verb := range [][]string{{"list"}, {"show", rootID}, {"hold", rootID}, {"release", rootID}, {"delete", rootID}} {
			r := e.relayd(run{uid: nobody}, append([]string{"queue"}, verb...)...)
			if r.code != 77 || !strings.Contains(r.stderr, "only root and the mailshim user") || strings.Contains(r.stdout, rootID) {
				t.Errorf("queue %s as nobody: %v", verb[0], r)
			}
		}
		for _, verb := range []string{"hold", "delete", "show"} {
			ans := e.raw(nobody, e.controlSock(), []byte(fmt.Sprintf(`{"verb":%q,"args":[%q],"uid":0,"admin":true,"Admin":true,"UID":0}`+"\n", verb, rootID)))
			if !strings.Contains(ans, `"denied":true`) || strings.Contains(ans, "secret report") {
				t.Errorf("raw %s as nobody: %q", verb, ans)
			}
		}
		stillQueued(t)
	})
	t.Run("other-users-mail", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody lists the queue (mailq, sendmail -bp) and flushes with root's message in it",
			"nobody sees none of root's messages; root's message is not retried")
		for _, r := range []result{e.sendmail(run{uid: nobody}, "-bp"), e.relayd(run{uid: nobody}, "queue", "mailq")} {
			if r.code != 0 || strings.Contains(r.stdout, rootID) || strings.Contains(r.stdout, "root-rcpt") {
				t.Errorf("nobody's mailq: %v", r)
			}
		}
		n := rc.get("root-rcpt@example.net")
		e.sendmail(run{uid: nobody}, "-q")
		time.Sleep(time.Second)
		if rc.get("root-rcpt@example.net") != n {
			t.Errorf("nobody's flush retried root's message")
		}
		stillQueued(t)
	})
	t.Run("malformed-requests", func(t *testing.T) {
		e.use(t)
		tried(t, "malformed and oversized requests on control.sock: garbage, invalid UTF-8, 2 MB of nested arrays, a 3 MB verb, an unknown verb, 10,000 arguments, nothing at all",
			"each answered with an error (or closed); relayd stays up and serves root afterwards")
		for name, req := range map[string]string{
			"garbage":      "\x00\xff\xfe\x1b[2J not json\n",
			"invalid-utf8": "{\"verb\":\"mailq\xff\xfe\"}\n",
			"nested":       strings.Repeat("[", 2<<20),
			"huge-verb":    `{"verb":"` + strings.Repeat("v", 3<<20) + `"}`,
			"unknown-verb": `{"verb":"shutdown"}`,
			"many-args":    `{"verb":"show","args":[` + strings.TrimSuffix(strings.Repeat(`"0006270A1B2C3D4E5F60",`, 10000), ",") + `]}`,
			"empty":        "",
		} {
			ans := e.raw(nobody, e.controlSock(), []byte(req))
			if strings.Contains(ans, `"output"`) && !strings.Contains(ans, `"error"`) {
				t.Errorf("%s: answered without an error: %.200q", name, ans)
			}
			if e.r.Exited() {
				t.Fatalf("%s: relayd exited", name)
			}
		}
		if r := e.relayd(run{uid: 0}, "queue", "list"); r.code != 0 {
			t.Errorf("root after the malformed requests: %v", r)
		}
		stillQueued(t)
	})
	t.Run("slow-clients", func(t *testing.T) {
		e.use(t)
		tried(t, "4 users x 4 connections each sending half a request and then nothing",
			"relayd drops them within seconds (the request timeout) and serves root meanwhile")
		base := countSockets(e.r.Cmd.Process.Pid)
		for i := 0; i < 4; i++ {
			e.hold(attacker(10+i), e.controlSock(), 4, `{"verb":"mai`)
		}
		if r := e.relayd(run{uid: 0}, "queue", "list"); r.code != 0 {
			t.Errorf("root with slow clients: %v", r)
		}
		e.waitFor("the slow clients dropped", 30*time.Second, func() bool { return countSockets(e.r.Cmd.Process.Pid) <= base })
	})
}

func TestSubmitSocketAbuse(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	header := func(m *spool.Meta) string {
		h, _ := spool.EncodeHeader(m)
		return "MAILSHIM-SUBMIT 1\n" + string(h)
	}
	meta := func(rcpt string) *spool.Meta {
		return &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
			Env: spool.Envelope{Sender: "nobody@example.org", Recipients: []string{rcpt}}}
	}
	chunk := func(s string) string { return fmt.Sprintf("%d\n%s", len(s), s) }

	t.Run("claimed-identity", func(t *testing.T) {
		e.use(t)
		tried(t, "a submission (as nobody) whose header claims uid 0, user root, gid 0 and via=maildrop",
			"stored and delivered as uid 65534 (nobody), via=socket")
		m := meta("claimed@example.net")
		m.Origin = spool.Origin{UID: 0, GID: 0, User: "root", Via: "maildrop"}
		ans := e.raw(nobody, e.submitSock(), []byte(header(m)+chunk("Subject: claimed\n\nx\n")+"0\n"))
		if !strings.HasPrefix(ans, "ok ") {
			t.Fatalf("answer %q", ans)
		}
		id := strings.TrimSpace(strings.TrimPrefix(ans, "ok "))
		e.waitFor("the pickup", 30*time.Second, func() bool { return strings.Contains(e.log(), "event=pickup id="+id+" ") })
		for _, l := range strings.Split(e.log(), "\n") {
			if strings.Contains(l, "event=pickup id="+id+" ") && (!strings.Contains(l, " uid=65534 user=nobody ") || !strings.Contains(l, " via=socket")) {
				t.Errorf("the claimed identity was believed: %s", l)
			}
		}
	})
	t.Run("malformed", func(t *testing.T) {
		e.use(t)
		tried(t, "malformed submissions: a wrong greeting, a garbage header, a 5 MB header, negative, huge and non-numeric chunk lengths, a 2 MB chunk, a body cut before the final chunk",
			"each refused with an error line (or closed) and nothing stored; relayd stays up; a good submission works afterwards")
		before := e.up.Count()
		good := header(meta("bad@example.net"))
		for name, req := range map[string]string{
			"greeting":       "HELLO 1\n" + chunk("x") + "0\n",
			"garbage":        "MAILSHIM-SUBMIT 1\n\x00\xff garbage\n\n" + chunk("x") + "0\n",
			"huge-header":    "MAILSHIM-SUBMIT 1\n" + strings.Repeat("X-Junk: "+strings.Repeat("j", 1000)+"\n", 5000) + "\n",
			"negative":       good + "-5\nxxxxx0\n",
			"huge-length":    good + "99999999999999999999\nx",
			"not-a-number":   good + "12abc\nx",
			"oversize-chunk": good + chunk(strings.Repeat("c", 2<<20)) + "0\n",
			"cut":            good + chunk("Subject: cut\n\nhalf a mess"),
		} {
			ans := e.raw(nobody, e.submitSock(), []byte(req))
			if strings.HasPrefix(ans, "ok ") {
				t.Errorf("%s: stored: %q", name, ans)
			}
			if e.r.Exited() {
				t.Fatalf("%s: relayd exited", name)
			}
		}
		r := e.sendmail(run{uid: nobody, plain: true, stdin: "Subject: good\n\nx\n"}, "-i", "good@example.net")
		if r.code != 0 {
			t.Fatalf("a good submission afterwards: %v", r)
		}
		e.drained(t)
		for _, m := range e.up.Messages()[before:] {
			if strings.Contains(strings.Join(m.To, ","), "bad@example.net") {
				t.Errorf("a malformed submission was delivered: %q", m.Data)
			}
		}
	})
	t.Run("smuggling", func(t *testing.T) {
		e.use(t)
		tried(t, "every SMTP smuggling end-of-data variant in bodies sent through the submission socket and through plain sendmail (maildrop)",
			"each stored as one message and relayed as one message to its own recipient; nothing reaches the smuggled recipient")
		before := e.up.Count()
		n := 0
		for _, c := range smtptest.SmugglingCases() {
			body := strings.ReplaceAll(smtptest.SmugglingBody(c), "\r\n", "\n")
			body = strings.Replace(body, "hello", "hello\r\n", 1) + "\n"
			if r := e.sendmail(run{uid: nobody, plain: true, stdin: smtptest.SmugglingBody(c) + "\r\n"}, "-i", "socket-"+c.Name+"@example.net"); r.code != 0 {
				t.Errorf("%s through the socket: %v", c.Name, r)
			} else {
				n++
			}
			if r := e.sendmail(run{uid: nobody, stdin: body}, "-i", "maildrop-"+c.Name+"@example.net"); r.code != 0 {
				t.Errorf("%s through the maildrop: %v", c.Name, r)
			} else {
				n++
			}
		}
		e.drained(t)
		got := e.up.Messages()[before:]
		for _, m := range got {
			if strings.Contains(strings.Join(m.To, ","), smtptest.SmuggledRcpt) || strings.HasPrefix(string(m.Data), "From: ceo@") {
				t.Errorf("smuggled: to %v\n%q", m.To, m.Data)
			}
			if len(m.To) != 1 {
				t.Errorf("a message to %v", m.To)
			}
		}
		if len(got) != n+1 { // +1: drained's marker
			t.Errorf("%d messages upstream, want %d (one per submission)", len(got), n+1)
		}
	})
}
