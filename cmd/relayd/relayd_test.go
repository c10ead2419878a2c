package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

func TestDeliverAndStop(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.drop("hello", 3)
	d := s.start()
	if _, err := up.WaitFor(3, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitfor.True(t, "an empty spool", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
	for _, m := range up.Messages() {
		if !m.TLS || m.User != "relay@example.com" || m.Helo != "web1.example.com" {
			t.Errorf("session: tls=%v user=%q helo=%q", m.TLS, m.User, m.Helo)
		}
	}
	if code := d.term(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, s.log())
	}
	log := s.log()
	for _, ev := range []string{"event=start", "event=pickup", "event=delivery", "status=sent", "event=removed", "event=stop signal=terminated", "event=stopped"} {
		if !strings.Contains(log, ev) {
			t.Errorf("log lacks %q:\n%s", ev, log)
		}
	}
	if connectable(s.controlSock()) || connectable(s.submitSock()) {
		t.Error("sockets still answer after exit")
	}
}

// restartCheck waits until every message tagged tag (n of them) arrived and
// the spool is empty, and checks duplicates.
func restartCheck(t *testing.T, s *site, tag string, n, kills int) {
	t.Helper()
	defer func() {
		if t.Failed() {
			got := s.subjects()
			missing := 0
			for i := 0; i < n; i++ {
				if got[fmt.Sprintf("%s %d", tag, i)] == 0 {
					missing++
				}
			}
			l := s.log()
			if len(l) > 6000 {
				l = l[len(l)-6000:]
			}
			t.Logf("missing %d, leftovers %v\nlog tail:\n%s", missing, s.leftovers(), l)
		}
	}()
	waitfor.True(t, fmt.Sprintf("%d messages delivered and an empty spool", n), 120*time.Second, func() bool {
		got := s.subjects()
		for i := 0; i < n; i++ {
			if got[fmt.Sprintf("%s %d", tag, i)] == 0 {
				return false
			}
		}
		return len(s.leftovers()) == 0
	})
	dups := 0
	for subj, c := range s.subjects() {
		if c > 2 {
			t.Errorf("%q delivered %d times", subj, c)
		}
		dups += c - 1
	}
	if dups > kills {
		t.Errorf("%d duplicates for %d kills", dups, kills)
	}
	t.Logf("%d messages, %d kills, %d duplicates", n, kills, dups)
}

func TestRestartDuringPickup(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	const n = 300
	s.drop("pickup", n)
	kills := 0
	for _, at := range []int{20, 120, 220} {
		d := s.start()
		waitfor.True(t, fmt.Sprintf("%d pickups", at), 60*time.Second, func() bool {
			return strings.Count(s.log(), "event=pickup ") >= at
		})
		d.kill()
		kills++
	}
	d := s.start()
	restartCheck(t, s, "pickup", n, kills)
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	if strings.Contains(s.log(), "event=quarantine") {
		t.Errorf("a kill produced a quarantined file:\n%s", s.log())
	}
}

func TestRestartDuringDelivery(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 1})
	const n = 300
	s.drop("delivery", n)
	kills := 0
	for _, at := range []int{30, 130, 230} {
		d := s.start()
		waitfor.True(t, fmt.Sprintf("%d deliveries", at), 60*time.Second, func() bool { return up.Count() >= at })
		d.kill()
		kills++
	}
	d := s.start()
	restartCheck(t, s, "delivery", n, kills)
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
	if !strings.Contains(s.log(), "event=recover") {
		t.Logf("no recovery was needed (the kills fell between messages)")
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	d := s.start()
	// A bad config is refused, the old one kept.
	os.WriteFile(s.cfgPath, []byte("hostname = \"x\"\nno_such_key = 1\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitfor.True(t, "the refused reload", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=reload status=refused") })
	if !strings.Contains(s.log(), "no_such_key") {
		t.Errorf("the refusal does not name the key:\n%s", s.log())
	}
	s.drop("after-bad-reload", 1)
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	// A good one is applied.
	s.opts.hostname = "web2.example.com"
	s.writeConfig("")
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitfor.True(t, "the reload", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=reload status=ok") })
	s.drop("after-good-reload", 1)
	msgs, err := up.WaitFor(2, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	if !strings.Contains(string(msgs[1].Data), "by web2.example.com (mailshim)") || msgs[1].Helo != "web2.example.com" {
		t.Errorf("new hostname not used:\n%s", msgs[1].Data)
	}
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// The reload line's needs_restart names what the running relayd still
// does not use because only a restart would apply it: measured against
// what relayd started with, not against the previous reload. An admin who
// changes queue.concurrency and reloads twice (the second time for an
// unrelated edit) must still be told a restart is pending, and one who
// puts the old value back must not be told to restart for nothing.
func TestReloadNeedsRestartAgainstStart(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{concurrency: 4})
	d := s.start()
	reloads := 0
	reload := func(concurrency int) string {
		t.Helper()
		s.opts.concurrency = concurrency
		s.writeConfig("")
		reloads++
		d.cmd.Process.Signal(syscall.SIGHUP)
		var line string
		waitfor.True(t, "the reload", 10*time.Second, func() bool {
			var n int
			for _, l := range strings.Split(s.log(), "\n") {
				if strings.Contains(l, "event=reload status=ok") {
					n++
					line = l
				}
			}
			return n >= reloads
		})
		return line
	}
	if l := reload(2); !strings.Contains(l, "needs_restart=queue.concurrency") {
		t.Errorf("concurrency 4 -> 2: %s", l)
	}
	if l := reload(2); !strings.Contains(l, "needs_restart=queue.concurrency") {
		t.Errorf("a second reload forgets that relayd still runs with concurrency 4: %s", l)
	}
	if l := reload(4); strings.Contains(l, "needs_restart") {
		t.Errorf("back to the concurrency relayd runs with, yet told to restart: %s", l)
	}
	if code := d.term(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestPasswordNeverLogged(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{protocol: true})
	s.drop("secret", 2)
	d := s.start()
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	// A wrong password too: AUTH fails, loudly, without echoing it.
	d.term(t)
	os.WriteFile(filepath.Join(s.dir, "secret"), []byte("wrong-"+testPassword+"\n"), 0o600)
	d = s.start()
	s.drop("secret-wrong", 1)
	waitfor.True(t, "the auth failure", 30*time.Second, func() bool { return strings.Contains(s.log(), "event=auth-failed") })
	d.term(t)
	log := s.log()
	if !strings.Contains(log, "trace: ") {
		t.Errorf("protocol trace missing:\n%s", log)
	}
	plain := base64.StdEncoding.EncodeToString([]byte("\x00relay@example.com\x00" + testPassword))
	login := base64.StdEncoding.EncodeToString([]byte(testPassword))
	wrong := base64.StdEncoding.EncodeToString([]byte("\x00relay@example.com\x00wrong-" + testPassword))
	for _, secret := range []string{testPassword, plain, login, wrong, base64.StdEncoding.EncodeToString([]byte("wrong-" + testPassword))} {
		if strings.Contains(log, secret) {
			t.Errorf("the log contains a secret (%q)", secret)
		}
	}
}

func TestSubmitSocket(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	m := &spool.Meta{Env: spool.Envelope{Sender: "", Recipients: []string{"root"}}, Origin: spool.Origin{UID: 4242, Script: "/srv/app/send.php"}}
	id, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: via socket\n\nhello\n"))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := up.WaitFor(1, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	got := msgs[0]
	uid := fmt.Sprint(os.Getuid())
	if len(got.To) != 1 || got.To[0] != "ops@example.com" || !strings.Contains(string(got.Data), "Received: from uid "+uid+" ") ||
		!strings.Contains(string(got.Data), "X-Mailshim-Origin: uid="+uid+" ") {
		t.Errorf("delivered to %v:\n%s", got.To, got.Data)
	}
	if !strings.Contains(s.log(), "event=pickup id="+id+" uid="+uid+" ") || !strings.Contains(s.log(), "via=socket") {
		t.Errorf("log:\n%s", s.log())
	}
}

func TestOneRelaydPerSpool(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	_, stderr, code := runCmd(t, nil, relaydBin, "--config", s.cfgPath)
	if code == 0 || !strings.Contains(stderr, "another relayd is running") {
		t.Fatalf("second relayd: exit %d, %q", code, stderr)
	}
}

func TestCheckConfig(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	out, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 0 || !strings.Contains(out, "web1.example.com") || strings.Contains(out+stderr, testPassword) {
		t.Fatalf("check-config: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	// MAILSHIM_CONFIG is honoured.
	if _, _, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "check-config"); code != 0 {
		t.Fatalf("check-config with MAILSHIM_CONFIG: exit %d", code)
	}
	// A bad key: 78 and the line.
	bad := filepath.Join(s.dir, "bad.conf")
	os.WriteFile(bad, []byte("hostname = \"x\"\n\n[queue]\nconcurency = 3\n"), 0o644)
	_, stderr, code = runCmd(t, nil, relaydBin, "check-config", "--config", bad)
	if code != 78 || !strings.Contains(stderr, ":4:") {
		t.Fatalf("bad config: exit %d, %q", code, stderr)
	}
	// An unsafe spool: 78, naming the path; relayd refuses to start.
	s.prepareSpool()
	md := filepath.Join(s.spool, spool.DirMaildrop)
	os.Chmod(md, 0o777|os.ModeSticky)
	_, stderr, code = runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 78 || !strings.Contains(stderr, md+": mode 1777") {
		t.Fatalf("unsafe maildrop: exit %d, %q", code, stderr)
	}
	_, stderr, code = runCmd(t, nil, relaydBin, "--config", s.cfgPath)
	if code != 78 || !strings.Contains(stderr, md) {
		t.Fatalf("relayd on an unsafe spool: exit %d, %q", code, stderr)
	}
}

// check-config run as root for the mailshim user's spool (what the README
// has the admin type: sudo relayd check-config) checks that relayd, as that
// user, can read the secrets: a password file left root's, mode 0600 (echo
// pw | sudo tee; sudo chmod 600), passed the check and then stopped relayd
// at start or its reload with "permission denied".
func TestCheckConfigSecretOwner(t *testing.T) {
	needRoot(t)
	u, err := user.Lookup("mailshim")
	if err != nil {
		t.Skip("SKIPPED: no mailshim user (make install-accounts)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	os.Mkdir(s.spool, 0o711)
	if err := os.Chown(s.spool, uid, gid); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(s.dir, "secret") // root's, 0600
	_, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 78 || !strings.Contains(stderr, "upstream.password_file: "+secret) || !strings.Contains(stderr, "chown mailshim "+secret) {
		t.Errorf("a password file relayd's user cannot read: exit %d, stderr %q", code, stderr)
	}
	if err := os.Chown(secret, uid, gid); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath); code != 0 {
		t.Errorf("the password file now mailshim's: exit %d, stderr %q", code, stderr)
	}
}

// The same for the TLS files relayd opens as its user: a ca_file or
// client_key root can read and relayd cannot (a key left root's, mode 0600,
// as openssl writes it) passed check-config as root and stopped relayd.
func TestCheckConfigTLSFilesReadable(t *testing.T) {
	needRoot(t)
	u, err := user.Lookup("mailshim")
	if err != nil {
		t.Skip("SKIPPED: no mailshim user (make install-accounts)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	os.Mkdir(s.spool, 0o711)
	if err := os.Chown(s.spool, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(s.dir, "secret"), uid, gid); err != nil {
		t.Fatal(err)
	}
	ca := up.Upstream().CAFile
	if err := os.Chmod(ca, 0o600); err != nil { // root's
		t.Fatal(err)
	}
	_, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath)
	if code != 78 || !strings.Contains(stderr, "upstream.ca_file: "+ca) || !strings.Contains(stderr, "cannot read") {
		t.Errorf("a ca_file relayd's user cannot read: exit %d, stderr %q", code, stderr)
	}
	// setfacl -m u:mailshim:r: readable although the mode (0640, root's
	// group) does not say so.
	acl := []byte{2, 0, 0, 0} // POSIX_ACL_XATTR_VERSION, then tag, perm, id
	for _, e := range []struct{ tag, perm, id uint32 }{{0x01, 6, 0xffffffff}, {0x02, 4, uint32(uid)}, {0x04, 0, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 0, 0xffffffff}} {
		acl = append(acl, byte(e.tag), byte(e.tag>>8), byte(e.perm), byte(e.perm>>8), byte(e.id), byte(e.id>>8), byte(e.id>>16), byte(e.id>>24))
	}
	if err := unix.Setxattr(ca, "system.posix_acl_access", acl, 0); err != nil {
		t.Logf("no ACL on %s (%v): that case not checked", ca, err)
	} else if _, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath); code != 0 {
		t.Errorf("a ca_file readable through an ACL: exit %d, stderr %q", code, stderr)
	}
	unix.Removexattr(ca, "system.posix_acl_access")
	if err := os.Chmod(ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCmd(t, nil, relaydBin, "check-config", "--config", s.cfgPath); code != 0 {
		t.Errorf("the ca_file now readable: exit %d, stderr %q", code, stderr)
	}
}

func TestQueueCommands(t *testing.T) {
	// An upstream that defers everything keeps the message queued.
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`})
	ids := s.drop("queued", 1)
	id := ids[0]
	s.start()
	waitfor.True(t, "the deferral", 30*time.Second, func() bool { return strings.Contains(s.log(), "event=deferred id="+id) })
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	out, stderr, code := runCmd(t, env, relaydBin, "queue", "list")
	if code != 0 || !strings.Contains(out, id+" deferred") {
		t.Fatalf("queue list: %d %q %q", code, out, stderr)
	}
	if out, _, code = runCmd(t, env, relaydBin, "queue", "show", id); code != 0 || !strings.Contains(out, "attempts:      1") {
		t.Fatalf("queue show: %d %q", code, out)
	}
	if out, _, code = runCmd(t, env, relaydBin, "queue", "hold", id); code != 0 || out != id+": held\n" {
		t.Fatalf("queue hold: %d %q", code, out)
	}
	if out, _, _ = runCmd(t, env, relaydBin, "queue", "mailq"); !strings.Contains(out, id+"!") {
		t.Fatalf("mailq after hold:\n%s", out)
	}
	if _, _, code = runCmd(t, env, relaydBin, "queue", "release", id); code != 0 {
		t.Fatalf("release: %d", code)
	}
	waitfor.True(t, "the second attempt", 30*time.Second, func() bool {
		return strings.Count(s.log(), "event=deferred id="+id) >= 2
	})
	if _, _, code = runCmd(t, env, relaydBin, "queue", "flush"); code != 0 {
		t.Fatalf("flush: %d", code)
	}
	if out, _, code = runCmd(t, env, relaydBin, "queue", "delete", id); code != 0 || out != id+": deleted\n" {
		// It may be active for a moment after the flush.
		waitfor.True(t, "the delete", 30*time.Second, func() bool {
			out, _, code = runCmd(t, env, relaydBin, "queue", "delete", id)
			return code == 0
		})
	}
	waitfor.True(t, "an empty spool", 10*time.Second, func() bool { return len(s.leftovers()) == 0 })
	_, stderr, code = runCmd(t, env, relaydBin, "queue", "show", id)
	if code == 0 || !strings.Contains(stderr, "no such message") {
		t.Fatalf("show of a deleted message: %d %q", code, stderr)
	}
}

// stallFirstData starts an upstream whose first DATA command never gets an
// answer (the hook blocks until its context ends); inData receives once
// that session has reached DATA. Later sessions are served normally.
func stallFirstData(t *testing.T) (*smtptest.Server, <-chan struct{}) {
	var stalled atomic.Bool
	inData := make(chan struct{}, 1)
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageData && stalled.CompareAndSwap(false, true) {
			inData <- struct{}{}
			<-ctx.Done()
		}
		return nil
	}})
	return up, inData
}

// SIGTERM with a session stuck in DATA: relayd waits --stop-timeout, aborts
// the session, exits 0, and the message stays queued (deferred, its
// attempt recorded) for the next start, which delivers it.
func TestStopAbortsStalledSession(t *testing.T) {
	up, inData := stallFirstData(t)
	s := newSite(t, up, siteOpts{args: []string{"--stop-timeout", "1s"}})
	ids := s.drop("stalled", 1)
	d := s.start()
	select {
	case <-inData:
	case <-time.After(30 * time.Second):
		t.Fatalf("the message never reached DATA\n%s", s.log())
	}
	if code := d.term(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.log())
	}
	if !strings.Contains(s.log(), "aborting them") {
		t.Errorf("no abort line:\n%s", s.log())
	}
	if q, err := spool.Snapshot(s.spool); err != nil || q[ids[0]].State != spool.Deferred || q[ids[0]].Attempts != 1 {
		t.Fatalf("after the abort the queue holds %+v (%v), want %s deferred with its attempt recorded; spool: %v", q, err, ids[0], s.leftovers())
	}
	s.start()
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitfor.True(t, "an empty spool", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
}

// The control socket identifies its peer by SO_PEERCRED: a user who is not
// root sees only its own messages in mailq and may not use the admin verbs.
func TestControlPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as nobody (CI runs as root)")
	}
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`})
	rootID := s.drop("root's", 1)[0]
	s.start()
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	run := func(name string, stdin string, args ...string) (string, string, int) {
		cmd := exec.Command(name, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
		cmd.SysProcAttr = nobody
		cmd.Dir = "/"
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	if _, stderr, code := run(sendmailBin, "Subject: nobody's\n\nhi\n", "-i", "x@example.net"); code != 0 {
		t.Fatalf("sendmail as nobody: %d %s", code, stderr)
	}
	waitfor.True(t, "both messages deferred", 30*time.Second, func() bool { return strings.Count(s.log(), "event=deferred ") >= 2 })
	out, stderr, code := run(relaydBin, "", "queue", "mailq")
	if code != 0 || strings.Contains(out, rootID) || !strings.Contains(out, "in 1 Request.") {
		t.Errorf("mailq as nobody: exit %d\n%s%s", code, out, stderr)
	}
	for _, verb := range [][]string{{"list"}, {"show", rootID}, {"hold", rootID}, {"delete", rootID}} {
		_, stderr, code := run(relaydBin, "", append([]string{"queue"}, verb...)...)
		if code != 77 || !strings.Contains(stderr, "only root and the mailshim user") {
			t.Errorf("queue %s as nobody: exit %d %q", verb[0], code, stderr)
		}
	}
	if q, err := spool.Snapshot(s.spool); err != nil || q[rootID].State != spool.Deferred {
		t.Errorf("root's message moved: %+v (%v)", q[rootID], err)
	}
	out, _, _ = runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, "queue", "mailq")
	if !strings.Contains(out, rootID) || !strings.Contains(out, "in 2 Requests.") {
		t.Errorf("mailq as root:\n%s", out)
	}
}

// A session stuck in DATA holds up only its own message: the other
// workers keep delivering new mail.
func TestStalledSessionDoesNotBlockOthers(t *testing.T) {
	up, inData := stallFirstData(t)
	s := newSite(t, up, siteOpts{concurrency: 2, args: []string{"--stop-timeout", "1s"}})
	s.drop("stuck", 1)
	s.start()
	select {
	case <-inData:
	case <-time.After(30 * time.Second):
		t.Fatalf("the first message never reached DATA\n%s", s.log())
	}
	s.drop("flowing", 5)
	if _, err := up.WaitFor(5, 30*time.Second); err != nil {
		t.Fatalf("new mail held up behind a stalled session: %v\n%s", err, s.log())
	}
}

// dialAs connects to the unix socket at sock with effective UID uid, as
// SO_PEERCRED will report it: the effective UID of the calling OS thread
// is switched for the connect only (a raw setresuid changes one thread;
// the saved UID, root, lets it switch back). Needs root.
func dialAs(uid int, sock string) (net.Conn, error) {
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		runtime.UnlockOSThread()
		return nil, e
	}
	c, err := net.Dial("unix", sock)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e == 0 {
		// Only a thread that is root again goes back to the pool; one
		// that is not dies with this goroutine.
		runtime.UnlockOSThread()
	}
	return c, err
}

// dialSubmits opens n connections to the submission socket as nobody (as
// ourselves when not root), each sending only the greeting, and returns
// them with a channel of their answers.
func dialSubmits(t *testing.T, sock string, n int) ([]net.Conn, chan string) {
	t.Helper()
	answers := make(chan string, n)
	var conns []net.Conn
	for i := 0; i < n; i++ {
		var c net.Conn
		var err error
		if os.Geteuid() == 0 {
			c, err = dialAs(65534, sock)
		} else {
			c, err = net.Dial("unix", sock)
		}
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "MAILSHIM-SUBMIT 1\n")
		conns = append(conns, c)
		go func() {
			line, _ := bufio.NewReader(c).ReadString('\n')
			answers <- line
		}()
	}
	return conns, answers
}

// One local user cannot hold the submission socket. Beyond 8
// submissions in progress and 32 waiting per UID, a connection is refused
// at once with a temporary failure, logged once (not once per connection);
// once the connections close, submissions work again.
func TestSubmitSocketLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as nobody (relayd's own user and root are never capped; CI runs as root)")
	}
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.start()
	conns, answers := dialSubmits(t, s.submitSock(), 50)
	busy := 0
	waitfor.True(t, "10 connections refused as busy", 20*time.Second, func() bool {
		for {
			select {
			case a := <-answers:
				if !strings.HasPrefix(a, "error 74 relayd is busy: ") {
					t.Fatalf("answer %q", a)
				}
				busy++
				continue
			default:
			}
			return busy >= 10
		}
	})
	if n := strings.Count(s.log(), "submission socket busy"); n != 1 {
		t.Errorf("%d busy log lines, want 1:\n%s", n, s.log())
	}
	for _, c := range conns {
		c.Close()
	}
	// relayd notices the closes asynchronously: until it has, a new
	// submission may still be answered busy. What must hold is that the
	// slots come back, so poll with a deadline.
	m := &spool.Meta{Env: spool.Envelope{Sender: "app@example.org", Recipients: []string{"x@example.net"}}}
	var lastErr error
	waitfor.True(t, "a submission accepted after the connections closed", 30*time.Second, func() bool {
		_, lastErr = submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: after the flood\n\nhello\n"))
		if lastErr != nil && !strings.Contains(lastErr.Error(), "busy") {
			t.Fatalf("submission after the connections closed: %v\n%s", lastErr, s.log())
		}
		return lastErr == nil
	})
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
}

// Out of file descriptors (EMFILE), relayd neither spins nor
// floods its log, and recovers when descriptors are free again.
func TestSubmitSocketEMFILE(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	d := s.start()
	pid := d.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot count relayd's descriptors: %v", err)
	}
	lim := unix.Rlimit{Cur: uint64(len(fds) + 8), Max: uint64(len(fds) + 8)}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, &old); err != nil {
		t.Skipf("prlimit: %v", err)
	}
	conns, _ := dialSubmits(t, s.submitSock(), 30)
	waitfor.True(t, "an accept failure logged", 20*time.Second, func() bool {
		return strings.Contains(s.log(), "submission socket accept failed")
	})
	// A control request while no descriptor is free: its accept fails too.
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- control.Request(s.controlSock(), control.VerbMailq, nil, io.Discard) }()
	waitfor.True(t, "a control accept failure logged", 20*time.Second, func() bool {
		return strings.Contains(s.log(), "control socket accept failed")
	})
	for _, c := range conns {
		c.Close()
	}
	<-ctlDone
	m := &spool.Meta{Env: spool.Envelope{Sender: "app@example.org", Recipients: []string{"x@example.net"}}}
	waitfor.True(t, "a submission accepted again", 30*time.Second, func() bool {
		_, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: after EMFILE\n\nhello\n"))
		return err == nil
	})
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	// The control socket rode it out too (it used to stop for good).
	if err := control.Request(s.controlSock(), control.VerbMailq, nil, io.Discard); err != nil {
		t.Errorf("control socket after EMFILE: %v", err)
	}
	if n := strings.Count(s.log(), "accept failed"); n > 2 {
		t.Errorf("%d accept failure lines, want at most one per socket:\n%.3000s", n, s.log())
	}
}

