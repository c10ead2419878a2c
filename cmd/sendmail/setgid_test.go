package main

// Privileged end-to-end tests: the setgid copy run as nobody. Each
// hardening promise of main.go's SECURITY block has a case here.

import (
	"debug/elf"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

const phpMail = "To: Rcpt One <rcpt1@example.org>, rcpt2@example.org\r\nSubject: hi\r\nFrom: Web App <webapp@example.org>\r\nBcc: hidden@example.org\r\n\r\nbody\n.leading dot\n"

func TestSetgidNobody(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	r := runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i"}, stdin: strings.NewReader(phpMail), env: []string{"SCRIPT_FILENAME=/var/www/site/contact.php"}})
	checkOK(t, r)
	m := s.one(t)
	if m.st.Uid != uint32(nobodyUID) || m.st.Gid != uint32(dropGroup) || m.mode.Perm() != spool.ModeDropFile.Perm() {
		t.Errorf("file owner %d:%d mode %v, want %d:%d %v", m.st.Uid, m.st.Gid, m.mode, nobodyUID, dropGroup, spool.ModeDropFile)
	}
	o := m.meta.Origin
	if o.UID != nobodyUID || o.GID != nobodyUID || o.User != "nobody" || o.Via != "maildrop" || o.Script != "/var/www/site/contact.php" {
		t.Errorf("origin %+v", o)
	}
	if strings.Contains(m.body, "Bcc") || strings.Join(m.meta.Env.Recipients, " ") != "rcpt1@example.org rcpt2@example.org hidden@example.org" {
		t.Errorf("stored %q %v", m.body, m.meta.Env.Recipients)
	}

	// A message of another user (root, through the setgid copy too).
	checkOK(t, runSendmail(t, invocation{args: []string{"-i", "a@example.org"}, stdin: strings.NewReader(simple), shell: `exec "$SENDMAIL" "$@"`}))
	var rootMsg msg
	for _, f := range s.files(t) {
		if f.st.Uid == 0 {
			rootMsg = f
		}
	}
	if rootMsg.path == "" {
		t.Fatal("root's message not stored")
	}
	// nobody (without the setgid program) can neither list the maildrop
	// nor read a file in it, its own or another user's.
	for _, args := range [][]string{{"ls", filepath.Dir(m.path)}, {"cat", m.path}, {"cat", rootMsg.path}} {
		cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, args...)...)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("nobody could run %q: %s", args, out)
		}
	}
}

// The parent's /proc/PID/exe and cwd are read (the fs gid of the locked
// thread switched to the real gid and back) although the effective gid
// differs, and the spool file is written afterwards: the fs gid was
// restored (with the real gid the maildrop, 1730, refuses the file).
func TestSetgidParentProcess(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	// "sh -c '...; exit'" keeps the shell as sendmail's parent; its parent
	// is the test (root), so the walk stops at the shell.
	r := runSendmail(t, invocation{nobody: true, shell: `cd /tmp && "$SENDMAIL" -t -i; exit $?`, stdin: strings.NewReader(phpMail)})
	checkOK(t, r)
	o := s.one(t).meta.Origin
	exe, _ := filepath.EvalSymlinks("/bin/sh")
	if o.ParentExe != exe || o.ParentCwd != "/tmp" || !strings.HasPrefix(o.ParentCmdline, "/bin/sh -c ") || o.ParentPID == 0 {
		t.Errorf("parent exe %q cwd %q cmdline %q pid %d; want exe %q cwd /tmp", o.ParentExe, o.ParentCwd, o.ParentCmdline, o.ParentPID, exe)
	}
}

