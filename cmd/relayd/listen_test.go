package main

// Tests of the loopback SMTP listener through the real relayd process and
// real sockets: clients run as other users (setpriv, when the tests run
// as root, as CI does), and what is recorded is checked in the messages
// the upstream receives and in relayd's log.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/localca"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// listenConf is the [listen] section of the tests: ephemeral ports on
// both loopback addresses, the socket inside the private spool.
const listenConf = `
[listen]
enabled = true
addresses = ["127.0.0.1", "::1"]
ports = [0]
cert_file = ""
key_file = ""
`

var listenLine = regexp.MustCompile(`event=listen addr=(\S+) from=(\S+)`)

// listenAddrs waits for relayd's "event=listen" lines and returns the
// addresses served: "tcp4", "tcp6" and "unix".
func (s *site) listenAddrs() map[string]string {
	s.t.Helper()
	out := map[string]string{}
	waitfor.True(s.t, "the listener's sockets", 10*time.Second, func() bool {
		for _, m := range listenLine.FindAllStringSubmatch(s.log(), -1) {
			switch a := m[1]; {
			case strings.HasPrefix(a, "127."):
				out["tcp4"] = a
			case strings.HasPrefix(a, "[::1]"):
				out["tcp6"] = a
			case strings.HasPrefix(a, "/"):
				out["unix"] = a
			}
		}
		return len(out) == 3
	})
	return out
}

// pyClient is a Python smtplib client: argv is door ("tcp"/"unix"),
// address, then the AUTH user ("" for none), MAIL FROM, RCPT TO and
// Subject. It prints the reply to DATA (the queue ID) on stdout.
const pyClient = `
import smtplib, socket, sys
door, addr, auth, sender, rcpt, subject = sys.argv[1:7]
class Unix(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(host)
        return s
if door == "unix":
    c = Unix(timeout=30)
    c.connect(addr)
else:
    host, port = addr.rsplit(":", 1)
    c = smtplib.SMTP(host.strip("[]"), int(port), timeout=30)
c.ehlo("client.example")
if auth:
    c.login(auth, "claimed-password-never-logged")
msg = "From: %s\r\nTo: %s\r\nBcc: hidden@example.net\r\nSubject: %s\r\n\r\nhello from %s\r\n" % (sender, rcpt, subject, subject)
c.mail(sender)
c.rcpt(rcpt)
code, resp = c.data(msg)
print(code, resp.decode())
c.quit()
`

// sendAs runs the Python client as uid (and its gid) and returns its
// output.
func sendAs(t *testing.T, uid int, door, addr, auth, sender, rcpt, subject string) string {
	t.Helper()
	args := []string{"--reuid=" + fmt.Sprint(uid), "--regid=" + fmt.Sprint(uid), "--clear-groups",
		"/usr/bin/python3", "-c", pyClient, door, addr, auth, sender, rcpt, subject}
	cmd := exec.Command("setpriv", args...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid %d over %s %s: %v\n%s", uid, door, addr, err, out)
	}
	return string(out)
}

// message returns the delivered message with Subject subject.
func (s *site) message(subject string) string {
	for _, m := range s.up.Messages() {
		if strings.Contains(string(m.Data), "\r\nSubject: "+subject+"\r\n") || strings.HasPrefix(string(m.Data), "Subject: "+subject+"\r\n") {
			return string(m.Data)
		}
	}
	return ""
}

