package queue

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Every known upstream refusal, through real relay sessions to an
// in-process upstream: the log line of the recipient carries cause= and
// fix= in plain words, and a bounced one's DSN says the same.
func TestRefusalsExplained(t *testing.T) {
	const user, pass = "relay@example.com", "s3cret-Pa55word!"
	refuse := func(stage string, code int, enh smtp.EnhancedCode, text string) func(context.Context, string, string) error {
		return func(_ context.Context, st, arg string) error {
			if st == stage && !(stage == smtptest.StageMail && arg == "") { // the bounce itself goes through
				if stage == smtptest.StageRcpt && arg != "x@example.net" {
					return nil
				}
				return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name   string
		opts   smtptest.Options
		up     func(*config.Upstream)
		status string // in the delivery line
		cause  string
		fix    string
	}{
		{name: "relay denied, tls none", opts: smtptest.Options{NoTLS: true, Username: user, Password: pass},
			up:     func(u *config.Upstream) { u.TLS, u.Username, u.Password = "none", "", "" },
			status: "deferred", cause: `relayd did not authenticate (tls = \"none\" and no username`, fix: "set username and password_file"},
		{name: "relay denied, no username", opts: smtptest.Options{Username: user, Password: pass},
			up:     func(u *config.Upstream) { u.Username, u.Password = "", "" },
			status: "deferred", cause: "relayd did not authenticate (no username is set", fix: "set username and password_file"},
		{name: "wrong password", opts: smtptest.Options{Username: user, Password: pass},
			up:     func(u *config.Upstream) { u.Password = "wrong" },
			status: "deferred", cause: "refused our credentials", fix: "password_file"},
		{name: "STARTTLS required", opts: smtptest.Options{NoTLS: true, Hook: refuse(smtptest.StageMail, 530, smtp.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first")},
			up:     func(u *config.Upstream) { u.TLS, u.Username, u.Password = "none", "", "" },
			status: "deferred", cause: "requires TLS", fix: `tls = \"starttls\"`},
		{name: "sender not owned", opts: smtptest.Options{Hook: refuse(smtptest.StageMail, 553, smtp.EnhancedCode{5, 7, 1}, "<sender@example.org>: Sender address rejected: not owned by user relay@example.com")},
			status: "bounced", cause: "not owned by the authenticated user", fix: "[senders]"},
		{name: "too large (SIZE)", opts: smtptest.Options{MaxSize: 20},
			status: "bounced", cause: "message too large for the upstream", fix: "max_message_size"},
		{name: "too large (552)", opts: smtptest.Options{Hook: refuse(smtptest.StageDataEnd, 552, smtp.EnhancedCode{5, 3, 4}, "Error: message file too big")},
			status: "bounced", cause: "too large", fix: "max_message_size"},
		{name: "unknown recipient", opts: smtptest.Options{Hook: refuse(smtptest.StageRcpt, 550, smtp.EnhancedCode{5, 1, 1}, "<x@example.net>: Recipient address rejected: User unknown in virtual mailbox table")},
			status: "bounced", cause: "does not exist", fix: "check the recipient address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.New(t, tc.opts)
			up := srv.Upstream()
			if tc.up != nil {
				tc.up(&up)
			}
			opts := realOpts()
			e := newEnv(t, Settings{Upstreams: NewUpstreams([]config.Upstream{up}, opts, nil)})
			id := e.enqueue(t, 1001, "sender@example.org", "x@example.net")
			// The DSN stays queued, to be read below.
			e.q.Holds = func(x string) bool { return x != id }
			e.run()
			var line string
			for _, l := range strings.Split(e.log.String(), "\n") {
				if strings.Contains(l, "event=delivery id="+id+" to=x@example.net ") {
					line = l
				}
			}
			if !strings.Contains(line, "status="+tc.status+" ") || !strings.Contains(line, " cause=") || !strings.Contains(line, " fix=") ||
				!strings.Contains(line, tc.cause) || !strings.Contains(line, tc.fix) {
				t.Fatalf("delivery line %q\nwant status=%s, cause with %q, fix with %q; log:\n%s", line, tc.status, tc.cause, tc.fix, e.log)
			}
			if tc.status != "bounced" {
				if st := e.state(t, id); st != "deferred" {
					t.Errorf("state %q: a configuration problem must keep the mail queued", st)
				}
				return
			}
			// The DSN, as queued.
			_, after, ok := strings.Cut(e.log.String(), "event=bounced id="+id+" dsn=")
			if !ok {
				t.Fatalf("not bounced:\n%s", e.log)
			}
			f, m, err := e.sp.OpenMessage(strings.Fields(after)[0])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			body, err := io.ReadAll(m.Body(f))
			if err != nil {
				t.Fatal(err)
			}
			dsn := strings.Join(strings.Fields(string(body)), " ")
			for _, want := range []string{"What it means: ", unq(tc.cause), "What to do: ", unq(tc.fix)} {
				if !strings.Contains(dsn, want) {
					t.Errorf("DSN lacks %q:\n%s", want, body)
				}
			}
		})
	}
}

// realOpts are the relay.Options of the tests that send through real
// relay sessions.
func realOpts() relay.Options {
	return relay.Options{Hostname: "web1.example.com", ConnectTimeout: 10 * time.Second, CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second}
}

func unq(s string) string { return strings.ReplaceAll(s, `\"`, `"`) }

// A reused session whose upstream answers the next transaction with 421
// (it timed the idle session out, or is restarting, and said so before
// closing) is dialed again at once: the message goes out in the same
// pass, and the upstream's breaker stays closed.
func TestIdle421RedialsAtOnce(t *testing.T) {
	var mails atomic.Int32
	srv := smtptest.New(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageMail && mails.Add(1) == 2 {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Error: timeout exceeded"}
		}
		return nil
	}})
	opts := realOpts()
	e := newEnv(t, Settings{Concurrency: 1, Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, opts, nil)})
	ids := []string{e.enqueue(t, 1001, "sender@example.org", "x@example.net"), e.enqueue(t, 1001, "sender@example.org", "y@example.net")}
	e.run()
	if n := srv.Count(); n != 2 {
		t.Fatalf("upstream got %d messages, want 2; log:\n%s", n, e.log)
	}
	for _, id := range ids {
		if e.sp.HasMessage(id) {
			t.Errorf("%s still queued", id)
		}
	}
	if strings.Contains(e.log.String(), "event=upstream-down") {
		t.Errorf("the upstream's breaker opened for an idle session's 421:\n%s", e.log)
	}
}