// A cron job is "/bin/sh -c LINE" started by cron (root): the walk stops
// at the shell, whose command line is recorded. A password in LINE
// (mysqldump -pX, curl -u user:X, a URL's user:X) is not recorded: the
// same options are masked in the words of a shell's -c command as in a
// command line of their own.
func TestSetgidShellCommandPasswordMasked(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	line := `{ echo "Subject: backup"; echo; mysqldump -uroot -pMysq1-Secret shop 2>/dev/null; ` +
		`curl -s -u alice:Cu7l-Secret https://bob:Ur1-Secret@example.net/ 2>/dev/null; } | "$SENDMAIL" -i ops@example.org; exit $?`
	checkOK(t, runSendmail(t, invocation{nobody: true, shell: line}))
	o := s.one(t).meta.Origin
	if !strings.HasPrefix(o.ParentCmdline, "/bin/sh -c ") {
		t.Fatalf("parent cmdline %q, want the shell's", o.ParentCmdline)
	}
	for _, secret := range []string{"Mysq1-Secret", "Cu7l-Secret", "Ur1-Secret"} {
		if strings.Contains(o.ParentCmdline, secret) {
			t.Errorf("parent cmdline %q holds the password %q", o.ParentCmdline, secret)
		}
	}
	for _, want := range []string{"-p[redacted] shop", "-u alice:[redacted]", "https://bob:[redacted]@example.net/"} {
		if !strings.Contains(o.ParentCmdline, want) {
			t.Errorf("parent cmdline %q does not say %q", o.ParentCmdline, want)
		}
	}
}

// A caller behind a shell wrapper of its own user is read after
// package initialisation (origin.PrefetchParentLinks read the wrapper's
// links only): its exe and cwd are read on a thread locked for the
// switch, and the fs gid is restored before the spool file is written.
func TestSetgidWrappedParentProcess(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	// The inner "sh -c" (cwd /) is sendmail's parent, a wrapper of the
	// same user: the walk goes on to the outer one (cwd /tmp), whose
	// parent is the test (root).
	r := runSendmail(t, invocation{nobody: true, shell: `cd /tmp && /bin/sh -c 'cd / && "$SENDMAIL" -t -i; exit $?'; exit $?`, stdin: strings.NewReader(phpMail)})
	checkOK(t, r)
	o := s.one(t).meta.Origin
	exe, _ := filepath.EvalSymlinks("/bin/sh")
	if o.ParentExe != exe || o.ParentCwd != "/tmp" || !strings.HasPrefix(o.ParentCmdline, "/bin/sh -c 'cd /tmp ") {
		t.Errorf("parent exe %q cwd %q cmdline %q; want exe %q cwd /tmp, the outer shell's", o.ParentExe, o.ParentCwd, o.ParentCmdline, exe)
	}
}