// Two unprivileged users send over 127.0.0.1, ::1 and the Unix socket,
// each claiming to be someone else in AUTH and in MAIL FROM: every message
// is recorded under the UID that owns the client's socket, with the
// client's process, and delivered; Bcc: is removed; the password appears
// nowhere.
func TestListenRecordsKernelUID(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	type sent struct {
		uid     int
		user    string
		subject string
	}
	var all []sent
	for _, u := range []struct {
		uid  int
		user string
	}{{65534, "nobody"}, {33, "www-data"}} {
		for _, door := range []string{"tcp4", "tcp6", "unix"} {
			subject := fmt.Sprintf("listen %s %d", door, u.uid)
			kind := "tcp"
			if door == "unix" {
				kind = "unix"
			}
			// Claims: root in AUTH, another user's address in MAIL FROM.
			out := sendAs(t, u.uid, kind, addrs[door], "root", "root@web1.example.com", "rcpt@example.net", subject)
			if !strings.HasPrefix(out, "250 2.0.0 Ok: queued as ") {
				t.Fatalf("%s as %d: %s", door, u.uid, out)
			}
			all = append(all, sent{u.uid, u.user, subject})
		}
	}
	waitfor.True(t, "delivery of every message", 30*time.Second, func() bool { return len(up.Messages()) >= len(all) })
	log := s.log()
	for _, m := range all {
		data := s.message(m.subject)
		if data == "" {
			t.Errorf("%q not delivered", m.subject)
			continue
		}
		if want := fmt.Sprintf("Received: from uid %d (%s) by web1.example.com (mailshim)", m.uid, m.user); !strings.Contains(data, want) {
			t.Errorf("%q: no %q in\n%s", m.subject, want, data)
		}
		if want := fmt.Sprintf("X-Mailshim-Origin: uid=%d user=%s", m.uid, m.user); !strings.Contains(data, want) {
			t.Errorf("%q: no %q in\n%s", m.subject, want, data)
		}
		if strings.Contains(data, "hidden@example.net") {
			t.Errorf("%q: Bcc: not removed:\n%s", m.subject, data)
		}
		// The pickup line: via=smtp, the UID, the client's process, the
		// AUTH claim recorded as a claim.
		re := regexp.MustCompile(fmt.Sprintf(`event=pickup id=\S+ uid=%d user=%s .*via=smtp caller=python client=\S+ pid=\d+ process=/usr/bin/python3\S* auth_claim=root`, m.uid, m.user))
		found := false
		for _, l := range strings.Split(log, "\n") {
			if re.MatchString(l) {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: no pickup line matching %v in\n%s", m.subject, re, log)
		}
	}
	if strings.Contains(log, "claimed-password-never-logged") {
		t.Error("the AUTH password is in the log")
	}
	for _, m := range up.Messages() {
		if strings.Contains(string(m.Data), "claimed-password-never-logged") {
			t.Error("the AUTH password is in a message")
		}
	}
}

// rawSession is a hand-driven SMTP client.
type rawSession struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, network, addr string) *rawSession {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawSession{t: t, c: c, br: bufio.NewReader(c)}
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (r *rawSession) reply() string {
	r.t.Helper()
	for {
		l, err := r.br.ReadString('\n')
		if err != nil {
			return "EOF: " + err.Error()
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func (r *rawSession) send(s string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// cmd sends one command line and returns the reply.
func (r *rawSession) cmd(line string) string {
	r.send(line + "\r\n")
	return r.reply()
}

// End-of-data variants with a bare LF or CR next to the dot do not end
// DATA: the would-be second message is part of the first, only CRLF.CRLF
// ends it, and the upstream gets one message with that text dot-stuffed.
func TestListenSmuggling(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	variants := map[string]string{
		"lf-dot-lf":     "\n.\n",
		"crlf-dot-lf":   "\r\n.\n",
		"lf-dot-crlf":   "\n.\r\n",
		"cr-dot-cr":     "\r.\r",
		"cr-dot-crlf":   "\r.\r\n",
		"crlf-dot-cr":   "\r\n.\r",
		"crlf-dot-crcr": "\r\n.\r\r\n",
	}
	n := 0
	for name, eod := range variants {
		r := dialRaw(t, "tcp", addrs["tcp4"])
		if g := r.reply(); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting %q", g)
		}
		for _, c := range []string{"EHLO client.example", "MAIL FROM:<app@example.org>", "RCPT TO:<rcpt@example.net>", "DATA"} {
			r.cmd(c)
		}
		smuggled := "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled " + name + "\r\n\r\nevil\r\n"
		r.send("Subject: carrier " + name + "\r\n\r\nbody" + eod + smuggled + ".\r\n")
		if rep := r.reply(); !strings.HasPrefix(rep, "250 ") {
			t.Fatalf("%s: reply to the data %q", name, rep)
		}
		// Nothing more was taken as commands: the next reply answers NOOP.
		if rep := r.cmd("NOOP"); !strings.HasPrefix(rep, "250 ") {
			t.Fatalf("%s: NOOP answered %q", name, rep)
		}
		r.cmd("QUIT")
		n++
	}
	waitfor.True(t, "delivery", 30*time.Second, func() bool { return len(up.Messages()) >= n })
	time.Sleep(200 * time.Millisecond) // a stray extra message would show now
	if got := len(up.Messages()); got != n {
		t.Fatalf("%d messages delivered, want %d", got, n)
	}
	for name := range variants {
		data := s.message("carrier " + name)
		if data == "" {
			t.Errorf("%s: carrier not delivered", name)
			continue
		}
		if !strings.Contains(data, "Subject: smuggled "+name) {
			t.Errorf("%s: the smuggled text is not inside the carrier:\n%q", name, data)
		}
		for _, m := range up.Messages() {
			for _, r := range m.To {
				if r == "victim@example.net" {
					t.Errorf("%s: a smuggled recipient got mail", name)
				}
			}
		}
	}
}

// A sender the policy refuses gets 553 with the reason at MAIL FROM; the
// UID's own address is accepted.
func TestListenSenderPolicy(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + "\n[policy.allowed_senders]\n\"*\" = [\"%u@shop.example\"]\n"})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	cmd := exec.Command("setpriv", "--reuid=33", "--regid=33", "--clear-groups", "/usr/bin/python3", "-c", `
import smtplib, sys
c = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
c.ehlo("x")
print(c.mail("ceo@example.com"))
c.rset()
print(c.mail("www-data@shop.example"))
`, addrs["tcp4"][strings.LastIndexByte(addrs["tcp4"], ':')+1:])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "(553, b'5.7.1 sender address \"ceo@example.com\" is not allowed") ||
		!strings.HasPrefix(lines[1], "(250,") {
		t.Fatalf("replies:\n%s", out)
	}
	if !strings.Contains(s.log(), `event=smtp-error client=127.0.0.1:`) {
		t.Errorf("no smtp-error line:\n%s", s.log())
	}
}

// startActivated runs relayd the way systemd's socket activation does,
// with ln passed as fd 3 (LISTEN_FDS=1, LISTEN_PID its own PID), under
// the command wrap (which must exec, keeping the PID).
func (s *site) startActivated(ln *net.TCPListener, wrap string) *daemon {
	s.t.Helper()
	f, err := ln.File()
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	lf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer lf.Close()
	script := wrap + ` sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --config "$1"' ` + relaydBin + " " + s.cfgPath
	cmd := exec.Command("sh", "-c", "exec "+script)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	s.t.Cleanup(func() { d.cmd.Process.Kill(); <-d.done; d.done <- nil })
	waitfor.True(s.t, "relayd's listener", 20*time.Second, func() bool {
		select {
		case err := <-d.done:
			d.done <- err
			s.t.Fatalf("relayd exited at start: %v\n%s", err, s.log())
		default:
		}
		return strings.Contains(s.log(), "from=systemd")
	})
	return d
}

// A client whose socket is not in relayd's network namespace (here:
// relayd runs in a namespace of its own and serves a socket passed from
// the host's, as socket activation would) cannot be identified: 421 and a
// log line saying why, never a guess, never relayd's own UID.
func TestListenOwnerUnknown421(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: "\n[listen]\nenabled = true\naddresses = [\"127.0.0.1\"]\nports = [0]\ncert_file = \"\"\nkey_file = \"\"\n"})
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := s.startActivated(ln, "unshare --net")
	defer d.term(t)
	r := dialRaw(t, "tcp", ln.Addr().String())
	g := r.reply()
	if !strings.HasPrefix(g, "421 4.7.0 ") || !strings.Contains(g, "cannot establish which local user is connecting") {
		t.Fatalf("greeting %q, want 421", g)
	}
	waitfor.True(t, "the refusal's log line", 10*time.Second, func() bool {
		return regexp.MustCompile(`event=smtp-refused client=127\.0\.0\.1:\d+ reason="the owner of the client's socket cannot be established: the client's socket is not in this network namespace's socket table`).MatchString(s.log())
	})
	if strings.Contains(s.log(), "event=pickup") {
		t.Errorf("something was stored:\n%s", s.log())
	}
}

