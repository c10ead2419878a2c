package pickup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/maillog"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

var testNow = time.Date(2026, 11, 23, 14, 40, 0, 0, time.UTC)

type env struct {
	q   *spool.Queue
	p   *Pickup
	log *bytes.Buffer
	md  *os.File
}

func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Hostname = "web1.example.com"
	cfg.AliasesFile = ""
	cfg.Aliases = map[string][]string{"root": {"ops@example.com"}, "team": {"alice", "bob@example.org", "team"}}
	cfg.Senders = map[string]string{"cronuser": "cron@example.com"}
	return cfg
}

func newEnv(t testing.TB, cfg *config.Config) *env {
	t.Helper()
	root := filepath.Join(t.TempDir(), "spool")
	if err := spool.Prepare(root, spool.CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	q, err := spool.OpenQueue(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	rw, errs := NewRewriter(cfg)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var log bytes.Buffer
	clock := func() time.Time { return testNow }
	p, err := New(q, rw, maillog.New(&log, clock))
	if err != nil {
		t.Fatal(err)
	}
	p.Now = clock
	t.Cleanup(p.Close)
	md, err := spool.OpenDir(root, spool.DirMaildrop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { md.Close() })
	return &env{q: q, p: p, log: &log, md: md}
}

// drop writes a maildrop file as sendmail would and returns its ID.
func (e *env) drop(t testing.TB, m spool.Meta, body string) string {
	t.Helper()
	if m.ID == "" {
		m.ID = spool.NewID(testNow)
	}
	if m.Time.IsZero() {
		m.Time = testNow
	}
	m.Origin.UID, m.Origin.GID = os.Getuid(), os.Getgid()
	d, err := spool.NewDrop(e.md, &m, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(d, body)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func (e *env) queued(t *testing.T, id string) (*spool.Meta, string) {
	t.Helper()
	f, m, err := e.q.OpenMessage(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(m.Body(f))
	if err != nil {
		t.Fatal(err)
	}
	return m, string(b)
}

func maildropNames(t *testing.T, e *env) []string {
	ents, err := os.ReadDir(filepath.Join(e.q.Root, spool.DirMaildrop))
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, x := range ents {
		n = append(n, x.Name())
	}
	return n
}

func me(t *testing.T) (int, string) {
	uid := os.Getuid()
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		t.Skipf("uid %d has no passwd entry", uid)
	}
	return uid, u.Username
}

func TestPickupRewritesAndQueues(t *testing.T) {
	e := newEnv(t, testConfig())
	uid, name := me(t)
	id := e.drop(t, spool.Meta{
		Env:    spool.Envelope{Recipients: []string{"root", "team", "carol@example.net"}},
		Origin: spool.Origin{User: name, Script: "/home/u/site/contact.php", ScriptSource: "SCRIPT_FILENAME", Caller: "php", Ignored: []string{"-oem"}},
	}, "From: "+name+" (Cron Daemon)\nTo: root\nX-Mailshim-Origin: uid=0 forged\nSubject: hi\n\nbody line\n")
	if n := e.p.scan(context.Background()); n != 1 {
		t.Fatalf("Scan queued %d, log:\n%s", n, e.log)
	}
	if names := maildropNames(t, e); len(names) != 0 {
		t.Fatalf("maildrop not emptied: %v", names)
	}
	if st, err := e.q.Locate(id); err != nil || st != spool.Incoming {
		t.Fatalf("state %q %v", st, err)
	}
	m, body := e.queued(t, id)
	if m.ID != id || m.Origin.UID != uid || m.Origin.User != name {
		t.Errorf("meta %+v", m)
	}
	if want := name + "@web1.example.com"; m.Env.Sender != want {
		t.Errorf("sender %q, want %q", m.Env.Sender, want)
	}
	wantRcpts := []string{"ops@example.com", "alice@web1.example.com", "bob@example.org", "team@web1.example.com", "carol@example.net"}
	if strings.Join(m.Env.Recipients, ",") != strings.Join(wantRcpts, ",") {
		t.Errorf("recipients %q, want %q", m.Env.Recipients, wantRcpts)
	}
	date := testNow.Format(time.RFC1123Z)
	want := "Received: from uid " + strconv.Itoa(uid) + " (" + name + ") by web1.example.com (mailshim) id " + id + "; " + date + "\n" +
		"X-Mailshim-Origin: uid=" + strconv.Itoa(uid) + " user=" + name + " script=/home/u/site/contact.php\n" +
		"From: " + name + "@web1.example.com (Cron Daemon)\n" +
		"To: root@web1.example.com\n" +
		"X-Mailshim-Forged-Origin: uid=0 forged\n" +
		"Subject: hi\n" +
		"Date: " + date + "\n" +
		"Message-ID: <" + id + "@web1.example.com>\n" +
		"\nbody line\n"
	if body != want {
		t.Errorf("queued message:\n%s\nwant:\n%s", body, want)
	}
	wantLog := "ts=2026-11-23T14:40:00.000Z event=pickup id=" + id + " uid=" + strconv.Itoa(uid) + " user=" + name +
		" script=/home/u/site/contact.php from=" + name + "@web1.example.com nrcpt=5 size=" + strconv.Itoa(len(want)) +
		" via=maildrop caller=php ignored=-oem\n" +
		"ts=2026-11-23T14:40:00.000Z event=forged-trace id=" + id + " uid=" + strconv.Itoa(uid) + " user=" + name +
		" fields=X-Mailshim-Origin action=\"renamed X-Mailshim-Forged-*\"\n"
	if e.log.String() != wantLog {
		t.Errorf("log:\n%s\nwant:\n%s", e.log, wantLog)
	}
}

func TestPickupSenderMap(t *testing.T) {
	cfg := testConfig()
	_, name := me(t)
	cfg.Senders = map[string]string{name: "webmaster@example.com", "nobody-else": "other@example.com"}
	e := newEnv(t, cfg)
	id := e.drop(t, spool.Meta{Env: spool.Envelope{Recipients: []string{"x@example.org"}}, Origin: spool.Origin{User: name}},
		"From: Site <nobody-else@web1.example.com>\nSubject: s\n\nb\n")
	e.p.scan(context.Background())
	m, body := e.queued(t, id)
	if m.Env.Sender != "webmaster@example.com" {
		t.Errorf("sender %q", m.Env.Sender)
	}
	if !strings.Contains(body, "\nFrom: Site <other@example.com>\n") {
		t.Errorf("From not rewritten:\n%s", body)
	}
	// An explicit foreign sender and From are kept; a missing From is
	// added, written as sendmail writes it (message.FormatFrom).
	id2 := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "me@example.org", FullName: "Me Myself", Recipients: []string{"x@example.org"}}, Origin: spool.Origin{User: name}},
		"Subject: s\n\nb\n")
	e.p.scan(context.Background())
	m2, body2 := e.queued(t, id2)
	if m2.Env.Sender != "me@example.org" || !strings.Contains(body2, "\nFrom: Me Myself <me@example.org>\n") {
		t.Errorf("sender %q, body:\n%s", m2.Env.Sender, body2)
	}
}

func TestPickupNoHeaderSeparator(t *testing.T) {
	e := newEnv(t, testConfig())
	id := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}, Origin: spool.Origin{User: "u"}},
		"just a body line without headers\nsecond\n")
	e.p.scan(context.Background())
	_, body := e.queued(t, id)
	if !strings.HasSuffix(body, "Message-ID: <"+id+"@web1.example.com>\n\njust a body line without headers\nsecond\n") {
		t.Errorf("body:\n%s", body)
	}
}

