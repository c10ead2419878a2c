package attack

// The spool, traces, the setgid binary's environment and limits,
// credentials and backscatter, each attacked by a local user.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// delivered returns the upstream's messages after the first skip whose
// data contains s.
func (e *env) delivered(skip int, s string) []smtptest.Message {
	var out []smtptest.Message
	for _, m := range e.up.Messages()[skip:] {
		if strings.Contains(string(m.Data), s) {
			out = append(out, m)
		}
	}
	return out
}

func TestSpoolAttacks(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")

	t.Run("maildrop-direct", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody lists, reads and writes the maildrop without sendmail (ls, cat, a file of its own, a symlink)",
			"every attempt refused by the kernel (maildrop 1730 root:drop group)")
		md := e.site.Maildrop
		for _, script := range []string{"ls " + md, "echo x > " + md + "/planted", "ln -s /etc/shadow " + md + "/link", "cat " + md + "/*"} {
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(nobody, -1)}
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Errorf("nobody could %q: %s", script, out)
			}
		}
	})
	t.Run("planted-claims", func(t *testing.T) {
		e.use(t)
		tried(t, "a well-formed maildrop file owned by nobody whose header claims uid 0 (as a process with the drop group could plant)",
			"relayd takes the UID from the file's owner: logged uid-mismatch, picked up and delivered as uid 65534")
		m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
			Env:    spool.Envelope{Sender: "root@example.org", Recipients: []string{"planted@example.net"}},
			Origin: spool.Origin{UID: 0, GID: 0, User: "root", Via: "maildrop", Mode: "t"}}
		// Written in a scratch spool on the same file system, given to
		// nobody, then renamed into the maildrop whole.
		scratch := filepath.Join(e.dir, "scratch")
		if err := spool.Prepare(scratch, spool.CurrentOwner()); err != nil {
			t.Fatal(err)
		}
		md, err := spool.OpenDir(scratch, spool.DirMaildrop)
		if err != nil {
			t.Fatal(err)
		}
		d, err := spool.NewDrop(md, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(d, "Subject: planted\n\nx\n")
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		md.Close()
		src := filepath.Join(scratch, spool.DirMaildrop, m.ID)
		if err := os.Chown(src, nobody, -1); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(src, filepath.Join(e.site.Maildrop, m.ID)); err != nil {
			t.Fatal(err)
		}
		e.waitFor("the pickup", 30*time.Second, func() bool { return strings.Contains(e.log(), "event=pickup id="+m.ID+" ") })
		if !strings.Contains(e.log(), "event=uid-mismatch id="+m.ID+" file_uid=65534 header_uid=0 used=65534") {
			t.Errorf("no uid-mismatch line:\n%s", e.log())
		}
		for _, l := range strings.Split(e.log(), "\n") {
			if strings.Contains(l, "event=pickup id="+m.ID+" ") && !strings.Contains(l, " uid=65534 ") {
				t.Errorf("the header's UID was believed: %s", l)
			}
		}
	})
	t.Run("odd-files", func(t *testing.T) {
		e.use(t)
		tried(t, "a FIFO, a symlink to /etc/shadow, a directory and an empty file planted in the maildrop (by a holder of the drop group)",
			"relayd neither blocks nor follows them, and keeps delivering other users' mail")
		md := e.site.Maildrop
		id := func() string { return spool.NewID(time.Now()) }
		if err := syscall.Mkfifo(filepath.Join(md, id()), 0o660); err != nil {
			t.Fatal(err)
		}
		os.Symlink("/etc/shadow", filepath.Join(md, id()))
		os.Mkdir(filepath.Join(md, id()), 0o700)
		os.WriteFile(filepath.Join(md, id()), nil, 0o640)
		skip := len(e.up.Messages())
		if r := e.sendmail(run{uid: attacker(3), stdin: "Subject: after odd files\n\nx\n"}, "-i", "odd@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
		e.waitFor("other mail delivered", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: after odd files")) == 1 })
		for _, m := range e.up.Messages() {
			if strings.Contains(string(m.Data), "root:") {
				t.Errorf("/etc/shadow was read and sent")
			}
		}
		if e.r.Exited() {
			t.Fatal("relayd exited")
		}
	})
	t.Run("sigstop-mid-write", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody stops (SIGSTOP) its own setgid sendmail in the middle of a message, lets others send, then continues it",
			"nothing partial is delivered; others' mail flows meanwhile; the message is delivered once, whole, after SIGCONT")
		skip := len(e.up.Messages())
		cmd := exec.Command(e.site.Sendmail, "-i", "stopped@example.net")
		cmd.Env = e.site.Env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(nobody, -1)}
		in, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(in, "Subject: stopped\n\nfirst half\n"+strings.Repeat("x", 200<<10)+"\n")
		time.Sleep(100 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGSTOP)
		if r := e.sendmail(run{uid: attacker(4), stdin: "Subject: while stopped\n\nx\n"}, "-i", "other@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
		e.waitFor("other mail delivered", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: while stopped")) == 1 })
		if n := len(e.delivered(skip, "Subject: stopped\r\n")); n != 0 {
			t.Errorf("a partial message was delivered")
		}
		cmd.Process.Signal(syscall.SIGCONT)
		io.WriteString(in, "second half\n")
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("sendmail after SIGCONT: %v", err)
		}
		e.waitFor("the stopped message delivered", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: stopped\r\n")) == 1 })
		m := e.delivered(skip, "Subject: stopped\r\n")[0]
		if !strings.Contains(string(m.Data), "first half") || !strings.HasSuffix(string(m.Data), "second half\r\n") {
			t.Errorf("the stopped message was not delivered whole")
		}
	})
}