// The same passed socket in relayd's own namespace serves: the activated
// path works, and identifies the client.
func TestListenSocketActivation(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: "\n[listen]\nenabled = true\nports = []\nsocket = \"\"\ncert_file = \"\"\nkey_file = \"\"\n"})
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := s.startActivated(ln, "")
	defer d.term(t)
	ln.Close() // relayd holds its own copy
	out := sendAs(t, 65534, "tcp", ln.Addr().String(), "", "nobody@web1.example.com", "rcpt@example.net", "activated")
	if !strings.HasPrefix(out, "250 2.0.0 Ok: queued as ") {
		t.Fatal(out)
	}
	waitfor.True(t, "delivery", 30*time.Second, func() bool { return s.message("activated") != "" })
	if !strings.Contains(s.message("activated"), "Received: from uid 65534 (nobody)") {
		t.Errorf("not recorded as nobody:\n%s", s.message("activated"))
	}
}

// holdConns runs, as uid, a client that opens n connections to addr and
// holds them without saying anything; it reports what each got within a
// few seconds: "220" (served), "421" (refused at once) or "wait" (waiting
// for a slot). The connections are closed when the returned function is
// called.
func holdConns(t *testing.T, uid int, addr string, n int) ([]string, func()) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("setpriv", "--reuid="+fmt.Sprint(uid), "--regid="+fmt.Sprint(uid), "--clear-groups", "/usr/bin/python3", "-c", `
import select, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = [socket.create_connection((host, port)) for i in range(n)]
got = {}
end = time.time() + 4
while time.time() < end and len(got) < n:
    r, _, _ = select.select([s for s in socks if s not in got], [], [], 0.2)
    for s in r:
        got[s] = s.recv(100).decode()[:3] or "eof"
print(" ".join(got.get(s, "wait") for s in socks), flush=True)
sys.stdin.read()
`, host, port, fmt.Sprint(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("holding client: %v", err)
	}
	stop := func() { stdin.Close(); cmd.Wait() }
	t.Cleanup(func() { cmd.Process.Kill(); stop() })
	return strings.Fields(line), stop
}