func TestPickupQuarantine(t *testing.T) {
	e := newEnv(t, testConfig())
	md := filepath.Join(e.q.Root, spool.DirMaildrop)
	good := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}}, "Subject: s\n\nb\n")
	// A second link to a good file: refused (the hard-link attack).
	hl := spool.NewID(testNow)
	if err := os.Link(filepath.Join(md, good), filepath.Join(md, hl)); err != nil {
		t.Fatal(err)
	}
	sym := spool.NewID(testNow)
	os.Symlink("/etc/passwd", filepath.Join(md, sym))
	fifo := spool.NewID(testNow)
	if err := syscall.Mkfifo(filepath.Join(md, fifo), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := spool.NewID(testNow)
	os.Mkdir(filepath.Join(md, dir), 0o700)
	corrupt := spool.NewID(testNow)
	os.WriteFile(filepath.Join(md, corrupt), []byte("MAILSHIM-SPOOL 1\nid "+corrupt+"\n"), 0o440)
	badname := "not-an-id"
	os.WriteFile(filepath.Join(md, badname), []byte("x"), 0o440)
	mismatch := spool.NewID(testNow)
	other := e.drop(t, spool.Meta{Env: spool.Envelope{Recipients: []string{"x@example.org"}}}, "b\n")
	os.Rename(filepath.Join(md, other), filepath.Join(md, mismatch))

	if n := e.p.scan(context.Background()); n != 0 {
		t.Fatalf("queued %d; log:\n%s", n, e.log)
	}
	if names := maildropNames(t, e); len(names) != 0 {
		t.Fatalf("left in maildrop: %v", names)
	}
	qents, _ := os.ReadDir(filepath.Join(e.q.Root, spool.DirQuarantine))
	if len(qents) != 8 {
		t.Errorf("quarantine holds %d files, want 8", len(qents))
	}
	for _, want := range []string{"reason=\"hard link\"", "reason=\"symbolic link\"", "reason=\"not a regular file\"",
		"truncated", "reason=\"not a queue file name\"", "reason=\"queue id in the file differs from its name\""} {
		if !strings.Contains(e.log.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, e.log)
		}
	}
	if c := strings.Count(e.log.String(), "event=quarantine"); c != 8 {
		t.Errorf("%d quarantine lines, want 8:\n%s", c, e.log)
	}
	if ids, _ := e.q.List(spool.Incoming); len(ids) != 0 {
		t.Errorf("queued: %v", ids)
	}
}

