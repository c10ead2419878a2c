package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/smtptest"
)

// countConn counts the writes on the TCP connection: each is one flush of
// the session's buffered writer (under TLS, one record for a small group).
type countConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func countingOpts(writes *atomic.Int64) Options {
	opts := testOpts()
	opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{Conn: c, writes: writes}, nil
	}
	return opts
}

const wantData = "From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n"

// wireData is wantData as it goes over the wire, dot-stuffed.
const wireData = "From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: test\r\n\r\nHello.\r\n..leading dot\r\n"

// Against go-smtp's server, which offers PIPELINING: MAIL, every RCPT and
// DATA leave in one write (the RSET of a failed transaction too), the
// message and its end of data in a second.
func TestPipelinedGroupIsOneWrite(t *testing.T) {
	srv := authServer(t, smtptest.Options{DSN: true, Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && strings.HasPrefix(arg, "unknown") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + arg + ">: Recipient address rejected: User unknown"}
		}
		return nil
	}})
	var writes atomic.Int64
	s := dialOK(t, srv.Upstream(), countingOpts(&writes))
	if ok, _ := s.Extension("pipelining"); !ok {
		t.Fatal("PIPELINING not seen in EHLO")
	}
	for i, tc := range []struct {
		to       []string
		accepted int
		writes   int64
	}{
		{[]string{"a@example.net", "unknown@example.net", "b@example.net"}, 2, 2},
		{[]string{"unknown1@example.net", "unknown2@example.net"}, 0, 1}, // DATA refused: no message
		{[]string{"c@example.net"}, 1, 2},                                // RSET in the group
	} {
		before := writes.Load()
		m := testMsg(simple, tc.to...)
		m.Notify = "FAILURE"
		res := s.Send(context.Background(), m)
		if res.Accepted() != tc.accepted || (tc.accepted > 0) != (res.Err == nil) {
			t.Fatalf("send %d: accepted %d, err %v", i, res.Accepted(), res.Err)
		}
		if n := writes.Load() - before; n != tc.writes {
			t.Fatalf("send %d: %d writes, want %d", i, n, tc.writes)
		}
		if !s.Alive() {
			t.Fatalf("send %d: session dead", i)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 2 || strings.Join(msgs[0].To, ",") != "a@example.net,b@example.net" || strings.Join(msgs[1].To, ",") != "c@example.net" {
		t.Fatalf("delivered %+v", msgs)
	}
	for _, m := range msgs {
		if string(m.Data) != wantData || len(m.RcptOpts[0].Notify) != 1 || m.RcptOpts[0].Notify[0] != smtp.DSNNotifyFailure {
			t.Fatalf("data %q, rcpt options %+v", m.Data, m.RcptOpts[0])
		}
	}
}

// MAIL refused with RCPT and DATA pipelined behind it: no message data is
// sent, the server's refusals of RCPT and DATA (no MAIL) are read and
// dropped, and the session carries the next message after RSET.
func TestPipelinedMailRefused(t *testing.T) {
	var dataStarts atomic.Int32
	srv := authServer(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		switch {
		case stage == smtptest.StageMail && strings.HasPrefix(arg, "refused"):
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + arg + ">: Sender address rejected: not owned by user " + testUser}
		case stage == smtptest.StageData:
			dataStarts.Add(1)
		}
		return nil
	}})
	var writes atomic.Int64
	s := dialOK(t, srv.Upstream(), countingOpts(&writes))
	m := testMsg(simple, "a@example.net", "b@example.net")
	m.From = "refused@example.org"
	before := writes.Load()
	res := s.Send(context.Background(), m)
	if e := res.Err; e == nil || e.Stage != StageMail || e.Code != 553 || e.Class != Permanent || !strings.Contains(e.Cause, "envelope sender") {
		t.Fatalf("got %v", res.Err)
	}
	for _, rr := range res.Rcpts {
		if rr.Err != res.Err {
			t.Fatalf("%s: %v, want the MAIL refusal", rr.Rcpt, rr.Err)
		}
	}
	if n := writes.Load() - before; n != 1 || dataStarts.Load() != 0 || srv.Count() != 0 {
		t.Fatalf("%d writes (want 1), %d data transfers, %d messages: data sent after a refused MAIL", n, dataStarts.Load(), srv.Count())
	}
	if !s.Alive() {
		t.Fatal("session dead after a refused MAIL")
	}
	for i := 0; i < 2; i++ {
		if res := s.Send(context.Background(), testMsg(simple, "c@example.net")); res.Err != nil {
			t.Fatalf("next message %d: %v", i, res.Err)
		}
	}
	if msgs := srv.Messages(); len(msgs) != 2 || msgs[0].From != "sender@example.org" || string(msgs[0].Data) != wantData {
		t.Fatalf("delivered %+v", msgs)
	}
}