// One user's connections (idle, holding their slots) do not stop another
// user's mail: the per-UID cap serves max_connections_per_uid of them, lets
// four times as many wait, refuses the rest with 421 at once, and a second
// user sends meanwhile.
func TestListenPerUIDCap(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf + "max_connections_per_uid = 2\nmax_connections = 50\n"})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	got, stop := holdConns(t, 65534, addrs["tcp4"], 14)
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	if count["220"] != 2 || count["wait"] != 8 || count["421"] != 4 {
		t.Fatalf("the held connections got %v, want 2 served, 8 waiting, 4 refused", count)
	}
	out := sendAs(t, 33, "tcp", addrs["tcp4"], "", "www-data@web1.example.com", "rcpt@example.net", "other user")
	if !strings.HasPrefix(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("the other user: %s", out)
	}
	if !regexp.MustCompile(`event=smtp-refused reason="busy: too many connections" refused=1 client=127\.0\.0\.1:\d+ uid=65534`).MatchString(s.log()) {
		t.Errorf("no busy line:\n%s", s.log())
	}
	stop()
	// Slots come back: the same user is served again.
	out = sendAs(t, 65534, "tcp", addrs["tcp4"], "", "nobody@web1.example.com", "rcpt@example.net", "after")
	if !strings.HasPrefix(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("after the held connections closed: %s", out)
	}
}

// relayd stopped with sessions open loses nothing that got a 250: a
// message answered 250 on a connection that stays open is delivered after
// the restart; one cut off inside DATA got no 250 and is not stored.
func TestListenRestartKeepsAccepted(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	addrs := s.listenAddrs()
	idle := dialRaw(t, "tcp", addrs["tcp4"])
	idle.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<rcpt@example.net>", "DATA"} {
		idle.cmd(c)
	}
	idle.send("Subject: accepted before restart\r\n\r\nbody\r\n.\r\n")
	if rep := idle.reply(); !strings.HasPrefix(rep, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("reply %q", rep)
	}
	cut := dialRaw(t, "tcp", addrs["tcp6"])
	cut.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<rcpt@example.net>", "DATA"} {
		cut.cmd(c)
	}
	cut.send("Subject: cut off\r\n\r\npartial body\r\n")
	if code := d.term(t); code != 0 {
		t.Fatalf("relayd exited %d\n%s", code, s.log())
	}
	// Both connections are closed, the cut one without a 250.
	if rep := cut.reply(); strings.HasPrefix(rep, "250") {
		t.Fatalf("the cut session got %q", rep)
	}
	if rep := idle.cmd("NOOP"); strings.HasPrefix(rep, "250") {
		t.Fatalf("the idle session is still served after stop: %q", rep)
	}
	s.start()
	waitfor.True(t, "delivery after the restart", 30*time.Second, func() bool { return s.message("accepted before restart") != "" })
	time.Sleep(200 * time.Millisecond)
	if s.message("cut off") != "" {
		t.Error("the message cut off inside DATA was delivered")
	}
	if n := s.subjects()["accepted before restart"]; n != 1 {
		t.Errorf("delivered %d times", n)
	}
}