func TestPickupTempFiles(t *testing.T) {
	e := newEnv(t, testConfig())
	md := filepath.Join(e.q.Root, spool.DirMaildrop)
	old := filepath.Join(md, spool.TempPrefix+spool.NewID(testNow))
	young := filepath.Join(md, spool.TempPrefix+spool.NewID(testNow))
	os.WriteFile(old, []byte("partial"), 0o440)
	os.WriteFile(young, []byte("partial"), 0o440)
	os.Chtimes(old, testNow.Add(-2*time.Hour), testNow.Add(-2*time.Hour))
	os.Chtimes(young, testNow.Add(-time.Minute), testNow.Add(-time.Minute))
	e.p.scan(context.Background())
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale temp file kept")
	}
	if _, err := os.Stat(young); err != nil {
		t.Error("young temp file removed")
	}
	if !strings.Contains(e.log.String(), "event=temp-removed file="+filepath.Base(old)) || strings.Contains(e.log.String(), "quarantine") {
		t.Errorf("log:\n%s", e.log)
	}
}

func TestPickupUIDMismatch(t *testing.T) {
	e := newEnv(t, testConfig())
	uid, _ := me(t)
	m := spool.Meta{ID: spool.NewID(testNow), Time: testNow, Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}, Origin: spool.Origin{UID: 4242, User: "forged"}}
	d, _ := spool.NewDrop(e.md, &m, 0)
	io.WriteString(d, "b\n")
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	e.p.scan(context.Background())
	qm, _ := e.queued(t, m.ID)
	if qm.Origin.UID != uid || qm.Origin.User == "forged" {
		t.Errorf("origin %+v: the file owner must win", qm.Origin)
	}
	if !strings.Contains(e.log.String(), "event=uid-mismatch id="+m.ID+" file_uid="+strconv.Itoa(uid)+" header_uid=4242 used="+strconv.Itoa(uid)) {
		t.Errorf("log:\n%s", e.log)
	}
}

