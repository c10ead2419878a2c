package maillog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testLogger() (*Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return New(&b, func() time.Time { return time.Date(2026, 11, 23, 14, 40, 0, 123e6, time.UTC) }), &b
}

const ts = "ts=2026-11-23T14:40:00.123Z "

// The typed events write the keys of their lines in their fixed order,
// with the same escaping as every other value, and leave out optional
// values that are empty.
func TestTypedEvents(t *testing.T) {
	next := time.Date(2026, 11, 23, 15, 0, 0, 0, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		log  func(l *Logger)
		want string
	}{
		{func(l *Logger) { l.Delivery("ID1", "<a@b>", "smtp.example:587", "250 2.0.0 Ok: queued as X", "X") },
			`event=delivery id=ID1 to=<a@b> upstream=smtp.example:587 status=sent reply="250 2.0.0 Ok: queued as X" upstream_id=X`},
		{func(l *Logger) { l.Delivery("ID1", "<a@b>", "u:25", "250 ok", "") },
			`event=delivery id=ID1 to=<a@b> upstream=u:25 status=sent reply="250 ok" upstream_id=""`},
		{func(l *Logger) {
			l.DeliveryFailed("ID1", "<a@b>", "u:25", Bounced, "550 no\r\nts=0", "lifetime exceeded", Why{Stage: "rcpt", Fix: "x"})
		},
			`event=delivery id=ID1 to=<a@b> upstream=u:25 status=bounced reply="550 no\r\nts=0" reason="lifetime exceeded" stage=rcpt fix=x`},
		{func(l *Logger) { l.MessageError("ID1", "cannot claim", errors.New("gone")) },
			`event=error id=ID1 reason="cannot claim" error=gone`},
		{func(l *Logger) { l.Error("cannot list incoming", nil, slog.Int("n", 3)) },
			`event=error reason="cannot list incoming" n=3`},
		{func(l *Logger) { l.Deferred("ID1", 2, next, 1, "421 busy", Why{Cause: "c"}) },
			`event=deferred id=ID1 attempts=2 next=2026-11-23T14:00:00Z nrcpt=1 reason="421 busy" cause=c`},
		{func(l *Logger) {
			l.Pickup(Pickup{ID: "ID1", UID: 1001, User: "u", Script: "/a b.php", From: "<a@b>", Rcpts: 2, Size: 99, Via: "smtp",
				Client: "127.0.0.1:4000", PID: 7, Process: "/usr/bin/php", Ignored: []string{"-oi", "-t"}})
		},
			`event=pickup id=ID1 uid=1001 user=u script="/a b.php" from=<a@b> nrcpt=2 size=99 via=smtp client=127.0.0.1:4000 pid=7 process=/usr/bin/php ignored="-oi -t"`},
		{func(l *Logger) {
			l.Policy(PolicyDecision{ID: "ID1", UID: 33, User: "www-data", Action: "hold", Limit: "messages_per_hour", Max: 100, Got: 101, Source: "default", Until: next})
		},
			`event=policy id=ID1 uid=33 user=www-data action=hold limit=messages_per_hour max=100 got=101 source=default until=2026-11-23T14:00:00Z`},
		{func(l *Logger) { l.AuthFailed("", "u:587", "535 no", Why{Fix: "f"}) },
			`event=auth-failed upstream=u:587 reply="535 no" fix=f`},
		{func(l *Logger) { l.UpstreamUp("u:25", "", 1500*time.Millisecond, 2) },
			`event=upstream-up upstream=u:25 down_for=1.5s failures=2`},
		{func(l *Logger) { l.Reloaded("/etc/mailshim/mailshim.conf", 1, []string{"spool", "listen"}) },
			`event=reload status=ok config=/etc/mailshim/mailshim.conf upstreams=1 needs_restart=spool,listen`},
		{func(l *Logger) { l.Hold("ID1", 0) }, `event=hold id=ID1 by_uid=0`},
		{func(l *Logger) { l.ListenTLSOff(nil, "no cert_file/key_file in [listen]: STARTTLS not offered", "") },
			`event=listen tls=off reason="no cert_file/key_file in [listen]: STARTTLS not offered"`},
		{func(l *Logger) { l.ListenUnavailable("127.0.0.1:25", errors.New("denied"), "use systemd") },
			`event=listen status=unavailable addr=127.0.0.1:25 error=denied fix="use systemd"`},
		{func(l *Logger) {
			l.LimitTripped(KV("account", "www-data", "uid", 33), "root@example.org", "not sent: x")
		},
			`event=limit-tripped account=www-data uid=33 notice_to=root@example.org notice="not sent: x"`},
		{func(l *Logger) { l.LimitTripped(KV("account", "a"), "", "") }, `event=limit-tripped account=a notice_to=""`},
		{func(l *Logger) {
			l.SMTPRefusedN("busy: too many connections", 1, KV("client", "127.0.0.1:5", "uid", 65534)...)
		},
			`event=smtp-refused reason="busy: too many connections" refused=1 client=127.0.0.1:5 uid=65534`},
		{func(l *Logger) {
			l.SMTPSessionError("127.0.0.1:5", 33, "www-data", "<a@b>", "451 x", slog.Int("nrcpt", 2))
		},
			`event=smtp-error client=127.0.0.1:5 uid=33 user=www-data from=<a@b> nrcpt=2 error="451 x"`},
	} {
		l, b := testLogger()
		tc.log(l)
		if want := ts + tc.want + "\n"; b.String() != want {
			t.Errorf("got  %q\nwant %q", b.String(), want)
		}
	}
}