func TestTraceForgery(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	tried(t, "nobody sends a message carrying its own X-Mailshim-Origin (uid=0 user=root) and a Received: naming mailshim",
		"the delivered message has exactly one X-Mailshim-Origin, relayd's (uid=65534), and one Received: by mailshim; the caller's are renamed X-Mailshim-Forged-*")
	skip := len(e.up.Messages())
	msg := "X-Mailshim-Origin: uid=0; user=root; script=/root/cron.sh\nReceived: from uid 0 (root) by bench.example (mailshim) id 0006270A1B2C3D4E5F60; Mon, 7 Dec 2026 00:00:00 +0000\nSubject: forged trace\n\nx\n"
	if r := e.sendmail(run{uid: nobody, stdin: msg}, "-i", "trace@example.net"); r.code != 0 {
		t.Fatalf("sendmail: %v", r)
	}
	e.waitFor("delivery", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: forged trace")) == 1 })
	data := string(e.delivered(skip, "Subject: forged trace")[0].Data)
	hdr, _, _ := strings.Cut(data, "\r\n\r\n")
	var origin, received []string
	for _, l := range strings.Split(hdr, "\r\n") {
		switch {
		case strings.HasPrefix(strings.ToLower(l), "x-mailshim-origin:"):
			origin = append(origin, l)
		case strings.HasPrefix(strings.ToLower(l), "received:") && strings.Contains(l, "(mailshim)"):
			received = append(received, l)
		}
	}
	if len(origin) != 1 || !strings.Contains(origin[0], "uid=65534") {
		t.Errorf("origin headers %q\n%s", origin, hdr)
	}
	if len(received) != 1 || !strings.Contains(received[0], "from uid 65534 ") {
		t.Errorf("mailshim's Received headers %q\n%s", received, hdr)
	}
	if !strings.Contains(hdr, "X-Mailshim-Forged-") {
		t.Errorf("the caller's trace fields were not renamed:\n%s", hdr)
	}
}

func TestSetgidEnvironmentAndLimits(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	evil := filepath.Join(e.dir, "evil")
	os.MkdirAll(evil, 0o755)
	marker := filepath.Join(evil, "ran")
	os.WriteFile(filepath.Join(evil, "evil.conf"), []byte("spool = \""+evil+"\"\n"), 0o644)

	t.Run("environment", func(t *testing.T) {
		e.use(t)
		tried(t, "the setgid sendmail run by nobody with LD_PRELOAD, LD_LIBRARY_PATH, GCONV_PATH, LOCPATH, NLSPATH, GODEBUG, GOTRACEBACK, TMPDIR, HOME, MAILSHIM_CONFIG and IFS of the attacker's choosing",
			"exit 0, nothing on stdout, nothing on stderr but the runtime's own GODEBUG diagnostics, the message stored in the real spool and delivered; none of the attacker's paths used")
		skip := len(e.up.Messages())
		env := []string{"LD_PRELOAD=" + evil + "/evil.so", "LD_LIBRARY_PATH=" + evil, "GCONV_PATH=" + evil, "LOCPATH=" + evil,
			"NLSPATH=" + evil + "/%N", "GODEBUG=inittrace=1,gctrace=1,x509ignoreCN=0", "GOTRACEBACK=crash", "TMPDIR=" + evil,
			"HOME=" + evil, "MAILSHIM_CONFIG=" + evil + "/evil.conf", "IFS=/", "LANG=xx_XX.EVIL"}
		r := e.sendmail(run{uid: nobody, stdin: "Subject: hostile env\n\nx\n", env: env}, "-i", "env@example.net")
		if r.code != 0 || r.stdout != "" {
			t.Fatalf("sendmail with a hostile environment: %v", r)
		}
		// GODEBUG is read by the Go runtime before sendmail's code runs:
		// its diagnostics (and only those) go to the caller's own stderr
		// (cmd/sendmail's TestSetgidEnvironment pins the same).
		for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if l != "" && !strings.HasPrefix(l, "init ") && !strings.HasPrefix(l, "gc ") {
				t.Errorf("stderr line not from the Go runtime's GODEBUG: %q", l)
			}
		}
		e.waitFor("delivery", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: hostile env")) == 1 })
		if ents, _ := os.ReadDir(evil); len(ents) != 1 {
			t.Errorf("the attacker's directory changed: %v", ents)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Error("attacker code ran")
		}
	})
	t.Run("limits", func(t *testing.T) {
		e.use(t)
		tried(t, "the setgid sendmail run by nobody under RLIMIT_NOFILE=3, a 20 MB RLIMIT_AS, RLIMIT_FSIZE=100, with stdout and stderr closed",
			"each run exits 0 with the message delivered whole, or non-zero (never 75) with nothing delivered")
		if _, err := exec.LookPath("prlimit"); err != nil {
			t.Skip("SKIPPED: prlimit (util-linux) not installed")
		}
		for i, wrap := range [][]string{{"prlimit", "--nofile=3"}, {"prlimit", "--as=20000000"}, {"prlimit", "--fsize=100"}, {"/bin/sh", "-c", `exec "$0" "$@" >&- 2>&-`}} {
			skip := len(e.up.Messages())
			subj := fmt.Sprintf("Subject: limits %d", i)
			r := e.sendmail(run{uid: nobody, stdin: subj + "\n\n" + strings.Repeat("line\n", 100), wrap: wrap}, "-i", "limits@example.net")
			switch {
			case r.code == 0:
				e.waitFor("delivery", 30*time.Second, func() bool { return len(e.delivered(skip, subj+"\r\n")) == 1 })
				if m := e.delivered(skip, subj+"\r\n")[0]; strings.Count(string(m.Data), "line\r\n") != 100 {
					t.Errorf("%v: delivered cut", wrap)
				}
			case r.code == 75:
				t.Errorf("%v: exit 75 (a caller may read it as queued)", wrap)
			default:
				e.drained(t)
				if len(e.delivered(skip, subj+"\r\n")) != 0 {
					t.Errorf("%v: exit %d but delivered", wrap, r.code)
				}
			}
			t.Logf("%v: %v", wrap, r)
		}
	})
}

func TestCredentials(t *testing.T) {
	reject := func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && strings.Contains(arg, "reject") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	e := newEnv(t, smtptest.Options{Hook: reject}, "", "")
	leaks := func(t *testing.T, where, s string) {
		t.Helper()
		if strings.Contains(s, upstreamPassword) {
			t.Errorf("the upstream password is in %s", where)
		}
	}
	t.Run("check-config", func(t *testing.T) {
		e.use(t)
		tried(t, "relayd check-config run by nobody and by root",
			"the password appears in neither (nobody cannot read the secret file; root's output redacts it)")
		for _, uid := range []int{nobody, 0} {
			r := e.relayd(run{uid: uid}, "check-config")
			leaks(t, fmt.Sprintf("check-config as uid %d", uid), r.stdout+r.stderr)
		}
	})
	t.Run("proc", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody reads relayd's /proc/PID/{environ,cmdline,maps,status,fd/*} and the secret file",
			"the password is in none of what nobody can read")
		pid := e.r.Cmd.Process.Pid
		paths := []string{"environ", "cmdline", "maps", "status", "mem"}
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			for _, d := range ents {
				paths = append(paths, "fd/"+d.Name())
			}
		}
		for _, p := range paths {
			cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("head -c 1000000 /proc/%d/%s", pid, p))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(nobody, -1)}
			out, _ := cmd.Output()
			leaks(t, "/proc/PID/"+p+" as nobody", string(out))
		}
		cmd := exec.Command("/bin/cat", filepath.Join(e.dir, "upstream.secret"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(nobody, -1)}
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("nobody read the secret file: %q", out)
		}
	})
	t.Run("logs-and-bounces", func(t *testing.T) {
		e.use(t)
		tried(t, "nobody makes relayd log an upstream refusal and send a bounce (DSN) back",
			"the password is in neither the log nor the bounce")
		skip := len(e.up.Messages())
		if r := e.sendmail(run{uid: nobody, stdin: "Subject: to bounce\n\nx\n"}, "-i", "reject@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
		e.waitFor("the bounce", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: to bounce")) >= 1 })
		for _, m := range e.up.Messages() {
			leaks(t, "a delivered message", string(m.Data))
		}
		leaks(t, "relayd's log", e.log())
	})
}

func TestBackscatter(t *testing.T) {
	reject := func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt && (strings.Contains(arg, "reject") || strings.Contains(arg, "victim@")) {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	e := newEnv(t, smtptest.Options{Hook: reject}, "", "")
	tried(t, "nobody sends 5 messages with a third party's address as sender (-f victim@third.example) to a recipient the upstream refuses, and the upstream refuses the bounces too",
		"one bounce per message (no amplification), each from the null sender; a refused bounce is never bounced (no loop)")
	for i := 0; i < 5; i++ {
		if r := e.sendmail(run{uid: nobody, stdin: fmt.Sprintf("Subject: backscatter %d\n\nx\n", i)}, "-i", "-f", "victim@third.example", "reject@example.net"); r.code != 0 {
			t.Fatalf("sendmail: %v", r)
		}
	}
	e.waitFor("5 bounces refused and kept", 60*time.Second, func() bool { return strings.Count(e.log(), "event=failed ") >= 5 })
	// Anything more relayd would send has been sent by the time a later
	// message is through.
	skip := len(e.up.Messages())
	if r := e.sendmail(run{uid: nobody, stdin: "Subject: after backscatter\n\nx\n"}, "-i", "later@example.net"); r.code != 0 {
		t.Fatalf("sendmail: %v", r)
	}
	e.waitFor("a later message", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: after backscatter")) == 1 })
	time.Sleep(2 * time.Second)
	if n := strings.Count(e.log(), "event=bounced "); n != 5 {
		t.Errorf("%d bounces for 5 refused messages", n)
	}
	for _, l := range strings.Split(e.log(), "\n") {
		if strings.Contains(l, "event=bounced ") && strings.Contains(l, "to=<>") {
			t.Errorf("a bounce was bounced: %s", l)
		}
	}
}

// A user crashes its own setgid sendmail to get a core dump of it.
func TestCoreDump(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	tried(t, "nobody runs the setgid sendmail from a directory of its own with RLIMIT_CORE unlimited and kills it with SIGABRT, SIGSEGV and SIGQUIT in the middle of a message",
		"no core file appears anywhere nobody can read; nothing partial is delivered")
	dir := filepath.Join(e.dir, "nobody-cwd")
	os.Mkdir(dir, 0o755)
	os.Chown(dir, nobody, nobody)
	pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	dumpable, _ := os.ReadFile("/proc/sys/fs/suid_dumpable")
	t.Logf("core_pattern %q, suid_dumpable %q", strings.TrimSpace(string(pattern)), strings.TrimSpace(string(dumpable)))
	skip := len(e.up.Messages())
	for _, sig := range []syscall.Signal{syscall.SIGABRT, syscall.SIGSEGV, syscall.SIGQUIT} {
		cmd := exec.Command("/bin/sh", "-c", `ulimit -c unlimited; exec "$0" -i core@example.net`, e.site.Sendmail)
		cmd.Dir = dir
		cmd.Env = e.site.Env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred(nobody, -1)}
		in, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(in, "Subject: core\n\nhalf a message\n")
		time.Sleep(100 * time.Millisecond)
		cmd.Process.Signal(sig)
		// stdin stays open until sendmail is gone: an EOF would complete
		// the message.
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			t.Logf("%v: %v", sig, err)
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%v: sendmail did not exit", sig)
			<-done
		}
		in.Close()
	}
	for _, d := range []string{dir, "/", e.site.Maildrop} {
		ents, _ := os.ReadDir(d)
		for _, f := range ents {
			if strings.HasPrefix(f.Name(), "core") {
				t.Errorf("a core file: %s", filepath.Join(d, f.Name()))
			}
		}
	}
	e.drained(t)
	if n := len(e.delivered(skip, "Subject: core\r\n")); n != 0 {
		t.Errorf("%d partial messages delivered", n)
	}
}

// What an administrator reads (relayd queue list and show) and what a user
// reads (mailq) cannot carry a user's terminal escapes or bidi controls.
func TestAdminTerminal(t *testing.T) {
	var rc rcptCounter
	e := newEnv(t, smtptest.Options{Hook: rc.hook}, longRetry, listenConf)
	tried(t, "nobody uses addresses with U+202E and U+0085 (sendmail -f, a recipient, MAIL FROM on the listener) and a script path with ESC, C1 and bidi controls; root lists and shows the queue, nobody runs mailq",
		"the addresses are refused; the outputs hold no raw control characters (the script path is shown quoted)")
	for _, args := range [][]string{{"-i", "-f", "a\u202egro.elpmaxe@example.org", "x@example.net"}, {"-i", "b\u0085@example.net"}} {
		if r := e.sendmail(run{uid: nobody, stdin: "Subject: bidi\n\nx\n"}, args...); r.code == 0 {
			t.Errorf("sendmail %q accepted", args)
		}
	}
	out := e.raw(nobody, e.listenAddr(), []byte("EHLO x\r\nMAIL FROM:<a\u202eb@example.org> SMTPUTF8\r\nRCPT TO:<c\u2066d@example.net>\r\nQUIT\r\n"))
	if strings.Contains(out, "\r\n250 2.1.0") || strings.Contains(out, "\r\n250 2.0.0 Roger") {
		t.Errorf("the listener accepted a sender with a bidi control:\n%s", out)
	}
	env := []string{"SCRIPT_FILENAME=/var/www/\x1b]0;pwned\x07\u009b31m\u202eevil.php"}
	if r := e.sendmail(run{uid: nobody, stdin: "Subject: terminal\n\nx\n", env: env}, "-i", "term@example.net"); r.code != 0 {
		t.Fatalf("sendmail: %v", r)
	}
	e.waitFor("the message deferred", 30*time.Second, func() bool { return len(e.idsOf(nobody)) == 1 && strings.Contains(e.log(), "event=deferred ") })
	id := e.idsOf(nobody)[0]
	for _, r := range []result{e.relayd(run{uid: 0}, "queue", "list"), e.relayd(run{uid: 0}, "queue", "show", id), e.sendmail(run{uid: nobody}, "-bp")} {
		if r.code != 0 {
			t.Errorf("%v", r)
		}
		for _, c := range r.stdout {
			if c < 0x20 && c != '\n' || c == 0x7f || c >= 0x80 && c < 0xa0 || c >= '\u202a' && c <= '\u202e' || c >= '\u2066' && c <= '\u2069' {
				t.Errorf("raw control character %U in:\n%q", c, r.stdout)
				break
			}
		}
	}
}