// The queued copy is there but the maildrop file was not removed (a
// batch whose Sync failed): the next pass removes the maildrop file and
// queues nothing twice. A crash before the maildrop file was removed:
// relayd's start drops the queued copy and pickup queues it again, once.
func TestPickupCrashBetween(t *testing.T) {
	e := newEnv(t, testConfig())
	md := filepath.Join(e.q.Root, spool.DirMaildrop)
	id := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}}, "Subject: s\n\nb\n")
	saved, err := os.ReadFile(filepath.Join(md, id))
	if err != nil {
		t.Fatal(err)
	}
	e.p.scan(context.Background())
	_, first := e.queued(t, id)

	// Crash after enqueue: the maildrop file is still there.
	os.WriteFile(filepath.Join(md, id), saved, 0o440)
	if n := e.p.scan(context.Background()); n != 0 {
		t.Fatalf("queued again")
	}
	if !strings.Contains(e.log.String(), "event=pickup-duplicate id="+id) || len(maildropNames(t, e)) != 0 {
		t.Fatalf("duplicate not resolved:\n%s", e.log)
	}

	// Crash after enqueue, before the maildrop file was removed: at
	// start the queued copy goes (the maildrop file is the authority).
	os.WriteFile(filepath.Join(md, id), saved, 0o440)
	if _, err := e.q.Recover(e.p.HasDrop); err != nil {
		t.Fatal(err)
	}
	if e.q.HasMessage(id) {
		t.Fatal("queued copy kept beside its maildrop file at start")
	}
	if n := e.p.scan(context.Background()); n != 1 {
		t.Fatalf("interrupted enqueue not redone:\n%s", e.log)
	}
	_, again := e.queued(t, id)
	if again != first {
		t.Errorf("redone message differs:\n%s\nvs\n%s", again, first)
	}
	if ids, _ := e.q.List(spool.Incoming); len(ids) != 1 {
		t.Errorf("incoming: %v", ids)
	}
}

func TestStoreLimit(t *testing.T) {
	e := newEnv(t, testConfig())
	store := e.p.Store(100)
	m := &spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}, Origin: spool.Origin{UID: os.Getuid(), Via: "socket"}}
	if _, err := store(m, strings.NewReader("Subject: big\n\n"+strings.Repeat("x", 200))); !errors.Is(err, spool.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	id, err := store(m, strings.NewReader("Subject: ok\n\nsmall\n"))
	if err != nil {
		t.Fatal(err)
	}
	qm, body := e.queued(t, id)
	if qm.Origin.Via != "socket" || !strings.Contains(body, "Subject: ok\n") || !strings.HasPrefix(body, "Received: from uid ") {
		t.Errorf("meta %+v body:\n%s", qm.Origin, body)
	}
	if ids, _ := e.q.List(spool.Incoming); len(ids) != 1 {
		t.Errorf("queue holds %d messages, want 1 (the refused one must leave nothing)", len(ids))
	}
	// Nor any bytes in the segment: after the message, the zeros of its
	// zero tail only.
	p, off, n, err := e.q.Section(id)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(p); err != nil || int64(len(raw)) < off+n || strings.Trim(string(raw[off+n:]), "\x00") != "" {
		t.Errorf("segment %v bytes (%v), the message ends at %d, and zeros only after it", len(raw), err, off+n)
	}
}

// What sendmail stored (exit 0) is queued, not
// quarantined — a long unfolded To: and the obsolete "Name : value"
// syntax alike — and keeps its header where it was.
func TestPickupAcceptsWhatSendmailAccepts(t *testing.T) {
	e := newEnv(t, testConfig())
	long := "To: " + strings.Repeat("user@example.org, ", 5000) + "last@example.org\n"
	id1 := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}}, long+"Subject: long\n\nb\n")
	id2 := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}},
		"Subject: t\nX-A : 1\nFrom: ceo@example.org\n\nbody\n")
	if n := e.p.scan(context.Background()); n != 2 {
		t.Fatalf("queued %d, want 2; log:\n%s", n, e.log)
	}
	if _, body := e.queued(t, id1); !strings.Contains(body, "\n"+long+"Subject: long\n") {
		t.Errorf("long To: not kept")
	}
	_, body := e.queued(t, id2)
	head, rest, _ := strings.Cut(body, "\n\n")
	if !strings.Contains(head, "\nX-A : 1\nFrom: ceo@example.org\n") || rest != "body\n" {
		t.Errorf("header mangled:\n%s", body)
	}
}

type rejected struct {
	m       spool.Meta
	why     *RejectError
	headers string
}