// A slog.Logger on the Logger's Handler writes the same lines, so code
// that speaks slog logs into the mail log unchanged.
func TestSlogHandler(t *testing.T) {
	l, b := testLogger()
	sl := slog.New(l.Handler()).With("id", "ID1").WithGroup("tls")
	sl.Info("listen", "on", true, "cert", "/etc/a b.pem", "bad key", 1)
	got := b.String()
	want := ` event=listen id=ID1 tls_on=true tls_cert="/etc/a b.pem" badkey=1` + "\n"
	if !strings.HasPrefix(got, "ts=") || !strings.HasSuffix(got, want) {
		t.Errorf("got %q, want ts=... %q", got, want)
	}
}

// The Observer receives every event with the time of its line, and its
// attributes in order with the keys and values the line holds.
func TestObserver(t *testing.T) {
	l, _ := testLogger()
	var got *Entry
	// An Observer keeps nothing of e: a copy.
	l.SetObserver(func(e *Entry) { c := *e; c.Attrs = slices.Clone(e.Attrs); got = &c })
	l.Pickup(Pickup{ID: "ID1", UID: 1001, User: "u", From: "<a@b>", Rcpts: 2, Size: 99, Via: "maildrop"})
	if got == nil || got.Event != "pickup" || !got.Time.Equal(time.Date(2026, 11, 23, 14, 40, 0, 123e6, time.UTC)) {
		t.Fatalf("observed %+v", got)
	}
	var keys []string
	for _, a := range got.Attrs {
		keys = append(keys, a.Key)
	}
	if k := strings.Join(keys, " "); k != "id uid user script from nrcpt size via" {
		t.Errorf("keys %q", k)
	}
	for k, want := range map[string]string{"id": "ID1", "uid": "1001", "size": "99", "script": "", "via": "maildrop", "nope": ""} {
		if v := got.Str(k); v != want {
			t.Errorf("Str(%s) = %q, want %q", k, v, want)
		}
	}
	if got.Attrs[1].Value.Int64() != 1001 {
		t.Errorf("uid is not an integer: %v", got.Attrs[1].Value)
	}
	l.event("x", "k", "v\n", "bad key", 1, "odd")
	if got.Str("k") != "v\n" || got.Str("badkey") != "1" || got.Str("odd") != "" || len(got.Attrs) != 3 {
		t.Errorf("untyped event observed as %+v", got.Attrs)
	}
	sl := slog.New(l.Handler()).With("id", "ID2").WithGroup("tls")
	sl.Info("listen", "on", true)
	if got.Str("id") != "ID2" || got.Str("tls_on") != "true" {
		t.Errorf("slog event observed as %+v", got.Attrs)
	}
	l.SetObserver(nil)
	l.Stopped(1)
	if got.Event != "listen" {
		t.Errorf("observer still called after SetObserver(nil)")
	}
}

// A nil Logger logs nothing (code under test runs without one).
func TestNilLogger(t *testing.T) {
	var l *Logger
	l.Delivery("a", "b", "c", "d", "e")
	l.event("x", "k", 1)
}

func BenchmarkDelivery(b *testing.B) {
	l := New(discard{}, nil)
	for b.Loop() {
		l.Delivery("0006270A1B2C3D4E5F60", "<someone@example.org>", "smtp.example.org:587", "250 2.0.0 Ok: queued as 4XyZ", "4XyZ")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkPickup is the line every message the SMTP listener queues
// writes, through a Buffer and with an Observer, as relayd logs it.
func BenchmarkPickup(b *testing.B) {
	l := New(NewBuffer(discard{}, FlushDelay), nil)
	l.SetObserver(func(e *Entry) {})
	p := Pickup{ID: "0006270A1B2C3D4E5F60", UID: 1001, User: "www-data", Script: "/var/www/html/index.php",
		From: "www-data@host.example", Rcpts: 1, Size: 2310, Via: "smtp", Client: "127.0.0.1:43512",
		PID: 123456, Process: "/usr/bin/php8.4"}
	b.ReportAllocs()
	for b.Loop() {
		l.Pickup(p)
		l.WriteOut()
	}
}

// Lines written at once by many goroutines, through the pooled buffers
// and Entry, stay apart: each line and each Entry the Observer sees hold
// the attributes of their own event only, none of a longer line written
// before with the same buffer.
func TestLinesApart(t *testing.T) {
	l, out := testLogger()
	var bad atomic.Int32
	l.SetObserver(func(e *Entry) {
		want := 8 // a maildrop pickup: id uid user script from nrcpt size via
		if e.Str("via") == "smtp" {
			want = 12 // and caller client pid process
		}
		if e.Event != "pickup" || len(e.Attrs) != want || e.Str("user") != e.Str("id") || e.Str("script") != "/s/"+e.Str("id") {
			bad.Add(1)
		}
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := fmt.Sprintf("g%d-%d", g, i)
				p := Pickup{ID: id, UID: i, User: id, Script: "/s/" + id, From: "<a@b>", Rcpts: 1, Size: 9, Via: "maildrop"}
				if i%2 == 0 {
					p.Via, p.Caller, p.Client, p.PID, p.Process = "smtp", "c", "127.0.0.1:1", 7, "/bin/p"
				}
				l.Pickup(p)
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d entries observed with attributes not of their own line", n)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines, want %d", len(lines), 8*500)
	}
	for _, ln := range lines {
		f := strings.Fields(ln)
		id := strings.TrimPrefix(f[2], "id=")
		want := 10
		if strings.Contains(ln, " via=smtp ") {
			want = 14
		}
		if len(f) != want || f[4] != "user="+id || f[5] != "script=/s/"+id {
			t.Fatalf("line %q: not its own event's attributes", ln)
		}
	}
}