// A server without PIPELINING gets one command at a time, and after a
// refused MAIL no RCPT at all.
func TestNoPipeliningOneAtATime(t *testing.T) {
	var rcpts atomic.Int32
	srv := smtptest.New(t, smtptest.Options{NoTLS: true, NoPipelining: true, Hook: func(ctx context.Context, stage, arg string) error {
		switch {
		case stage == smtptest.StageMail && strings.HasPrefix(arg, "refused"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: queue file write error"}
		case stage == smtptest.StageRcpt:
			rcpts.Add(1)
			if strings.HasPrefix(arg, "unknown") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
			}
		}
		return nil
	}})
	var writes atomic.Int64
	s := dialOK(t, srv.Upstream(), countingOpts(&writes))
	if ok, _ := s.Extension("PIPELINING"); ok {
		t.Fatal("the server offers PIPELINING")
	}
	m := testMsg(simple, "a@example.net", "unknown@example.net")
	before := writes.Load()
	if res := s.Send(context.Background(), m); res.Err != nil || res.Accepted() != 1 || res.Rcpts[1].Err == nil || res.Rcpts[1].Err.Code != 550 {
		t.Fatalf("got %v, accepted %d", res.Err, res.Accepted())
	}
	if n := writes.Load() - before; n != 5 { // MAIL, RCPT, RCPT, DATA, the message
		t.Fatalf("%d writes, want 5", n)
	}
	m.From = "refused@example.org"
	before, r := writes.Load(), rcpts.Load()
	if res := s.Send(context.Background(), m); res.Err == nil || res.Err.Stage != StageMail || res.Err.Code != 451 || !res.Err.UpstreamTrouble() {
		t.Fatalf("got %v", res.Err)
	}
	if n := writes.Load() - before; n != 1 || rcpts.Load() != r {
		t.Fatalf("%d writes and %d RCPT after a refused MAIL", n, rcpts.Load()-r)
	}
	before = writes.Load()
	if res := s.Send(context.Background(), testMsg(simple, "b@example.net")); res.Err != nil {
		t.Fatal(res.Err)
	}
	if n := writes.Load() - before; n != 5 { // RSET, MAIL, RCPT, DATA, the message
		t.Fatalf("%d writes, want 5", n)
	}
	if msgs := srv.Messages(); len(msgs) != 2 || string(msgs[1].Data) != wantData {
		t.Fatalf("delivered %+v", msgs)
	}
}

// scriptServer is a scripted upstream on net.Pipe offering PIPELINING, for
// replies go-smtp's server cannot give. reply answers each command line
// (and "." for the end of data); "" means the usual answer, "CLOSE" hangs
// up without a reply. A "|" in a reply splits it into separate writes, so
// that the client reads it in pieces. A read on net.Pipe never spans two
// writes, so writes holds what the client wrote, write by write.
type scriptServer struct {
	mu     sync.Mutex
	writes []string
	data   []string
}

func (ss *scriptServer) Writes() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]string(nil), ss.writes...)
}

func scriptedPipelining(t *testing.T, ehlo string, reply func(line string) string) (Options, *scriptServer) {
	return scriptedServer(t, ehlo, reply, nil)
}

// scriptedTLS is scriptedPipelining with TLS from the first byte (tls =
// "tls"), its CA in the returned Options' RootCAs.
func scriptedTLS(t *testing.T, ehlo string, reply func(line string) string) (Options, *scriptServer) {
	cfg, roots, err := smtptest.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	opts, ss := scriptedServer(t, ehlo, reply, cfg)
	opts.RootCAs = roots
	return opts, ss
}

func scriptedServer(t *testing.T, ehlo string, reply func(line string) string, tlsCfg *tls.Config) (Options, *scriptServer) {
	ss := &scriptServer{}
	if ehlo == "" {
		ehlo = "250-fake\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000\r\n"
	}
	opts := testOpts()
	opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, pipe := net.Pipe()
		go func() {
			defer pipe.Close()
			var srv net.Conn = pipe
			if tlsCfg != nil {
				srv = tls.Server(pipe, tlsCfg)
			}
			send := func(s string) bool {
				for _, part := range strings.Split(s, "|") {
					if _, err := srv.Write([]byte(part)); err != nil {
						return false
					}
				}
				return true
			}
			if !send("220 fake ESMTP\r\n") {
				return
			}
			buf := make([]byte, 1<<16)
			var pending string
			var data *strings.Builder
			for {
				n, err := srv.Read(buf)
				if err != nil {
					return
				}
				ss.mu.Lock()
				ss.writes = append(ss.writes, string(buf[:n]))
				ss.mu.Unlock()
				pending += string(buf[:n])
				for {
					line, rest, ok := strings.Cut(pending, "\r\n")
					if !ok {
						break
					}
					pending = rest
					if data != nil && line != "." {
						data.WriteString(line + "\r\n")
						continue
					}
					rep := reply(line)
					verb := strings.ToUpper(strings.Fields(line + " x")[0])
					if rep == "" {
						switch {
						case data != nil:
							rep = "250 2.0.0 Ok: queued as 4XyZ\r\n"
						case verb == "EHLO":
							rep = ehlo
						case verb == "DATA":
							rep = "354 End data with <CR><LF>.<CR><LF>\r\n"
						case verb == "QUIT":
							send("221 2.0.0 Bye\r\n")
							return
						default:
							rep = "250 2.0.0 Ok\r\n"
						}
					}
					if data != nil {
						ss.mu.Lock()
						ss.data = append(ss.data, data.String())
						ss.mu.Unlock()
						data = nil
					}
					if rep == "CLOSE" || !send(rep) {
						return
					}
					switch {
					case strings.HasPrefix(rep, "354"):
						data = &strings.Builder{}
					case strings.HasPrefix(rep, "421"):
						return
					}
				}
			}
		}()
		return c, nil
	}
	return opts, ss
}