// A maildrop file pickup will not queue for its content is bounced to its
// sender with the reason, logged loudly, and removed; one from "<>" (no
// one to tell) is quarantined, logged just as loudly.
func TestPickupRejectBounces(t *testing.T) {
	e := newEnv(t, testConfig())
	_, name := me(t)
	var got []rejected
	e.p.Reject = func(m *spool.Meta, why *RejectError, headers []byte) (string, error) {
		got = append(got, rejected{*m, why, string(headers)})
		return "DSNID", nil
	}
	huge := "Subject: huge\nX-Big: " + strings.Repeat("a", message.MaxField+10) + "\n\nbody\n"
	id := e.drop(t, spool.Meta{Env: spool.Envelope{Recipients: []string{"x@example.org"}}, Origin: spool.Origin{User: name}}, huge)
	norcpt := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org"}}, "Subject: nobody\n\nb\n")
	null := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "<>", Recipients: []string{"x@example.org"}}}, huge)
	if n := e.p.scan(context.Background()); n != 0 {
		t.Fatalf("queued %d", n)
	}
	if names := maildropNames(t, e); len(names) != 0 {
		t.Errorf("left in maildrop: %v", names)
	}
	if len(got) != 2 {
		t.Fatalf("%d bounces, want 2; log:\n%s", len(got), e.log)
	}
	byID := map[string]rejected{}
	for _, r := range got {
		byID[r.m.ID] = r
	}
	r := byID[id]
	if r.m.Env.Sender != name+"@web1.example.com" || r.why.Status != "5.3.4" || !strings.Contains(r.why.Cause, "header is too large") ||
		r.why.Fix == "" || !strings.HasPrefix(r.headers, "Subject: huge\nX-Big: aaa") || len(r.headers) > maxBounceHeaders {
		t.Errorf("bounce of the huge header: sender %q why %+v headers %.40q (%d bytes)", r.m.Env.Sender, r.why, r.headers, len(r.headers))
	}
	if r := byID[norcpt]; r.why == nil || r.m.Env.Sender != "a@example.org" || !strings.Contains(r.why.Cause, "no recipients") {
		t.Errorf("bounce of no recipients: %+v", r)
	}
	log := e.log.String()
	for _, want := range []string{
		"event=rejected id=" + id + " ", "event=rejected id=" + norcpt + " ", "event=rejected id=" + null + " ",
		"action=bounced dsn=DSNID", "action=\"quarantined (no sender to bounce to)\"", "event=quarantine file=" + null,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	if c := strings.Count(log, "cause="); c < 3 {
		t.Errorf("rejected lines without cause:\n%s", log)
	}
	if ids, _ := e.q.List(spool.Incoming); len(ids) != 0 {
		t.Errorf("queued: %v", ids)
	}
}

// A bounce that cannot be queued leaves the maildrop file for the next
// scan: nothing is lost.
func TestPickupRejectRetries(t *testing.T) {
	e := newEnv(t, testConfig())
	fail := true
	e.p.Reject = func(m *spool.Meta, why *RejectError, headers []byte) (string, error) {
		if fail {
			return "", errors.New("disk full")
		}
		return "DSNID", nil
	}
	id := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org"}}, "Subject: s\n\nb\n")
	e.p.scan(context.Background())
	if names := maildropNames(t, e); len(names) != 1 || names[0] != id {
		t.Fatalf("maildrop: %v; log:\n%s", names, e.log)
	}
	fail = false
	e.p.scan(context.Background())
	if names := maildropNames(t, e); len(names) != 0 {
		t.Fatalf("maildrop: %v; log:\n%s", names, e.log)
	}
}

// Over the submission socket the submitter is told (a sysexits code), no
// bounce.
func TestStoreRejects(t *testing.T) {
	e := newEnv(t, testConfig())
	e.p.Reject = func(*spool.Meta, *RejectError, []byte) (string, error) {
		t.Error("bounce for a socket submission")
		return "", nil
	}
	m := &spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}, Origin: spool.Origin{UID: os.Getuid(), Via: "socket"}}
	_, err := e.p.Store(0)(m, strings.NewReader("X-Big: "+strings.Repeat("a", message.MaxField+10)+"\n\nb\n"))
	var se *submit.Error
	if !errors.As(err, &se) || se.Code != sysexits.DataErr || !strings.Contains(se.Msg, "too large") {
		t.Errorf("err %v", err)
	}
}