// A shell script that runs sendmail (a cron job: cron runs
// "/bin/sh /path/job.sh" for a script with #!/bin/sh) is the script in
// the origin record, as an interpreter's script is: an admin asking which
// script sent a message finds it in the pickup line and the origin header.
func TestSetgidShellScriptParent(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	job := filepath.Join(dir, "nightly-report.sh")
	if err := os.WriteFile(job, []byte("\"$SENDMAIL\" -t -i\nexit $?\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := runSendmail(t, invocation{nobody: true, shell: `/bin/sh ` + job + `; exit $?`, stdin: strings.NewReader(phpMail)})
	checkOK(t, r)
	o := s.one(t).meta.Origin
	if o.Script != job || o.ScriptSource != "parent-cmdline" {
		t.Errorf("script %q from %q (parent cmdline %q); want %q from parent-cmdline", o.Script, o.ScriptSource, o.ParentCmdline, job)
	}
}

func TestSetgidEnvironment(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	tmp := t.TempDir()
	os.Chmod(tmp, 0o755)
	fifo := filepath.Join(tmp, "fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	// An attacker's configuration, pointing at a spool they could read.
	evil := newSpool(t, false, "")
	os.WriteFile(sgConf, []byte("hostname = \"test.example\"\nspool = \""+s.root+"\"\n"), 0o644)
	env := []string{
		"GOTRACEBACK=crash",
		"TZ=" + fifo, // opening a FIFO blocks: the test would time out
		"ZONEINFO=" + fifo,
		"GOROOT=" + tmp,
		"MAILSHIM_CONFIG=" + evil.conf,
		"LANG=C", "LC_ALL=xx_XX", "HOSTALIASES=" + fifo, "RES_OPTIONS=debug",
	}
	r := runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i"}, stdin: strings.NewReader(phpMail), env: env})
	checkOK(t, r)
	m := s.one(t)
	evil.none(t)
	if !strings.HasSuffix(m.meta.Time.Format(time.RFC3339), "Z") {
		t.Errorf("time %v", m.meta.Time)
	}
	os.Remove(m.path)

	// GODEBUG is parsed by the Go runtime before any of our code runs, and
	// Go has no way to refuse it short of re-executing (which sendmail
	// never does). What it can do is bounded: print runtime diagnostics on
	// the caller's own stderr (the runtime opens /dev/null on a closed fd
	// 2 first, so they never land in a spool file), or change scheduling
	// and GC behaviour; no setting opens a file. Pin exactly that.
	r = runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i"}, stdin: strings.NewReader(phpMail), env: []string{"GODEBUG=inittrace=1"}})
	if r.code != 0 {
		t.Fatalf("GODEBUG: %+v", r)
	}
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if l != "" && !strings.HasPrefix(l, "init ") {
			t.Errorf("GODEBUG: unexpected stderr line %q", l)
		}
	}
	m = s.one(t)
	if strings.Contains(m.body, "init ") {
		t.Errorf("trace in the message: %q", m.body)
	}
	os.Remove(m.path)
	r = runSendmail(t, invocation{nobody: true, shell: `GODEBUG=inittrace=1,gctrace=1 "$SENDMAIL" -t -i 2>&-; echo "rc=$?"`, stdin: strings.NewReader(phpMail)})
	if r.stdout != "rc=0\n" {
		t.Fatalf("GODEBUG with stderr closed: %+v", r)
	}
	if m := s.one(t); strings.Contains(m.body, "init ") || strings.Contains(m.body, "gc ") {
		t.Errorf("trace in the message: %q", m.body)
	}

	// Without setgid, MAILSHIM_CONFIG is honoured (tests and the demo).
	checkOK(t, runSendmail(t, invocation{args: []string{"-t", "-i"}, conf: evil.conf, stdin: strings.NewReader(phpMail)}))
	evil.one(t)
}

func TestSetgidClosedFDs(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "max_message_size = 4096\n")
	// stderr closed: the message is stored intact (a spool file opened on
	// fd 2 would collect error text).
	r := runSendmail(t, invocation{nobody: true, shell: `"$SENDMAIL" -t -i 2>&-; echo "rc=$?"`, stdin: strings.NewReader(phpMail)})
	if r.stdout != "rc=0\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	m := s.one(t)
	if !strings.HasSuffix(m.body, "\n\nbody\n.leading dot\n") || strings.Contains(m.body, "sendmail:") {
		t.Errorf("stored %q", m.body)
	}
	os.Remove(m.path)
	// All three closed, as mailutils does: no input, so no recipients.
	r = runSendmail(t, invocation{nobody: true, shell: `"$SENDMAIL" -t <&- >&- 2>&-; echo "rc=$?"`})
	if r.stdout != "rc=64\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	s.none(t)
	// stdin closed, recipients on the command line: an empty message.
	r = runSendmail(t, invocation{nobody: true, shell: `"$SENDMAIL" -i a@example.org <&-; echo "rc=$?"`})
	if r.stdout != "rc=0\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	if m := s.one(t); m.body != "From: nobody@test.example\n" {
		t.Errorf("stored %q", m.body)
	} else {
		os.Remove(m.path)
	}
	// stderr closed and a failure after the spool file was opened.
	r = runSendmail(t, invocation{nobody: true, shell: `"$SENDMAIL" -i a@example.org 2>&-; echo "rc=$?"`, stdin: strings.NewReader("Subject: x\n\n" + strings.Repeat("y", 5000))})
	if r.stdout != "rc=65\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	s.none(t)
	// stdout closed in -bs mode: the replies go to /dev/null, the message
	// is complete and stored.
	r = runSendmail(t, invocation{nobody: true, shell: `"$SENDMAIL" -bs >&-; echo "rc=$?" >&2`, stdin: strings.NewReader("HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n")})
	if r.stderr != "rc=0\n" {
		t.Errorf("-bs with stdout closed: %q", r.stderr)
	}
	if m := s.one(t); !strings.HasSuffix(m.body, "\n\nx\n") {
		t.Errorf("stored %q", m.body)
	}
}

