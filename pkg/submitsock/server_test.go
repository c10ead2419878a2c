package submitsock

// Tests of the server side against a client that is not sendmail (the
// socket is world-connectable): deadlines and limits, and the envelope
// validated as sendmail validates it.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
)

// submitRaw sends greeting, the spool header of m (Extra included) and
// body as one chunk, and returns the server's answer line.
func submitRaw(t *testing.T, sock string, m *spool.Meta, body string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	hdr, _ := spool.EncodeHeader(m)
	w := bufio.NewWriter(c)
	w.WriteString(greeting)
	w.Write(hdr)
	fmt.Fprintf(w, "%d\n%s0\n", len(body), body)
	w.Flush()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

func meta(sender string, rcpts ...string) *spool.Meta {
	return &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
		Env: spool.Envelope{Sender: sender, Recipients: rcpts}}
}

// What sendmail refuses, the socket refuses, with the same code.
func TestServeValidatesEnvelope(t *testing.T) {
	s := newServer(t, &Server{}, 1<<20)
	many := make([]string, 20001)
	for i := range many {
		many[i] = "u" + strconv.Itoa(i) + "@example.org"
	}
	tests := []struct {
		name string
		m    *spool.Meta
		code int
	}{
		{"sender with CRLF", meta("x@y.org\r\nRSET", "b@example.org"), 65},
		{"sender unparseable", meta("a b c <", "b@example.org"), 65},
		{"rcpt program", meta("", "|/bin/sh -c id"), 67},
		{"rcpt quoted program", meta("", `"|/bin/sh -c id"@example.org`), 67},
		{"rcpt file", meta("", "/etc/passwd"), 67},
		{"rcpt include", meta("", ":include:/etc/shadow"), 67},
		{"rcpt option", meta("", "-oQ/tmp@x"), 67},
		{"rcpt empty", meta("", ""), 67},
		{"rcpt with LF", meta("", "a@example.org\nRCPT TO:<b@example.org>"), 67},
		{"no recipients", meta("a@example.org"), 64},
		{"too many recipients", meta("", many...), 65},
		{"bad notify", func() *spool.Meta { m := meta("", "b@example.org"); m.Env.Notify = "ALWAYS"; return m }(), 65},
		{"bad envid", func() *spool.Meta { m := meta("", "b@example.org"); m.Env.EnvID = "a b"; return m }(), 65},
		{"full name with LF", func() *spool.Meta { m := meta("", "b@example.org"); m.Env.FullName = "x\nBcc: y"; return m }(), 65},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := submitRaw(t, s.sock, tt.m, "Subject: x\n\nbody\n")
			if want := "error " + strconv.Itoa(tt.code) + " "; !strings.HasPrefix(got, want) {
				t.Fatalf("answer %q, want %q...", got, want)
			}
			s.refused(t)
		})
	}
}

// Unknown keys are dropped, and the advisory origin is re-checked
// against the peer's UID.
func TestServeSanitizesOrigin(t *testing.T) {
	s := newServer(t, &Server{}, 1<<20)
	m := meta("a@example.org", "Root <root>", "b@example.org")
	m.Extra = [][2]string{{"orig-rcpt", "ceo@example.org"}, {"dsn-for", "660F3603DDED115B5BF6"}}
	other := os.Getuid() + 1
	m.Origin = spool.Origin{Script: "/root/x.php", ScriptSource: "X-PHP-Originating-Script",
		PHPHeader: strconv.Itoa(other) + ":/root/x.php", Mode: "weird", Caller: strings.Repeat("c", 5000)}
	for i := 0; i < 100; i++ {
		m.Origin.Ignored = append(m.Origin.Ignored, "-k")
	}
	ans := submitRaw(t, s.sock, m, "Subject: x\n\nbody\n")
	id, ok := strings.CutPrefix(ans, "ok ")
	if !ok {
		t.Fatalf("answer %q", ans)
	}
	if err := <-s.errs; err != nil {
		t.Fatal(err)
	}
	got, _ := s.stored(t, id)
	o := got.Origin
	switch {
	case len(got.Extra) != 0:
		t.Errorf("extra keys stored: %q", got.Extra)
	case !o.PHPUIDMismatch || o.Script != "" || o.ScriptSource != "":
		t.Errorf("PHP header of another uid believed: %+v", o)
	case o.Mode != "" || len(o.Caller) > 1024 || len(o.Ignored) > 32:
		t.Errorf("origin not bounded: mode %q, caller %d bytes, %d ignored", o.Mode, len(o.Caller), len(o.Ignored))
	case strings.Join(got.Env.Recipients, " ") != "root b@example.org":
		t.Errorf("recipients not normalised: %q", got.Env.Recipients)
	}
}