// Defence in depth: a maildrop file need not come from
// sendmail. Its envelope gets sendmail's check: a bad recipient is bounced
// to a good sender; a file with a bad sender (no one to tell) is
// quarantined; unknown keys never reach the queue.
func TestPickupValidatesEnvelope(t *testing.T) {
	e := newEnv(t, testConfig())
	var got []*RejectError
	e.p.Reject = func(m *spool.Meta, why *RejectError, headers []byte) (string, error) {
		got = append(got, why)
		return "DSNID", nil
	}
	badRcpt := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"|/bin/sh -c id"}}}, "Subject: s\n\nb\n")
	badSender := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "x@y.org\r\nRSET", Recipients: []string{"x@example.org"}}}, "Subject: s\n\nb\n")
	extra := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}, Extra: [][2]string{{"dsn-for", "X"}, {"orig-rcpt", "ceo@example.org"}}}, "Subject: s\n\nb\n")
	if n := e.p.scan(context.Background()); n != 1 {
		t.Fatalf("queued %d, want 1; log:\n%s", n, e.log)
	}
	if len(got) != 1 || got[0].Code != sysexits.NoUser || !strings.Contains(got[0].Cause, "envelope is not valid") {
		t.Errorf("bounces %+v", got)
	}
	log := e.log.String()
	if !strings.Contains(log, "event=rejected id="+badRcpt+" ") || !strings.Contains(log, "event=quarantine file="+badSender+" ") {
		t.Errorf("log:\n%s", log)
	}
	// The envelope goes into the queue in its normalised (bare) form.
	angled := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "Me <a@example.org>", Recipients: []string{"<x@example.org>"}}}, "Subject: s\n\nb\n")
	e.p.scan(context.Background())
	if m, _ := e.queued(t, angled); m.Env.Sender != "a@example.org" || m.Env.Recipients[0] != "x@example.org" {
		t.Errorf("envelope %+v", m.Env)
	}
	m, _ := e.queued(t, extra)
	for _, kv := range m.Extra {
		if kv[0] == "dsn-for" || kv[1] == "ceo@example.org" {
			t.Errorf("client key kept: %v", m.Extra)
		}
	}
}

// Bare local names in To:/Cc:/From: are qualified with the host name, as
// in the envelope, but aliases are not expanded in the header.
func TestPickupQualifiesHeaderAddresses(t *testing.T) {
	e := newEnv(t, testConfig())
	id := e.drop(t, spool.Meta{Env: spool.Envelope{Sender: "a@example.org", Recipients: []string{"root", "team"}}},
		"From: Site <a@example.org>\nTo: root, Team <team>\nCc: bob@example.org,\n carol\nSubject: s\n\nTo: root in the body\n")
	e.p.scan(context.Background())
	m, body := e.queued(t, id)
	for _, want := range []string{"\nTo: root@web1.example.com, Team <team@web1.example.com>\n", "\nCc: bob@example.org,\n carol@web1.example.com\n",
		"\nFrom: Site <a@example.org>\n", "\n\nTo: root in the body\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("queued message lacks %q:\n%s", want, body)
		}
	}
	if m.Env.Recipients[0] != "ops@example.com" {
		t.Errorf("envelope %v: aliases must still be expanded there", m.Env.Recipients)
	}
}

// TestPickupFileSizes picks up maildrop files read whole (up to
// smallDrop bytes) and streamed (bigger), around the boundary and far
// beyond it: each message is queued with its body intact, and one whose
// body was damaged after it was written is quarantined either way.
func TestPickupFileSizes(t *testing.T) {
	e := newEnv(t, testConfig())
	md := filepath.Join(e.q.Root, spool.DirMaildrop)
	env := spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}
	payloads := map[string]string{}
	var damaged []string
	for _, n := range []int{10, smallDrop - 600, smallDrop - 300, smallDrop, smallDrop + 1, 3 * smallDrop, 1 << 20} {
		for _, bad := range []bool{false, true} {
			payload := strings.Repeat(fmt.Sprintf("%07d line of the body\n", n), n/25+1)[:n] + "\n"
			id := e.drop(t, spool.Meta{Env: env}, "Subject: size\n\n"+payload)
			if !bad {
				payloads[id] = payload
				continue
			}
			p := filepath.Join(md, id)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-2] ^= 0x20 // in the body: the checksum no longer matches
			if err := os.Chmod(p, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o640); err != nil {
				t.Fatal(err)
			}
			damaged = append(damaged, id)
		}
	}
	if n := e.p.scan(context.Background()); n != len(payloads) {
		t.Fatalf("queued %d of %d; log:\n%s", n, len(payloads), e.log)
	}
	for id, payload := range payloads {
		_, body := e.queued(t, id)
		if !strings.HasSuffix(body, "\n\n"+payload) || !strings.Contains(body, "Subject: size\n") {
			t.Errorf("%s (%d bytes of body): queued body differs (%d bytes)", id, len(payload), len(body))
		}
	}
	for _, id := range damaged {
		if _, err := e.q.Locate(id); err == nil {
			t.Errorf("%s: damaged message queued", id)
		}
		if !strings.Contains(e.log.String(), "event=quarantine file="+id+` reason="spool: corrupt message file: checksum mismatch"`) {
			t.Errorf("%s: no log line for the damaged file:\n%s", id, e.log)
		}
	}
	if names := maildropNames(t, e); len(names) != 0 {
		t.Errorf("left in maildrop: %v", names)
	}
	qents, _ := os.ReadDir(filepath.Join(e.q.Root, spool.DirQuarantine))
	if len(qents) != len(damaged) {
		t.Errorf("quarantine holds %d files, want %d", len(qents), len(damaged))
	}
}