// STARTTLS with the local CA's certificate: a client that verifies the
// certificate (Python's default context, given the CA) upgrades, then
// authenticates with credentials that are a claim only; without a
// certificate STARTTLS is not offered and plain clients work. A MAIL
// before STARTTLS does not outlive it: the MAIL after it is not nested.
func TestListenSTARTTLS(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	b, err := localca.New(localca.DefaultNames("web1.example.com"), time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crt, key, ca := filepath.Join(dir, "local.crt"), filepath.Join(dir, "local.key"), filepath.Join(dir, "ca.crt")
	for p, data := range map[string][]byte{crt: b.CertPEM, key: b.KeyPEM, ca: b.CAPEM} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := newSite(t, up, siteOpts{extra: fmt.Sprintf("\n[listen]\nenabled = true\naddresses = [\"127.0.0.1\", \"::1\"]\nports = [0]\ncert_file = %q\nkey_file = %q\n", crt, key)})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	// The TLS line follows the sockets' lines: wait for it too.
	if !waitfor.Poll(10*time.Second, func() bool { return strings.Contains(s.log(), "event=listen tls=on cert="+crt) }) {
		t.Errorf("no tls=on line:\n%s", s.log())
	}
	for _, door := range []string{"tcp4", "tcp6"} {
		host, port, _ := net.SplitHostPort(addrs[door])
		out, err := exec.Command("/usr/bin/python3", "-c", `
import smtplib, ssl, sys
host, port, ca, subject = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
c = smtplib.SMTP(host, int(port), timeout=30)
c.ehlo("client.example")
assert c.has_extn("starttls"), "no STARTTLS"
assert c.mail("before-tls@example.org")[0] == 250
c.starttls(context=ctx)
c.ehlo("client.example")
c.login("someone-else", "not-checked")
c.sendmail("app@example.org", ["rcpt@example.net"], "Subject: %s\r\n\r\nover TLS\r\n" % subject)
print(c.sock.version())
c.quit()
`, host, port, ca, "tls "+door).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "TLSv1.") {
			t.Fatalf("%s: %v\n%s", door, err, out)
		}
	}
	waitfor.True(t, "delivery", 30*time.Second, func() bool { return s.message("tls tcp4") != "" && s.message("tls tcp6") != "" })
	if !regexp.MustCompile(`event=pickup .*via=smtp .*auth_claim=someone-else`).MatchString(s.log()) {
		t.Errorf("no pickup line with the claim:\n%s", s.log())
	}

	// The same listener without a certificate: no STARTTLS, AUTH still
	// offered (the connection never leaves the host).
	s2 := newSite(t, up, siteOpts{extra: listenConf})
	d2 := s2.start()
	defer d2.term(t)
	r := dialRaw(t, "tcp", s2.listenAddrs()["tcp4"])
	r.reply()
	r.send("EHLO x\r\n")
	var ext []string
	for {
		l, err := r.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		ext = append(ext, strings.TrimSpace(l))
		if l[3] == ' ' {
			break
		}
	}
	all := strings.Join(ext, "\n")
	if strings.Contains(all, "STARTTLS") || !strings.Contains(all, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO without a certificate:\n%s", all)
	}
	if !strings.Contains(s2.log(), `event=listen tls=off reason="no cert_file/key_file in [listen]: STARTTLS not offered"`) {
		t.Errorf("no tls=off line:\n%s", s2.log())
	}
}

// Limits and timeouts: a pipelined transaction is answered in order; a
// message over max_message_size gets 552 and is not stored; an over-long
// line ends the session; a client silent inside DATA is cut off after
// idle_timeout without a 250, and one silent between commands after
// command_timeout; none of it stops another session.
func TestListenLimitsAndTimeouts(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: `max_message_size = "2KB"` + "\n" + listenConf +
		"max_line_length = 1000\ncommand_timeout = \"2s\"\nidle_timeout = \"1s\"\n"})
	// max_message_size is a top-level key: move it before the first table.
	cfg, _ := os.ReadFile(s.cfgPath)
	c := strings.Replace(string(cfg), "max_message_size = \"2KB\"\n", "", 1)
	c = strings.Replace(c, "aliases_file", "max_message_size = \"2KB\"\naliases_file", 1)
	os.WriteFile(s.cfgPath, []byte(c), 0o644)
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()

	// PIPELINING: everything up to DATA in one write.
	r := dialRaw(t, "tcp", addrs["tcp4"])
	r.reply()
	r.cmd("EHLO x")
	r.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
	for i, want := range []string{"250 ", "250 ", "250 ", "354 "} {
		if got := r.reply(); !strings.HasPrefix(got, want) {
			t.Fatalf("pipelined reply %d: %q, want %q", i, got, want)
		}
	}
	r.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("after DATA: %q", got)
	}

	// Too large: 552, nothing stored, the session goes on.
	r = dialRaw(t, "tcp", addrs["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
		r.cmd(c)
	}
	r.send("Subject: too large\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 60) + ".\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "552 5.3.4 ") {
		t.Fatalf("too large: %q", got)
	}
	if got := r.cmd("NOOP"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("after 552: %q", got)
	}

	// Too large in BDAT: go-smtp answers 552 to the chunk that goes over
	// and ends the transfer. The smtp-error line must not say that the
	// client abandoned the message: it was refused, and told so.
	r = dialRaw(t, "tcp", addrs["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<bdat-big@example.org>", "RCPT TO:<b@example.net>"} {
		r.cmd(c)
	}
	chunk := "Subject: too large bdat\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 14)
	r.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk), chunk))
	if got := r.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("first BDAT chunk: %q", got)
	}
	last := strings.Repeat(strings.Repeat("y", 70)+"\r\n", 28)
	r.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(last), last))
	if got := r.reply(); !strings.HasPrefix(got, "552 5.3.4 ") {
		t.Fatalf("BDAT over the size: %q", got)
	}
	waitFor(t, "the BDAT smtp-error line", 10*time.Second, func() bool { return strings.Contains(s.log(), "from=bdat-big@example.org") })
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "from=bdat-big@example.org") && (strings.Contains(l, "abandoned") || !strings.Contains(l, "max_message_size")) {
			t.Errorf("the refusal is logged as: %s", l)
		}
	}

	// An over-long line: 500 and the session ends, nothing stored.
	r = dialRaw(t, "tcp", addrs["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
		r.cmd(c)
	}
	r.send("Subject: long line\r\n\r\n" + strings.Repeat("y", 1500) + "\r\n.\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "500 ") {
		t.Fatalf("long line: %q", got)
	}

	// Silent inside DATA: cut off after idle_timeout, no 250.
	slow := dialRaw(t, "tcp", addrs["tcp6"])
	slow.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
		slow.cmd(c)
	}
	slow.send("Subject: slow\r\n\r\nhalf a messa")
	// Silent between commands: cut off after command_timeout.
	idle := dialRaw(t, "unix", addrs["unix"])
	idle.reply()
	start := time.Now()
	// Meanwhile another session is served at once.
	out := dialRaw(t, "tcp", addrs["tcp4"])
	out.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
		out.cmd(c)
	}
	out.send("Subject: meanwhile\r\n\r\nbody\r\n.\r\n")
	if got := out.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("another session during the slow ones: %q", got)
	}
	if got := slow.reply(); !strings.HasPrefix(got, "451 4.4.2 ") {
		t.Errorf("silent inside DATA: %q, want 451 4.4.2", got)
	}
	if got := idle.reply(); !strings.HasPrefix(got, "421 4.4.2 ") {
		t.Errorf("silent between commands: %q, want 421 4.4.2", got)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("the timeouts took %v", el)
	}
	waitfor.True(t, "delivery", 30*time.Second, func() bool { return s.message("meanwhile") != "" && s.message("pipelined") != "" })
	time.Sleep(200 * time.Millisecond)
	for _, subj := range []string{"too large", "long line", "slow"} {
		if s.message(subj) != "" {
			t.Errorf("%q was delivered", subj)
		}
	}
	if n := len(up.Messages()); n != 2 {
		t.Errorf("%d messages delivered, want 2", n)
	}
}