// A batch through real sessions, each message's commands going out
// behind the end of data of the one before (relay.Message.Next): every
// message arrives once, a refused one in the middle is refused alone,
// and after a Stop in the middle of the batch the message whose commands
// went ahead is not delivered (its session is dropped, its data never
// sent) and goes back to incoming with the rest, to be sent once by the
// next run.
func TestBatchCommandsAheadOnRealSessions(t *testing.T) {
	var e *env
	var ends atomic.Int32
	// Without TLS, so that what the client writes can be read.
	srv := smtptest.New(t, smtptest.Options{NoTLS: true, Hook: func(ctx context.Context, stage, arg string) error {
		switch {
		case stage == smtptest.StageRcpt && arg == "bad@example.net":
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
		case stage == smtptest.StageDataEnd && ends.Add(1) == 6:
			e.q.Stop()
		}
		return nil
	}})
	opts := realOpts()
	var ahead atomic.Int32 // writes of an end of data with the next message's MAIL behind it
	opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return aheadConn{Conn: c, ahead: &ahead}, nil
	}
	e = newEnv(t, Settings{Concurrency: 1, Upstreams: NewUpstreams([]config.Upstream{srv.Upstream()}, opts, nil)})
	var ids []string
	for i := 0; i < 12; i++ {
		to := fmt.Sprintf("r%d@example.net", i)
		if i == 2 {
			to = "bad@example.net"
		}
		ids = append(ids, e.enqueue(t, 1001, "sender@example.org", to))
	}
	// The bounce of the refused one stays queued.
	e.q.Holds = func(x string) bool { return !slices.Contains(ids, x) }
	runUntilStopped(t, e.q)
	got := map[string]int{}
	for _, m := range srv.Messages() {
		got[m.To[0]]++
	}
	if len(got) != 6 {
		t.Fatalf("before the stop the upstream got %v, want the first 6 but the refused one", got)
	}
	if ahead.Load() == 0 {
		t.Fatal("no message's commands went out behind the end of data of the one before")
	}
	in, _ := e.sp.List(spool.Incoming)
	back := slices.DeleteFunc(in, func(x string) bool { return !slices.Contains(ids, x) })
	want := len(ids) - len(got)
	if strings.Contains(e.log.String(), "event=bounced id="+ids[2]) {
		want-- // the refused one came before the stop
	}
	if len(back) != want {
		t.Fatalf("back in incoming: %v, want the %d not sent; delivered %v\n%s", back, want, got, e.log)
	}
	for _, id := range back {
		if d, err := e.sp.ReadState(spool.Incoming, id); err == nil && d.Attempts != 0 {
			t.Errorf("%s put back with %d attempts charged", id, d.Attempts)
		}
		if strings.Contains(e.log.String(), "event=delivery id="+id) {
			t.Errorf("%s is back in incoming, and was delivered:\n%s", id, e.log)
		}
	}
	q := New(e.sp, maillog.New(&syncBuf{b: e.log}, e.clk.Now), e.clk.Now, e.q.settings())
	q.Holds = e.q.Holds
	if err := q.Load(); err != nil {
		t.Fatal(err)
	}
	startRun(t, q).pass(t)
	got = map[string]int{}
	for _, m := range srv.Messages() {
		got[m.To[0]]++
	}
	for i := 0; i < 12; i++ {
		to := fmt.Sprintf("r%d@example.net", i)
		if want := 1; i == 2 {
			if got["bad@example.net"] != 0 {
				t.Errorf("the refused message was delivered")
			}
		} else if got[to] != want {
			t.Errorf("%s delivered %d times", to, got[to])
		}
	}
	if !strings.Contains(e.log.String(), "event=bounced id="+ids[2]) {
		t.Errorf("the refused message is not bounced:\n%s", e.log)
	}
}

// aheadConn counts the writes in which an end of data is followed by the
// next message's MAIL command.
type aheadConn struct {
	net.Conn
	ahead *atomic.Int32
}

func (c aheadConn) Write(b []byte) (int, error) {
	if strings.Contains(string(b), "\r\n.\r\nMAIL FROM:") {
		c.ahead.Add(1)
	}
	return c.Conn.Write(b)
}