func TestSetgidRlimitFsize(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("SKIPPED: prlimit not installed")
	}
	s := newSpool(t, true, "")
	r := runSendmail(t, invocation{nobody: true, wrap: []string{"prlimit", "--fsize=2000:2000"}, shell: `exec "$SENDMAIL" "$@"`, args: []string{"-i", "a@example.org"},
		stdin: strings.NewReader("Subject: x\n\n" + strings.Repeat("y\n", 5000))})
	checkFailure(t, r, 73, "the message is over this process's file size limit (RLIMIT_FSIZE, ulimit -f)")
	if strings.Contains(r.stderr, "spool is full") {
		t.Errorf("stderr %q blames the spool for the caller's own limit", r.stderr)
	}
	s.none(t)
}

func TestSetgidDiskFull(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	md := filepath.Join(s.root, spool.DirMaildrop)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=1730,gid="+strconv.Itoa(dropGroup), "mailshim-test", md).CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", md).Run() })
	r := runSendmail(t, invocation{nobody: true, args: []string{"-i", "a@example.org"}, stdin: strings.NewReader("Subject: x\n\n" + strings.Repeat("y", 200<<10))})
	checkFailure(t, r, 73, "the spool is full")
	s.none(t)
	// A small message still fits afterwards: nothing was left behind.
	checkOK(t, runSendmail(t, invocation{nobody: true, args: []string{"-i", "a@example.org"}, stdin: strings.NewReader(simple)}))
	s.one(t)
}

// Signals while the spool file is being written: SIGTERM, SIGINT, SIGHUP
// and SIGQUIT end sendmail by their default action, silently, as SIGKILL
// does, and leave nothing (the file is an O_TMPFILE without a name until
// it is complete). -bs catches them instead: TestSetgidSignalsSMTP.
func TestSetgidSignals(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	md := filepath.Join(s.root, spool.DirMaildrop)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sgPath, "-i", "a@example.org")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stdin.Write([]byte("Subject: x\n\n" + strings.Repeat("partial body\n", 10000)))
			// Wait until the spool file is open (an fd into maildrop/).
			waitSpoolFileOpen(t, cmd.Process.Pid, md)
			cmd.Process.Signal(sig)
			cmd.Wait()
			stdin.Close()
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != sig || stderr.Len() != 0 {
				t.Errorf("%v, stderr %q; want killed by %v, nothing said", cmd.ProcessState, stderr.String(), sig)
			}
			s.none(t)
		})
	}
}

// waitSpoolFileOpen waits until process pid has a file of directory md
// open.
func waitSpoolFileOpen(t *testing.T, pid int, md string) {
	t.Helper()
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	waitfor.True(t, "the spool file to be open", 30*time.Second, func() bool {
		ents, _ := os.ReadDir(fdDir)
		for _, e := range ents {
			if l, _ := os.Readlink(filepath.Join(fdDir, e.Name())); strings.HasPrefix(l, md+"/") {
				return true
			}
		}
		return false
	})
}

// In -bs, a signal while a message is being written aborts it and exits
// 74 with one line; nothing of the message is left.
func TestSetgidSignalsSMTP(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	md := filepath.Join(s.root, spool.DirMaildrop)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sgPath, "-bs")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stdin.Write([]byte("HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\n" + strings.Repeat("partial body\r\n", 10000)))
			waitSpoolFileOpen(t, cmd.Process.Pid, md)
			cmd.Process.Signal(sig)
			cmd.Wait()
			stdin.Close()
			if code := cmd.ProcessState.ExitCode(); code != 74 || !strings.HasPrefix(stderr.String(), "sendmail: interrupted") {
				t.Errorf("exit %d, stderr %q; want 74", code, stderr.String())
			}
			s.none(t)
		})
	}
}