// TestPickupLinesBeforeUnlink: through relayd's buffered log (a
// maillog.Buffer that would hold lines for an hour), the pickup lines of
// a batch are written out before its maildrop files are removed: when
// each line reaches the log, its maildrop file is still there.
func TestPickupLinesBeforeUnlink(t *testing.T) {
	e := newEnv(t, testConfig())
	md := filepath.Join(e.q.Root, spool.DirMaildrop)
	var out bytes.Buffer
	var gone []string // pickup lines written after their file was removed
	buf := maillog.NewBuffer(writerFunc(func(p []byte) (int, error) {
		for _, l := range strings.Split(string(p), "\n") {
			if _, rest, ok := strings.Cut(l, "event=pickup id="); ok {
				id, _, _ := strings.Cut(rest, " ")
				if _, err := os.Lstat(filepath.Join(md, id)); err != nil {
					gone = append(gone, id)
				}
			}
		}
		return out.Write(p)
	}), time.Hour)
	t.Cleanup(func() { buf.Close() })
	e.p.Log = maillog.New(buf, func() time.Time { return testNow })
	env := spool.Envelope{Sender: "a@example.org", Recipients: []string{"x@example.org"}}
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.drop(t, spool.Meta{ID: spool.NewID(time.Now()), Env: env}, "Subject: s\n\nb\n"))
	}
	if n := e.p.scan(context.Background()); n != 3 {
		t.Fatalf("queued %d", n)
	}
	if names := maildropNames(t, e); len(names) != 0 {
		t.Fatalf("left in maildrop: %v", names)
	}
	for _, id := range ids {
		if !strings.Contains(out.String(), "event=pickup id="+id+" ") {
			t.Errorf("no pickup line for %s, whose maildrop file is gone:\n%s", id, out.String())
		}
	}
	if len(gone) > 0 {
		t.Errorf("pickup lines written after their maildrop files were removed: %v", gone)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A maildrop file whose quarantine failed is tried again at the periodic
// scan, not before; once it has left maildrop/ (removed by hand), pickup
// forgets it instead of remembering its name for as long as it runs.
func TestQuarantineFailureForgottenWhenGone(t *testing.T) {
	e := newEnv(t, testConfig())
	now := testNow
	e.p.Now = func() time.Time { return now }
	md := filepath.Join(e.q.Root, spool.DirMaildrop)
	qd := filepath.Join(e.q.Root, spool.DirQuarantine)
	// Every name the quarantine could give "junk" is taken: it fails.
	for i := 0; i < 100; i++ {
		n := "junk"
		if i > 0 {
			n = fmt.Sprintf("junk.%d", i)
		}
		if err := os.WriteFile(filepath.Join(qd, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(md, "junk"), []byte("not a spool file\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	e.p.scan(context.Background())
	if !strings.Contains(e.log.String(), "cannot quarantine") || len(e.p.quarFailed) != 1 {
		t.Fatalf("the quarantine did not fail as arranged (%d remembered):\n%s", len(e.p.quarFailed), e.log)
	}
	// Within the scan interval: not tried again.
	lines := strings.Count(e.log.String(), "\n")
	e.p.scan(context.Background())
	if got := strings.Count(e.log.String(), "\n"); got != lines {
		t.Errorf("tried again before the scan interval:\n%s", e.log)
	}
	if err := os.Remove(filepath.Join(md, "junk")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	e.p.scan(context.Background())
	if len(e.p.quarFailed) != 0 {
		t.Errorf("a file gone from maildrop/ still remembered: %v", e.p.quarFailed)
	}
}