var pipeUp = config.Upstream{Host: "127.0.0.1", Port: 25, TLS: "none"}

// The DATA command refused: no message data, the session usable, RSET in
// front of the next MAIL.
func TestPipelinedDataRefused(t *testing.T) {
	var datas atomic.Int32
	opts, ss := scriptedPipelining(t, "", func(line string) string {
		if line == "DATA" && datas.Add(1) == 1 {
			return "451 4.3.0 Error: queue file write error\r\n"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	res := s.Send(context.Background(), testMsg(simple, "a@example.net"))
	if e := res.Err; e == nil || e.Stage != StageData || e.Code != 451 || e.Class != Temporary || res.Rcpts[0].Err != e || !e.UpstreamTrouble() {
		t.Fatalf("got %v", res.Err)
	}
	if !s.Alive() {
		t.Fatal("session dead")
	}
	if res := s.Send(context.Background(), testMsg(simple, "a@example.net")); res.Err != nil || res.QueueID != "4XyZ" {
		t.Fatalf("next message: %v (queue id %q)", res.Err, res.QueueID)
	}
	w := ss.Writes()
	want := []string{
		"EHLO relay.test\r\n",
		"MAIL FROM:<sender@example.org> BODY=8BITMIME SIZE=87\r\nRCPT TO:<a@example.net>\r\nDATA\r\n",
		"RSET\r\nMAIL FROM:<sender@example.org> BODY=8BITMIME SIZE=87\r\nRCPT TO:<a@example.net>\r\nDATA\r\n",
		wireData + ".\r\n",
	}
	if strings.Join(w, "|") != strings.Join(want, "|") {
		t.Fatalf("the client wrote\n%q\nwant\n%q", w, want)
	}
}

// 421 in the middle of a group: the upstream is going away. The message
// goes to the next upstream (FailOver) and the session is dead.
func TestPipelined421MidGroup(t *testing.T) {
	opts, _ := scriptedPipelining(t, "", func(line string) string {
		if line == "RCPT TO:<b@example.net>" {
			return "421 4.3.2 Service shutting down, closing transmission channel\r\n"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	res := s.Send(context.Background(), testMsg(simple, "a@example.net", "b@example.net", "c@example.net"))
	if e := res.Err; e == nil || e.Code != 421 || e.Stage != StageRcpt || !FailOver(res) {
		t.Fatalf("got %v (failover %v)", res.Err, FailOver(res))
	}
	if res.Accepted() != 0 || s.Alive() {
		t.Fatalf("accepted %d, alive %v", res.Accepted(), s.Alive())
	}
}

// The connection closed in the middle of a group, before DATA was
// answered: nothing of the message went out, so a reused session is
// dialed again at once (DeadSession).
func TestPipelinedConnectionClosedMidGroup(t *testing.T) {
	res := sendClosedAt(t, func(line string) bool { return strings.HasPrefix(line, "RCPT") }, "a@example.net", "b@example.net")
	if e := res.Err; e == nil || e.Code != 0 || e.Stage != StageRcpt || e.Class != Temporary || !DeadSession(res) || LostInData(res) {
		t.Fatalf("got %v (dead session %v, lost in data %v)", res.Err, DeadSession(res), LostInData(res))
	}
}

// sendClosedAt sends a message to rcpts on a pipelining session whose
// upstream closes the connection at the first line closeAt is true of,
// and checks that the session is not alive after and that none of the
// message's data went out. It returns the Send's result.
func sendClosedAt(t *testing.T, closeAt func(line string) bool, rcpts ...string) *Result {
	t.Helper()
	opts, ss := scriptedPipelining(t, "", func(line string) string {
		if closeAt(line) {
			return "CLOSE"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	res := s.Send(context.Background(), testMsg(simple, rcpts...))
	if s.Alive() {
		t.Fatalf("session alive (result %v)", res.Err)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.data) != 0 {
		t.Fatalf("message data sent (result %v)", res.Err)
	}
	return res
}

// Multi-line replies that arrive in pieces (EHLO, a recipient's refusal,
// the final reply), with enhanced codes on each line.
func TestRepliesSplitAcrossReads(t *testing.T) {
	ehlo := "250-fake.example\r\n250-PIPE|LINING\r\n250-8BIT|MIME\r|\n250-SIZE 100000\r\n250 DS|N\r\n"
	opts, ss := scriptedPipelining(t, ehlo, func(line string) string {
		switch {
		case line == "RCPT TO:<b@example.net>":
			return "550-5.1.1 <b@example.net>: Recipient address|\r\n550-5.1.1 rejected: User unknown in virtual|\r\n550 5.1.1 mailbox table\r\n"
		case line == ".":
			return "250-2.0.0 Ok|\r\n250 2.0.0 Ok: queued as 8Abc|Def\r\n"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "DSN"} {
		if ok, _ := s.Extension(ext); !ok {
			t.Fatalf("%s not seen", ext)
		}
	}
	if _, v := s.Extension("SIZE"); v != "100000" {
		t.Fatalf("SIZE %q", v)
	}
	res := s.Send(context.Background(), testMsg(simple, "a@example.net", "b@example.net"))
	if res.Err != nil || res.Accepted() != 1 || res.QueueID != "8AbcDef" {
		t.Fatalf("got %v, accepted %d, queue id %q (reply %q)", res.Err, res.Accepted(), res.QueueID, res.Reply)
	}
	e := res.Rcpts[1].Err
	if e == nil || e.Code != 550 || e.Enhanced != "5.1.1" || e.Text != "<b@example.net>: Recipient address rejected: User unknown in virtual mailbox table" || !strings.Contains(e.Cause, "does not exist") {
		t.Fatalf("refusal %v: text %q", e, e.Text)
	}
	if w := ss.Writes(); len(w) != 3 || !strings.HasSuffix(w[1], "RCPT TO:<b@example.net>\r\nDATA\r\n") {
		t.Fatalf("writes %q", w)
	}
}

// A server that answers DATA with 354 although it accepted no recipient
// gets an empty message ended at once, never the message.
func TestPipelined354WithoutRecipients(t *testing.T) {
	var ends atomic.Int32
	opts, ss := scriptedPipelining(t, "", func(line string) string {
		switch {
		case strings.HasPrefix(line, "RCPT TO:<unknown"):
			return "550 5.1.1 User unknown\r\n"
		case line == "." && ends.Add(1) == 1:
			return "554 5.5.1 Error: no valid recipients\r\n"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	res := s.Send(context.Background(), testMsg(simple, "unknown@example.net"))
	if e := res.Err; e == nil || e.Stage != StageRcpt || e.Code != 550 || !s.Alive() {
		t.Fatalf("got %v, alive %v", res.Err, s.Alive())
	}
	if res := s.Send(context.Background(), testMsg(simple, "a@example.net")); res.Err != nil {
		t.Fatal(res.Err)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.data) != 2 || ss.data[0] != "" || ss.data[1] != wireData {
		t.Fatalf("data %q", ss.data)
	}
}

// Bytes sent after the 220 to STARTTLS and before the handshake would be
// read as replies inside TLS (a man in the middle's injection): refused.
func TestSTARTTLSInjectionRefused(t *testing.T) {
	opts, _ := scriptedPipelining(t, "250-fake\r\n250-PIPELINING\r\n250 STARTTLS\r\n", func(line string) string {
		if line == "STARTTLS" {
			return "220 2.0.0 Ready to start TLS\r\n250-injected\r\n"
		}
		return ""
	})
	_, err := Dial(context.Background(), config.Upstream{Host: "127.0.0.1", Port: 587, TLS: "starttls"}, opts)
	if e := asError(t, err); e.Stage != StageTLS || e.Class != Temporary || !strings.Contains(e.Error(), "after its 220") {
		t.Fatalf("got %v", e)
	}
}

// Dot-stuffing: every line that starts with "." gets another, whatever
// the chunks, and a message that does not end its last line gets one.
func TestDotWriter(t *testing.T) {
	for _, tc := range []struct {
		chunks []string
		want   string
	}{
		{[]string{".a\r\nb\r\n..c\r\n"}, "..a\r\nb\r\n...c\r\n.\r\n"},
		{[]string{"a\r\n", ".", "b\r\n.\r\n"}, "a\r\n..b\r\n..\r\n.\r\n"},
		{[]string{"a\r", "\n.b"}, "a\r\n..b\r\n.\r\n"},
		{nil, ".\r\n"},
	} {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		d := &dotWriter{w: bw, bol: true}
		for _, c := range tc.chunks {
			if _, err := d.Write([]byte(c)); err != nil {
				t.Fatal(err)
			}
		}
		d.end()
		bw.Flush()
		if out.String() != tc.want {
			t.Errorf("%q: %q, want %q", tc.chunks, out.String(), tc.want)
		}
	}
}

// A reused session the upstream closed while it was idle fails at MAIL
// without a reply, whether it failed a transaction before (RSET leads the
// group) or not: nothing of the message went out, and the queue dials
// again at once (DeadSession).
func TestPipelinedDeadSessionBeforeData(t *testing.T) {
	for _, dirty := range []bool{false, true} {
		srv := authServer(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
			if stage == smtptest.StageRcpt && arg == "unknown@example.net" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
			}
			return nil
		}})
		s := dialOK(t, srv.Upstream(), testOpts())
		if dirty {
			// A failed transaction: the next group starts with RSET.
			if res := s.Send(context.Background(), testMsg(simple, "unknown@example.net")); res.Err == nil || !s.dirty {
				t.Fatalf("refused recipient: %v, dirty %v", res.Err, s.dirty)
			}
		}
		srv.DropAll()
		res := s.Send(context.Background(), testMsg(simple, "a@example.net"))
		if e := res.Err; e == nil || e.Stage != StageMail || e.Code != 0 || !DeadSession(res) || s.Alive() {
			t.Fatalf("dirty %v: got %v (dead session %v, alive %v)", dirty, res.Err, DeadSession(res), s.Alive())
		}
		if srv.Count() != 0 {
			t.Fatal("message delivered")
		}
	}
}

// What the client takes as a reply, and what it refuses.
func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		text string // "" with code 0: an error
	}{
		{"250 2.0.0 Ok\r\n", 250, "2.0.0 Ok"},
		{"250\r\n", 250, ""},
		{"250-a\n250 b\n", 250, "a\nb"},
		{"550-5.1.1 a\r\n550 5.1.1 b\r\n", 550, "5.1.1 a\n5.1.1 b"},
		{"25O ok\r\n", 0, ""},
		{"250ok\r\n", 0, ""},
		{"199 x\r\n", 0, ""},
		{"250-a\r\n251 b\r\n", 0, ""},
		{"250 " + strings.Repeat("x", maxReplyLine) + "\r\n", 0, ""},
		{strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 x\r\n", 0, ""},
		{"250-a\r\n", 0, ""}, // then EOF
	} {
		cc, srv := net.Pipe()
		go func() {
			srv.Write([]byte(tc.in))
			srv.Close()
		}()
		c := newSMTPConn(cc, nil, testOpts().CommandTimeout)
		r, err := c.readReply()
		cc.Close()
		if tc.code == 0 {
			if err == nil {
				t.Errorf("%q: no error (reply %d %q)", tc.in, r.code, r.text)
			}
			continue
		}
		if err != nil || r.code != tc.code || r.text != tc.text {
			t.Errorf("%q: %d %q, %v; want %d %q", tc.in, r.code, r.text, err, tc.code, tc.text)
		}
	}
	e := reply{550, "5.1.1 a\n5.1.1 b"}.err()
	if e.Code != 550 || e.Enhanced != "5.1.1" || e.Message != "a\nb" {
		t.Errorf("reply error %+v", e)
	}
	if e := (reply{421, "Service not available"}).err(); e.Enhanced != "" || e.Message != "Service not available" {
		t.Errorf("reply error %+v", e)
	}
}

// The protocol trace redacts the SASL exchange by what the client is
// doing, not by what the upstream's replies say: an upstream that sends
// its next reply early, in the same read as the 334 that asks for the
// password, must not get the password into the trace.
func TestTraceSASLStateIsTheClients(t *testing.T) {
	const user, pass = "relay-user", "s3cret-Pa55"
	ehlo := "250-fake\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n"
	for _, final := range []string{"535 5.7.8 Error: authentication failed\r\n", "235 2.7.0 Authentication successful\r\n"} {
		opts, _ := scriptedTLS(t, ehlo, func(line string) string {
			if strings.HasPrefix(line, "AUTH LOGIN") {
				return "334 UGFzc3dvcmQ6\r\n" + final
			}
			return ""
		})
		var trace bytes.Buffer
		opts.Trace = &syncBuffer{b: &trace}
		up := config.Upstream{Host: "127.0.0.1", Port: 465, TLS: "tls", Username: user, Password: pass, Auth: []string{"LOGIN"}}
		s, err := Dial(context.Background(), up, opts)
		if s != nil {
			s.Close()
		}
		if strings.HasPrefix(final, "535") && (err == nil || asError(t, err).Class != AuthFailure) {
			t.Fatalf("%s: dial: %v", final, err)
		}
		if tr := trace.String(); strings.Contains(tr, base64.StdEncoding.EncodeToString([]byte(pass))) || !strings.Contains(tr, "C: [redacted]") {
			t.Fatalf("%s: the password in the trace, or no redaction:\n%s", final, tr)
		}
	}
}

// Likewise message data: a "." from the upstream right after its 354 does
// not end the summary while the client sends the message.
func TestTraceDataStateIsTheClients(t *testing.T) {
	opts, _ := scriptedPipelining(t, "", func(line string) string {
		if line == "DATA" {
			return "354 End data with <CR><LF>.<CR><LF>\r\n.\r\n"
		}
		return ""
	})
	var trace bytes.Buffer
	opts.Trace = &syncBuffer{b: &trace}
	s := dialOK(t, pipeUp, opts)
	s.Send(context.Background(), testMsg(simple, "a@example.net"))
	if tr := trace.String(); strings.Contains(tr, "Hello.") || !strings.Contains(tr, "C: [message data: 6 lines]") {
		t.Fatalf("message data in the trace, or no summary:\n%s", tr)
	}
}

// An upstream that answers every SASL response with another challenge
// does not keep the client (and the password) in the exchange: after a
// few rounds the client cancels it ("*") and fails AUTH, loud and never a
// bounce.
func TestAuthChallengesBounded(t *testing.T) {
	var responses atomic.Int32
	w := dialLoginFails(t, "p", "334 UGFzc3dvcmQ6\r\n", func(line string) string {
		if !strings.Contains(line, " ") && line != "QUIT" {
			if responses.Add(1) >= 50 {
				return "235 2.7.0 Authentication successful\r\n"
			}
			return "334 UGFzc3dvcmQ6\r\n"
		}
		return ""
	})
	if n := responses.Load(); n > 10 {
		t.Fatalf("%d responses to challenges", n)
	}
	if len(w) == 0 || w[len(w)-1] != "*\r\n" {
		t.Fatalf("the exchange was not cancelled: %q", w)
	}
}

// A refused RSET (in front of the next MAIL, after a failed transaction)
// is about the session, never about the message: the message is not
// bounced; the session is dropped like a lost one (nothing of the message
// went out), so the queue dials again at once (DeadSession), and fails
// over as for a lost connection if that fails too. A 421 is the session's
// end too: dialed again at once, then failover as for the upstream going
// away.
func TestRefusedRSETNeverBounces(t *testing.T) {
	for _, tc := range []struct {
		rset     string
		code     int
		dead     bool
		failover bool
	}{
		{"502 5.5.2 Error: command not recognized\r\n", 0, true, true},
		{"503 5.5.1 Error: too many errors\r\n", 0, true, true},
		{"451 4.3.0 Error: try again\r\n", 0, true, true},
		// A 421 ends the session: dialed again at once, as for a 421
		// the upstream sent while the session was idle, which is read
		// as the reply to RSET.
		{"421 4.7.0 Error: too many errors\r\n", 421, true, true},
	} {
		for _, noPipe := range []bool{false, true} {
			ehlo := ""
			if noPipe {
				ehlo = "250-fake\r\n250 8BITMIME\r\n"
			}
			opts, ss := scriptedPipelining(t, ehlo, func(line string) string {
				switch {
				case line == "RSET":
					return tc.rset
				case strings.HasPrefix(line, "RCPT TO:<unknown"):
					return "550 5.1.1 User unknown\r\n"
				}
				return ""
			})
			s := dialOK(t, pipeUp, opts)
			if res := s.Send(context.Background(), testMsg(simple, "unknown@example.net")); res.Err == nil || res.Err.Code != 550 {
				t.Fatalf("first message: %v", res.Err)
			}
			ss.mu.Lock()
			datas := len(ss.data) // an empty message after a 354 without recipients
			ss.mu.Unlock()
			res := s.Send(context.Background(), testMsg(simple, "a@example.net"))
			e := res.Err
			if e == nil || e.Class != Temporary || e.Stage != StageMail || e.Code != tc.code || DeadSession(res) != tc.dead || FailOver(res) != tc.failover || s.Alive() {
				t.Fatalf("RSET %q (no pipelining %v): got %v (class %v, dead session %v, failover %v, alive %v)",
					tc.rset, noPipe, e, e.Class, DeadSession(res), FailOver(res), s.Alive())
			}
			if !strings.Contains(e.Error(), strings.TrimSpace(tc.rset)) {
				t.Fatalf("the reply is not in %q", e.Error())
			}
			ss.mu.Lock()
			if len(ss.data) != datas {
				t.Fatalf("message data sent: %q", ss.data)
			}
			ss.mu.Unlock()
		}
	}
}

// smallBuffers gives a socket 4 KB send and receive buffers (before
// connect or listen, so that the TCP window is small too).
func smallBuffers(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096); serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// A group never outgrows the TCP window (RFC 2920 section 3.1): a
// message with thousands of recipients goes out in groups that each fit
// the write buffer, their replies read before the next group. Written as
// one group, it deadlocks against an upstream that answers each command
// as it reads it (as Postfix does once its reply buffer is full): the
// upstream blocks writing replies nobody reads, and stops reading the
// commands the client is blocked writing. Small socket buffers on both
// sides make the window small enough to show it with 3,000 recipients.
func TestPipelinedGroupsFitTheWindow(t *testing.T) {
	lc := net.ListenConfig{Control: smallBuffers}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("220 fake ESMTP\r\n"))
		br := bufio.NewReader(c)
		data := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\r\n")
			var rep string
			switch {
			case data && line == ".":
				data, rep = false, "250 2.0.0 Ok: queued as 4XyZ"
			case data:
				continue
			case strings.HasPrefix(line, "EHLO"):
				rep = "250-fake\r\n250-PIPELINING\r\n250 8BITMIME"
			case line == "DATA":
				data, rep = true, "354 End data with <CR><LF>.<CR><LF>"
			case strings.HasPrefix(line, "RCPT"):
				rep = "250 2.1.5 Ok"
			default:
				rep = "250 2.0.0 Ok"
			}
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write([]byte(rep + "\r\n")); err != nil {
				return
			}
		}
	}()
	opts := testOpts()
	opts.CommandTimeout = 5 * time.Second
	d := net.Dialer{Control: smallBuffers}
	opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	s := dialOK(t, pipeUp, opts)
	var to []string
	for i := 0; i < 3000; i++ {
		to = append(to, fmt.Sprintf("%s%05d@example.net", strings.Repeat("r", 50), i))
	}
	res := s.Send(context.Background(), testMsg(simple, to...))
	if res.Err != nil || res.Accepted() != len(to) || res.QueueID != "4XyZ" {
		t.Fatalf("accepted %d of %d: %v", res.Accepted(), len(to), res.Err)
	}
	if !s.Alive() {
		t.Fatal("session dead")
	}
}

// A MAIL refused at the head of a message whose commands take several
// groups: the replies of the group sent are read, the other groups never
// go, and the next message finds its replies in step.
func TestPipelinedMailRefusedManyGroups(t *testing.T) {
	var mails atomic.Int32
	opts, ss := scriptedPipelining(t, "", func(line string) string {
		switch {
		case strings.HasPrefix(line, "MAIL") && mails.Add(1) == 1:
			return "550 5.7.1 Sender rejected\r\n"
		case mails.Load() == 1 && (strings.HasPrefix(line, "RCPT") || line == "DATA"):
			return "503 5.5.1 Error: need MAIL command\r\n"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	var to []string
	for i := 0; i < 1000; i++ {
		to = append(to, fmt.Sprintf("rcpt%04d@example.net", i))
	}
	res := s.Send(context.Background(), testMsg(simple, to...))
	if e := res.Err; e == nil || e.Code != 550 || e.Stage != StageMail || !s.Alive() {
		t.Fatalf("got %v, alive %v", res.Err, s.Alive())
	}
	if res := s.Send(context.Background(), testMsg(simple, "a@example.net")); res.Err != nil || res.QueueID != "4XyZ" {
		t.Fatalf("next message: %v", res.Err)
	}
	w := ss.Writes()
	if len(w) != 4 || len(w[1]) > writeBuf || strings.Contains(w[1], "rcpt0999") || !strings.HasPrefix(w[2], "RSET\r\nMAIL FROM:") {
		t.Fatalf("%d writes: %q...", len(w), w[:min(len(w), 3)])
	}
}

// A 334 whose challenge is not base64: the exchange is cancelled with
// "*" before anything else is sent (the password least of all), and AUTH
// fails as an AuthFailure.
func TestAuthBadChallengeCancelled(t *testing.T) {
	const pass = "s3cret-Pa55"
	w := dialLoginFails(t, pass, "334 not base64!\r\n", func(string) string { return "" })
	if len(w) != 3 || !strings.HasPrefix(w[1], "AUTH LOGIN ") || w[2] != "*\r\n" || strings.Contains(strings.Join(w, ""), base64.StdEncoding.EncodeToString([]byte(pass))) {
		t.Fatalf("the client wrote %q", w)
	}
}

// dialLoginFails logs in with LOGIN and password pass to a scriptedTLS
// upstream that offers only AUTH LOGIN, answers it with challenge, "*"
// with 501 and any other line through reply ("" for the usual answer).
// The login must fail as an AuthFailure at StageAuth; it returns what the
// client wrote.
func dialLoginFails(t *testing.T, pass, challenge string, reply func(line string) string) []string {
	t.Helper()
	opts, ss := scriptedTLS(t, "250-fake\r\n250 AUTH LOGIN\r\n", func(line string) string {
		switch {
		case strings.HasPrefix(line, "AUTH LOGIN"):
			return challenge
		case line == "*":
			return "501 5.7.0 Authentication aborted\r\n"
		}
		return reply(line)
	})
	up := config.Upstream{Host: "127.0.0.1", Port: 465, TLS: "tls", Username: "u", Password: pass, Auth: []string{"LOGIN"}}
	s, err := Dial(context.Background(), up, opts)
	if s != nil {
		s.Close()
	}
	if err == nil {
		t.Fatalf("authenticated; the client wrote %q", ss.Writes())
	}
	if e := asError(t, err); e.Stage != StageAuth || e.Class != AuthFailure {
		t.Fatalf("got %v (class %v)", e, e.Class)
	}
	return ss.Writes()
}

// The connection lost while the client waits for the reply to DATA
// (before any of the message went out): as at MAIL or RCPT, a reused
// session is dialed again at once (DeadSession), and the failure is the
// upstream's, which another upstream may take (FailOver).
func TestConnectionLostAwaiting354(t *testing.T) {
	res := sendClosedAt(t, func(line string) bool { return line == "DATA" }, "a@example.net")
	if e := res.Err; e == nil || e.Code != 0 || e.Stage != StageData || e.Class != Temporary || !DeadSession(res) || !FailOver(res) || LostInData(res) {
		t.Fatalf("got %v (dead session %v, failover %v, lost in data %v)", res.Err, DeadSession(res), FailOver(res), LostInData(res))
	}
}

// A connection lost while the message data goes out (after the 354) is
// not a dead session: the upstream may have taken part of it, and the
// message stays on this upstream's schedule. It is lost in its data
// (LostInData), which a connection lost before the 354 is not.
func TestConnectionLostDuringData(t *testing.T) {
	opts := lineServer(t, func(verb string, w io.Writer) bool {
		switch verb {
		case "DATA":
			fmt.Fprintf(w, "354 go ahead\r\n")
			return false // and hang up
		case "EHLO":
			fmt.Fprintf(w, "250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		default:
			fmt.Fprintf(w, "250 2.0.0 Ok\r\n")
		}
		return true
	})
	s := dialOK(t, pipeUp, opts)
	res := s.Send(context.Background(), testMsg(simple, "a@example.net"))
	if e := res.Err; e == nil || e.Code != 0 || e.Stage != StageData || e.Class != Temporary || DeadSession(res) || FailOver(res) || !LostInData(res) {
		t.Fatalf("got %v (dead session %v, failover %v, lost in data %v)", res.Err, DeadSession(res), FailOver(res), LostInData(res))
	}
}

// A 421 that an upstream sent while the session was idle (an idle
// timeout, a restart) is what the client reads first when it sends the
// next transaction: it is the session's end, not an answer about the
// message, so the queue dials again at once (DeadSession) instead of
// failing over or opening the upstream's breaker.
func TestIdle421IsADeadSession(t *testing.T) {
	var mails atomic.Int32
	opts, _ := scriptedPipelining(t, "", func(line string) string {
		if strings.HasPrefix(line, "MAIL") && mails.Add(1) == 2 {
			return "421 4.4.2 fake.example Error: timeout exceeded\r\n"
		}
		return ""
	})
	s := dialOK(t, pipeUp, opts)
	if res := s.Send(context.Background(), testMsg(simple, "a@example.net")); res.Err != nil {
		t.Fatal(res.Err)
	}
	res := s.Send(context.Background(), testMsg(simple, "a@example.net"))
	if e := res.Err; e == nil || e.Code != 421 || e.Stage != StageMail || !DeadSession(res) {
		t.Fatalf("got %v (dead session %v)", res.Err, DeadSession(res))
	}
	if s.Alive() {
		t.Fatal("session alive after 421")
	}
}

// Close says QUIT and waits for the reply only briefly, not the command
// timeout: an upstream that never answers QUIT does not hold up a
// worker that changes upstream, nor relayd's stop.
func TestCloseDoesNotWaitForQUIT(t *testing.T) {
	opts := lineServer(t, func(verb string, w io.Writer) bool {
		switch verb {
		case "EHLO":
			fmt.Fprintf(w, "250-fake\r\n250 8BITMIME\r\n")
		case "QUIT":
			// No reply; the connection stays open until the client
			// closes it.
		default:
			fmt.Fprintf(w, "250 2.0.0 Ok\r\n")
		}
		return true
	})
	opts.CommandTimeout = 60 * time.Second
	s := dialOK(t, pipeUp, opts)
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

// The next message's commands (Message.Next, read and scanned ahead) go
// behind the end of data of the one before, in the same write: a batch
// of messages on a session is one write and one round trip per message,
// and each arrives as sent.
func TestNextCommandsBehindEndOfData(t *testing.T) {
	srv := authServer(t, smtptest.Options{})
	var writes atomic.Int64
	s := dialOK(t, srv.Upstream(), countingOpts(&writes))
	ms := []*Message{testMsg(simple, "a@example.net"), testMsg(simple, "b@example.net", "c@example.net"), testMsg(simple, "d@example.net")}
	for i := range ms[:len(ms)-1] {
		ms[i].Next = ms[i+1]
	}
	before := writes.Load()
	for i, m := range ms {
		if i+1 < len(ms) {
			// As the queue's worker does while the replies are awaited.
			m.Waiting = ms[i+1].Prepare
		}
		if res := s.Send(context.Background(), m); res.Err != nil || res.Accepted() != len(m.To) {
			t.Fatalf("send %d: %v", i, res.Err)
		}
	}
	// The first message's commands, then one write per message: its
	// data and the next one's commands.
	if n := writes.Load() - before; n != 4 {
		t.Errorf("%d writes for 3 messages, want 4", n)
	}
	msgs := srv.Messages()
	if len(msgs) != 3 || strings.Join(msgs[1].To, ",") != "b@example.net,c@example.net" {
		t.Fatalf("delivered %+v", msgs)
	}
	for _, m := range msgs {
		if string(m.Data) != wantData {
			t.Fatalf("data %q", m.Data)
		}
	}
}

// A message whose commands went ahead and that is not sent next (the
// queue stopped, another message came first) leaves the session in a
// state no Send can use: the session is dropped, found dead by that Send
// (DeadSession: dialed again at once) or closed without QUIT, and the
// upstream never gets the message, whose data never went out.
func TestNextNotSentDropsTheSession(t *testing.T) {
	for _, closeIt := range []bool{false, true} {
		srv := authServer(t, smtptest.Options{})
		s := dialOK(t, srv.Upstream(), testOpts())
		first, ahead, other := testMsg(simple, "a@example.net"), testMsg(simple, "ahead@example.net"), testMsg(simple, "other@example.net")
		first.Next = ahead
		first.Waiting = ahead.Prepare
		if res := s.Send(context.Background(), first); res.Err != nil {
			t.Fatal(res.Err)
		}
		if s.ahead == nil {
			t.Fatal("the next message's commands did not go ahead")
		}
		if closeIt {
			s.Close()
		} else if res := s.Send(context.Background(), other); res.Err == nil || !DeadSession(res) {
			t.Fatalf("another message on the session: %v (dead session %v)", res.Err, DeadSession(res))
		}
		if s.Alive() {
			t.Fatal("session alive")
		}
		time.Sleep(100 * time.Millisecond)
		if msgs := srv.Messages(); len(msgs) != 1 || msgs[0].To[0] != "a@example.net" {
			t.Fatalf("close %v: delivered %+v", closeIt, msgs)
		}
	}
}

// The message before fails at its end of data: the next one's commands,
// already sent, open its own transaction, and it is delivered.
func TestNextAfterARefusedMessage(t *testing.T) {
	var ends atomic.Int64
	srv := authServer(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageDataEnd && ends.Add(1) == 1 {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam"}
		}
		return nil
	}})
	s := dialOK(t, srv.Upstream(), testOpts())
	first, next := testMsg(simple, "a@example.net"), testMsg(simple, "b@example.net")
	first.Next, first.Waiting = next, next.Prepare
	if res := s.Send(context.Background(), first); res.Err == nil || res.Err.Code != 554 || res.Err.Stage != StageDataEnd {
		t.Fatalf("first: %v", res.Err)
	}
	if s.ahead == nil {
		t.Fatal("the next message's commands did not go ahead")
	}
	if res := s.Send(context.Background(), next); res.Err != nil || res.Accepted() != 1 {
		t.Fatalf("next: %v", res.Err)
	}
	if msgs := srv.Messages(); len(msgs) != 1 || msgs[0].To[0] != "b@example.net" {
		t.Fatalf("delivered %+v", msgs)
	}
}