// A client that sends the greeting and then nothing is answered and
// dropped once HeaderTimeout is over; one that trickles the body byte by
// byte is dropped at BodyTimeout however often it sends; nothing is
// stored.
func TestServeDeadlines(t *testing.T) {
	s := newServer(t, &Server{HeaderTimeout: 200 * time.Millisecond, BodyTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute}, 1<<20)
	c, err := net.Dial("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, greeting+"MAILSHIM-SPOOL 1\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "error 65 the header did not arrive") {
		t.Errorf("slow header: answer %q", line)
	}
	if err := <-s.errs; err == nil {
		t.Error("slow header: no error")
	}

	c2, err := net.Dial("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	hdr, _ := spool.EncodeHeader(meta("", "b@example.org"))
	io.WriteString(c2, greeting+string(hdr)+"1000000\n")
	answered := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c2).ReadString('\n')
		answered <- line
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var ans string
trickle:
	for {
		select {
		case ans = <-answered:
			break trickle
		case <-tick.C:
			if _, err := c2.Write([]byte("x")); err != nil {
				ans = <-answered
				break trickle
			}
		}
	}
	if !strings.HasPrefix(ans, "error 74 message incomplete") {
		t.Errorf("trickled body: answer %q", ans)
	}
	s.refused(t)
}

// Exit 77 over the socket: the sender policy (a real configuration's
// [policy]) binds the peer's UID.
func TestServeSenderPolicy(t *testing.T) {
	cfg, err := config.Parse("p.conf", []byte("hostname = \"h.example\"\n[policy.allowed_senders]\n\"*\" = [\"*@allowed.example\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, &Server{Intake: submit.Intake{Policy: cfg}}, 1<<20)
	ans := submitRaw(t, s.sock, meta("ceo@example.com", "b@example.org"), "Subject: x\n\nbody\n")
	if !strings.HasPrefix(ans, "error 77 sender address \"ceo@example.com\" is not allowed") {
		t.Fatalf("answer %q", ans)
	}
	s.refused(t)
	for _, sender := range []string{"x@allowed.example", ""} {
		if ans := submitRaw(t, s.sock, meta(sender, "b@example.org"), "Subject: x\n\nbody\n"); !strings.HasPrefix(ans, "ok ") {
			t.Fatalf("sender %q: %q", sender, ans)
		}
		if err := <-s.errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A refusal's text reaches the client as one line: control characters
// become spaces and it is cut at 400 bytes.
func TestServeAnswerOneLine(t *testing.T) {
	s := newServer(t, &Server{Intake: submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
		io.Copy(io.Discard, body)
		return "", &submit.Error{Code: 77, Msg: "no\r\nok 0006270A1B2C3D4E5F60\x7f" + strings.Repeat("x", 1000)}
	}}}, 0)
	ans := submitRaw(t, s.sock, meta("", "b@example.org"), "Subject: x\n\nbody\n")
	if want := "error 77 no  ok 0006270A1B2C3D4E5F60 xxx"; !strings.HasPrefix(ans, want) || len(ans) != len("error 77 ")+400 {
		t.Errorf("answer %q (%d bytes), want %q... of %d bytes", ans, len(ans), want, len("error 77 ")+400)
	}
	<-s.errs
}

// A refusal a later try may pass (a rate of the account's policy) is
// answered "later", and Send returns it Temporary, so that -bs answers it
// 4xx as the listener does; any other refusal stays permanent.
func TestServeTemporaryRefusal(t *testing.T) {
	for _, temp := range []bool{true, false} {
		s := newServer(t, &Server{Intake: submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
			io.Copy(io.Discard, body)
			return "", &submit.Error{Code: 77, Msg: "policy: rate limit reached", Temporary: temp}
		}}}, 0)
		_, err := Send(t.Context(), s.sock, meta("", "b@example.org"), strings.NewReader("Subject: x\n\nbody\n"))
		var se *submit.Error
		if !errors.As(err, &se) || se.Code != 77 || se.Temporary != temp || se.Msg != "policy: rate limit reached" {
			t.Errorf("temporary %v: Send returned %#v", temp, err)
		}
		<-s.errs
	}
}

// A client that goes away (sendmail killed while its caller was still
// writing the message: a PHP request over its time limit) is logged as
// that, with nothing stored: not as a "bad greeting" (which reads as a
// stranger probing the socket) nor as a bare "unexpected EOF".
func TestServeClientGone(t *testing.T) {
	s := newServer(t, &Server{}, 1<<20)
	hdr, _ := spool.EncodeHeader(meta("", "b@example.org"))
	for _, c := range []struct{ name, sent, says string }{
		{"before the greeting", "", "went away before sending a message; nothing stored"},
		{"in the greeting", greeting[:5], "bad greeting"},
		{"in the body", greeting + string(hdr) + "100\nhalf", "went away in the middle of the message; nothing stored"},
	} {
		conn, err := net.Dial("unix", s.sock)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, c.sent)
		conn.Close()
		err = <-s.errs
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: Serve returned %v, want it to say %q", c.name, err, c.says)
		}
	}
	if f := s.files(t); len(f) != 0 {
		t.Fatalf("stored: %v", f)
	}
}