// From the start of the commit on, the signals that end sendmail are
// ignored: once the message can be in the maildrop, sendmail must not die
// with a status its caller reads as "not sent". guard.Commit, the commit
// sendmail's store runs, is called in a child process (ignoring signals
// here would be inherited by every program the tests start).
func TestCommitIgnoresSignals(t *testing.T) {
	if os.Getenv("SENDMAIL_TEST_COMMIT") == "1" {
		sigIgn := func() string {
			b, _ := os.ReadFile("/proc/self/status")
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
					return strings.TrimSpace(v)
				}
			}
			return ""
		}
		// Whatever the tests' process ignores, its children inherit.
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
			defaultAction(sig)
		}
		before, during := sigIgn(), ""
		guard{}.Commit(func() error { during = sigIgn(); return nil })
		os.Stdout.WriteString(before + " " + during)
		os.Exit(0)
	}
	if handled {
		t.Fatal("handled is set in the tests' process")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestCommitIgnoresSignals$")
	cmd.Env = append(os.Environ(), "SENDMAIL_TEST_COMMIT=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var masks [2]uint64
	for i, f := range strings.Fields(string(out) + " x x")[:2] {
		if masks[i], err = strconv.ParseUint(f, 16, 64); err != nil {
			t.Fatalf("SigIgn %q: %v", out, err)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		bit := uint64(1) << (uint(sig) - 1)
		if masks[0]&bit != 0 {
			t.Errorf("%v is ignored before the commit (SigIgn %s)", sig, out)
		}
		if masks[1]&bit == 0 {
			t.Errorf("%v is not ignored during the commit (SigIgn %s)", sig, out)
		}
	}
}

// The maildrop replaced by a symbolic link is not followed.
func TestSetgidSymlinkedMaildrop(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	md := filepath.Join(s.root, spool.DirMaildrop)
	target := filepath.Join(filepath.Dir(s.root), "elsewhere")
	os.Rename(md, target)
	if err := os.Symlink(target, md); err != nil {
		t.Fatal(err)
	}
	r := runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i"}, stdin: strings.NewReader(phpMail)})
	checkFailure(t, r, 73, "spool")
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("written through the symlink: %v", ents)
	}
}

func TestSetgidSMTP(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	in := "HELO [127.0.0.1]\r\nMAIL FROM:<webapp@example.org>\r\nRCPT TO:<rcpt1@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
	r := runSendmail(t, invocation{nobody: true, args: []string{"-bs"}, stdin: strings.NewReader(in)})
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("%+v", r)
	}
	if m := s.one(t); m.st.Uid != uint32(nobodyUID) || m.meta.Origin.Mode != "bs" {
		t.Errorf("uid %d mode %q", m.st.Uid, m.meta.Origin.Mode)
	}
}

// A refused option is logged (syslog) with the caller's UID.
func TestSetgidRefusalLogged(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, "")
	os.Remove(logSock)
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: logSock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(logSock)
	defer ln.Close()
	os.Chmod(logSock, 0o666)
	r := runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i", "-X/tmp/x.php"}, stdin: strings.NewReader(phpMail)})
	checkFailure(t, r, 64, "refused")
	s.none(t)
	ln.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := string(buf[:n])
	if !strings.HasPrefix(line, "<20>") || !strings.Contains(line, " sendmail[") || !strings.Contains(line, "uid=65534 ") || !strings.Contains(line, "-X") || !strings.Contains(line, "status=64") {
		t.Errorf("log line %q", line)
	}
}

// The binary is static: no dynamic loader, so LD_PRELOAD, LD_LIBRARY_PATH
// and kin have nothing to act on.
func TestStaticBinary(t *testing.T) {
	needBinary(t)
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("sendmail is dynamically linked (%v)", p.Type)
		}
	}
}

// The caller's umask does not change the spool file's mode (the contract
// with relayd, which reads through the group).
func TestSetgidUmask(t *testing.T) {
	needRoot(t)
	for _, mask := range []string{"777", "000"} {
		s := newSpool(t, true, "")
		r := runSendmail(t, invocation{nobody: true, shell: `umask ` + mask + `; "$SENDMAIL" -t -i; echo "rc=$?"`, stdin: strings.NewReader(phpMail)})
		if r.stdout != "rc=0\n" {
			t.Fatalf("umask %s: %+v", mask, r)
		}
		if m := s.one(t); m.mode.Perm() != spool.ModeDropFile.Perm() {
			t.Errorf("umask %s: mode %v", mask, m.mode)
		}
	}
}