// An upstream set to the listener itself is a mail loop: relayd's own
// connection is refused with 421 (never taken as mail of relayd's user),
// and the message stays queued, deferred.
func TestListenRefusesItsOwnConnection(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := fmt.Sprintf(`hostname = "web1.example.com"
spool = %q
control_socket = %q
submit_socket = %q
aliases_file = ""

[[upstream]]
host = "127.0.0.1"
port = %d
tls = "none"

[queue]
retry = ["1h"]

[listen]
enabled = true
addresses = ["127.0.0.1"]
ports = [%d]
socket = ""
cert_file = ""
key_file = ""
`, s.spool, s.controlSock(), s.submitSock(), port, port)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := s.start()
	defer d.term(t)
	s.drop("loop", 1)
	waitfor.True(t, "the refusal", 20*time.Second, func() bool {
		return strings.Contains(s.log(), `event=smtp-refused client=127.0.0.1:`) && strings.Contains(s.log(), `reason="mail loop: the connection comes from relayd itself`)
	})
	waitfor.True(t, "the deferral", 20*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred") })
	if strings.Contains(s.log(), "via=smtp") {
		t.Errorf("relayd's own connection was taken as mail:\n%s", s.log())
	}
}

// A message from the listener waiting in the queue: relayd queue list
// has it, and queue show says how it came (via smtp, the client, the
// client's process, the AUTH claim as a claim).
func TestListenQueueShow(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`, extra: listenConf})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()
	out := sendAs(t, 65534, "tcp", addrs["tcp4"], "shop@example.com", "nobody@web1.example.com", "rcpt@example.net", "queued")
	id := strings.TrimSpace(out[strings.LastIndexByte(strings.TrimSpace(out), ' ')+1:])
	waitfor.True(t, "the deferral", 30*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred id="+id) })
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	list, _, code := runCmd(t, env, relaydBin, "queue", "list")
	if code != 0 || !strings.Contains(list, id) {
		t.Fatalf("queue list: %d %q", code, list)
	}
	show, _, code := runCmd(t, env, relaydBin, "queue", "show", id)
	for _, want := range []string{"uid:           65534", "via:           smtp", "client:        127.0.0.1:",
		"helo:          client.example", "auth claim:    shop@example.com (a claim, not checked)", "process:       pid ", "/usr/bin/python3"} {
		if code != 0 || !strings.Contains(show, want) {
			t.Errorf("queue show has no %q:\n%s", want, show)
		}
	}
}

// check-config warns when the listener's certificate does not load.
func TestListenCheckConfigCertificate(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: "\n[listen]\nenabled = true\ncert_file = \"/nonexistent/local.crt\"\nkey_file = \"/nonexistent/local.key\"\n"})
	_, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 0 || !strings.Contains(stderr, "relayd: warning: [listen] cert_file/key_file: open /nonexistent/local.crt: no such file or directory: STARTTLS will not be offered") {
		t.Fatalf("check-config: exit %d, stderr %q", code, stderr)
	}
}

// CHUNKING (BDAT), which go-smtp offers: the chunks are the message as
// they are (no dot-stuffing, no end-of-data line), stored the same way.
func TestListenBDAT(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	r := dialRaw(t, "tcp", s.listenAddrs()["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"} {
		r.cmd(c)
	}
	part1 := "Subject: chunked\r\n\r\n.leading dot stays\r\n"
	part2 := "\r\n.\r\nnot an end\r\n"
	r.send(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	if got := r.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("first chunk: %q", got)
	}
	r.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	if got := r.reply(); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("last chunk: %q", got)
	}
	waitFor(t, "delivery", 30*time.Second, func() bool { return s.message("chunked") != "" })
	data := s.message("chunked")
	// On the wire to the upstream, dot-stuffed: the lines are data.
	if !strings.Contains(data, "\r\n.leading dot stays\r\n") || !strings.Contains(data, "\r\n.\r\nnot an end\r\n") {
		t.Errorf("delivered:\n%q", data)
	}
}

// A BDAT transfer the client abandons with RSET: nothing is stored, the
// session goes on, and the smtp-error line does not claim a reply the
// client never got (it got "250 Session reset", not a 451).
func TestListenBDATReset(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	r := dialRaw(t, "tcp", s.listenAddrs()["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"} {
		r.cmd(c)
	}
	part := "Subject: abandoned\r\n\r\nfirst chunk\r\n"
	r.send(fmt.Sprintf("BDAT %d\r\n%s", len(part), part))
	if got := r.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("first chunk: %q", got)
	}
	if got := r.cmd("RSET"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("RSET: %q", got)
	}
	for _, c := range []string{"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>", "DATA"} {
		r.cmd(c)
	}
	r.send("Subject: after the reset\r\n\r\nbody\r\n.\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("after the reset: %q", got)
	}
	waitFor(t, "delivery", 30*time.Second, func() bool { return s.message("after the reset") != "" })
	waitFor(t, "the smtp-error line", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=smtp-error") })
	if s.message("abandoned") != "" {
		t.Errorf("the abandoned message was delivered")
	}
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "event=smtp-error") && strings.Contains(l, "reply=") {
			t.Errorf("the log names a reply the client never got: %s", l)
		}
	}
}

// A second MAIL inside a transaction is a bad sequence (RFC 5321 4.1.4):
// 503, as Postfix answers, and the transaction in progress stands — its
// sender and the recipients already accepted are what DATA sends. (It
// was answered 250 and replaced the transaction without its recipients,
// while go-smtp kept them and took DATA: the client sent the whole
// message for a 554 "no recipients".)
func TestListenNestedMAIL(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	d := s.start()
	defer d.term(t)
	r := dialRaw(t, "tcp", s.listenAddrs()["tcp4"])
	r.reply()
	for _, c := range []string{"EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"} {
		if got := r.cmd(c); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("%s: %q", c, got)
		}
	}
	if got := r.cmd("MAIL FROM:<other@example.org>"); !strings.HasPrefix(got, "503 5.5.1 ") {
		t.Errorf("nested MAIL: %q, want 503 5.5.1", got)
	}
	if got := r.cmd("DATA"); !strings.HasPrefix(got, "354 ") {
		t.Fatalf("DATA: %q", got)
	}
	r.send("Subject: nested mail\r\n\r\nbody\r\n.\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("after DATA: %q", got)
	}
	waitFor(t, "delivery", 30*time.Second, func() bool { return s.message("nested mail") != "" })
	for _, m := range up.Messages() {
		if strings.Contains(string(m.Data), "nested mail") && (m.From != "a@example.org" || strings.Join(m.To, ",") != "b@example.net") {
			t.Errorf("delivered from %q to %q, want a@example.org to b@example.net", m.From, m.To)
		}
	}

	// The 503 holds only inside a transaction: whatever ends one (a
	// delivered DATA, RSET, a refused DATA) lets the next MAIL start
	// another, and a refused MAIL leaves none open.
	mail := func(after string) {
		t.Helper()
		if got := r.cmd("MAIL FROM:<a@example.org>"); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("MAIL after %s: %q", after, got)
		}
	}
	mail("a delivered DATA")
	if got := r.cmd("RSET"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("RSET: %q", got)
	}
	mail("RSET")
	r.cmd("RSET")
	if got := r.cmd("MAIL FROM:<a@example.org> ENVID=" + strings.Repeat("x", 101)); !strings.HasPrefix(got, "501 ") {
		t.Fatalf("MAIL with an ENVID over 100 bytes: %q, want 501", got)
	}
	mail("a refused MAIL")
	r.cmd("RCPT TO:<b@example.net>")
	r.cmd("DATA")
	r.send("X-Big: " + strings.Repeat("y", 100) + strings.Repeat("\r\n "+strings.Repeat("y", 100), 11000) + "\r\n\r\nbody\r\n.\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "552 5.3.4 ") {
		t.Fatalf("a header field over 1 MB: %q, want 552 5.3.4", got)
	}
	mail("a refused DATA")
}

// relayd as the unit runs it: an unprivileged user with CAP_DAC_READ_SEARCH
// and CAP_SYS_PTRACE as ambient capabilities. It finds another user's
// client process, and no thread of relayd keeps the capabilities in force
// (they are raised only for a scan, on its locked thread, and lowered
// after it). Without
// them, mail is still recorded under the kernel's UID, without the
// process, and relayd says why.
func TestListenScanCapabilities(t *testing.T) {
	needRoot(t)
	for _, withCaps := range []bool{true, false} {
		t.Run(fmt.Sprintf("caps=%v", withCaps), func(t *testing.T) {
			up := newUpstream(t, smtptest.Options{})
			s := newSite(t, up, siteOpts{spoolSockets: true, extra: listenConf + "socket = \"\"\naddresses = [\"127.0.0.1\"]\n"})
			// (addresses is in listenConf too: keep one)
			cfg, _ := os.ReadFile(s.cfgPath)
			c := strings.Replace(string(cfg), "addresses = [\"127.0.0.1\", \"::1\"]\n", "", 1)
			os.WriteFile(s.cfgPath, []byte(c), 0o644)
			if withCaps {
				caps := "+dac_read_search,+sys_ptrace"
				s.opts.wrap = []string{"--inh-caps=" + caps, "--ambient-caps=" + caps}
			}
			d := s.startAsDaemonWith(s.opts.wrap...)
			defer d.term(t)
			var addr string
			waitFor(t, "the listener", 10*time.Second, func() bool {
				m := regexp.MustCompile(`event=listen addr=(127\.0\.0\.1:\d+) from=bound`).FindStringSubmatch(s.log())
				if m != nil {
					addr = m[1]
				}
				return m != nil
			})
			out := sendAs(t, 65534, "tcp", addr, "", "nobody@web1.example.com", "rcpt@example.net", "caps")
			if !strings.HasPrefix(out, "250 2.0.0 Ok: queued as ") {
				t.Fatal(out)
			}
			waitFor(t, "the pickup line", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=pickup") })
			log := s.log()
			withProc := regexp.MustCompile(`event=pickup .*uid=65534 user=nobody .*via=smtp caller=python client=127\.0\.0\.1:\d+ pid=\d+ process=/usr/bin/python3`).MatchString(log)
			if withCaps {
				if !withProc {
					t.Errorf("the client's process was not found:\n%s", log)
				}
				// Every thread of relayd: no capability in force.
				tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", d.cmd.Process.Pid))
				if len(tasks) == 0 {
					t.Fatal("no threads found")
				}
				for _, st := range tasks {
					b, _ := os.ReadFile(st)
					for _, l := range strings.Split(string(b), "\n") {
						if v, ok := strings.CutPrefix(l, "CapEff:\t"); ok && v != "0000000000000000" {
							t.Errorf("%s: CapEff %s", st, v)
						}
						if v, ok := strings.CutPrefix(l, "CapPrm:\t"); ok && v != "0000000000080004" {
							t.Errorf("%s: CapPrm %s, want dac_read_search and sys_ptrace", st, v)
						}
						if v, ok := strings.CutPrefix(l, "CapAmb:\t"); ok && v != "0000000000000000" {
							t.Errorf("%s: CapAmb %s", st, v)
						}
					}
				}
			} else {
				if withProc || !regexp.MustCompile(`(?m)event=pickup .*uid=65534 user=nobody .*via=smtp client=127\.0\.0\.1:\d+$`).MatchString(log) {
					t.Errorf("without capabilities: want the UID without a process:\n%s", log)
				}
				for _, want := range []string{"event=listen process_lookup=own-user-only", `event=warning reason="the client's process was not found`, "unreadable="} {
					if !strings.Contains(log, want) {
						t.Errorf("no %q in\n%s", want, log)
					}
				}
			}
		})
	}
}

// A listener port that another program holds (on port 25, usually the MTA
// that mailshim replaces, still running) is logged and skipped, with the
// fix: who holds it and what to change, as for a port under 1024.
func TestListenPortInUseHasFix(t *testing.T) {
	busy, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: fmt.Sprintf("\n[listen]\nenabled = true\naddresses = [\"127.0.0.1\"]\nports = [%d]\nsocket = \"\"\ncert_file = \"\"\nkey_file = \"\"\n", port)})
	d := s.start()
	defer d.term(t)
	var line string
	waitfor.True(t, "the unavailable listener's line", 10*time.Second, func() bool {
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "event=listen status=unavailable") {
				line = l
				return true
			}
		}
		return false
	})
	if !strings.Contains(line, "address already in use") || !strings.Contains(line, "fix=") || !strings.Contains(line, "ss -ltnp") || !strings.Contains(line, "[listen] ports") {
		t.Errorf("no fix for a port in use: %s", line)
	}
}