// End to end: a maildrop file relayd will not relay (a header
// field over the shared limit: a sendmail with other limits, or a file not
// written by sendmail) is bounced to its sender with the reason, through
// the upstream, and leaves nothing behind; the next message goes through.
func TestRejectedMaildropIsBounced(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	id := s.dropHugeHeader("")
	s.drop("after", 1)
	s.start()
	msgs, err := up.WaitFor(2, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%.4000s", err, s.log())
	}
	var dsn *smtptest.Message
	for i := range msgs {
		if msgs[i].From == "" {
			dsn = &msgs[i]
		}
	}
	if dsn == nil || len(dsn.To) != 1 || dsn.To[0] != "app@example.org" || !strings.Contains(string(dsn.Data), "the message header is too large") ||
		!strings.Contains(string(dsn.Data), "Subject: huge header") {
		t.Fatalf("no DSN to the sender with the reason among %d messages\n%.4000s", len(msgs), s.log())
	}
	waitfor.True(t, "an empty spool", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
	if !strings.Contains(s.log(), "event=rejected id="+id+" ") || !strings.Contains(s.log(), "action=bounced") {
		t.Errorf("log:\n%.4000s", s.log())
	}
}

// The submission socket applies [policy] allowed_senders (submitsock.Server
// with the configuration in force): a sender the policy refuses is
// answered 77 and nothing is stored.
func TestSubmitSocketSenderPolicy(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[policy.allowed_senders]\n\"*\" = [\"*@example.org\"]\n")
	s.start()
	m := &spool.Meta{Env: spool.Envelope{Sender: "ceo@bank.example", Recipients: []string{"x@example.net"}}}
	_, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: forged\n\nhello\n"))
	var se *submit.Error
	if !errors.As(err, &se) || se.Code != 77 || !strings.Contains(se.Msg, "not allowed") {
		t.Fatalf("forged sender: %v", err)
	}
	m.Env.Sender = "app@example.org"
	if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("Subject: allowed\n\nhello\n")); err != nil {
		t.Fatalf("allowed sender: %v\n%s", err, s.log())
	}
	msgs, err := up.WaitFor(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].From != "app@example.org" {
		t.Errorf("delivered %+v", msgs)
	}
}

// check-config run by a user who cannot read relayd's secrets (an
// administrator who left out sudo) says to run it as root or as relayd's
// user, rather than leaving a bare "permission denied" that invites
// making the password file readable to others.
func TestCheckConfigUnreadableSecretAsUser(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	secret := filepath.Join(s.dir, "secret") // root's, 0600
	_, stderr, code := runCmd(t, nil, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", relaydBin, "check-config", "--config", s.cfgPath)
	if code != 78 || !strings.Contains(stderr, "upstream.password_file: open "+secret+": permission denied") {
		t.Fatalf("check-config as nobody: exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stderr, "sudo relayd check-config") {
		t.Errorf("check-config as nobody does not say to run it as root: %q", stderr)
	}
}
