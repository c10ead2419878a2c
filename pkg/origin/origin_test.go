package origin

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
)

func TestCgroup(t *testing.T) {
	tests := []struct{ file, want string }{
		{"0::/system.slice/php8.2-fpm.service\n", "php8.2-fpm.service"},
		{"0::/system.slice/cron.service\n", "cron.service"},
		{"0::/user.slice/user-1001.slice/session-3.scope\n", "session-3.scope"},
		{"0::/user.slice/user-1001.slice/user@1001.service/app.slice/app-foo.scope\n", "app-foo.scope"},
		{"12:pids:/\n1:name=systemd:/system.slice/apache2.service\n0::/\n", "apache2.service"},
		{"1:name=systemd:/system.slice/a.service\n0::/system.slice/b.service\n", "b.service"},
		{"0::/\n", ""},
		{"garbage", ""},
	}
	for _, tt := range tests {
		p := filepath.Join(t.TempDir(), "cgroup")
		if err := os.WriteFile(p, []byte(tt.file), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := Cgroup(p); got != tt.want {
			t.Errorf("Cgroup(%q) = %q, want %q", tt.file, got, tt.want)
		}
	}
}

func TestApplyPHPHeader(t *testing.T) {
	o := spool.Origin{UID: 1001}
	ApplyPHPHeader(&o, "1001:contact.php")
	if o.Script != "contact.php" || o.ScriptSource != SourcePHPHeader || o.PHPUIDMismatch {
		t.Errorf("%+v", o)
	}
	// A forged uid is recorded, never believed.
	o = spool.Origin{UID: 1001}
	ApplyPHPHeader(&o, "0:rootowned.php")
	if o.Script != "" || !o.PHPUIDMismatch || o.PHPHeader != "0:rootowned.php" {
		t.Errorf("%+v", o)
	}
	// SCRIPT_FILENAME wins over the header.
	o = spool.Origin{UID: 1001, Script: "/srv/a.php", ScriptSource: SourceScriptFilename}
	ApplyPHPHeader(&o, "1001:b.php")
	if o.Script != "/srv/a.php" {
		t.Errorf("%+v", o)
	}
	o = spool.Origin{UID: 1001}
	ApplyPHPHeader(&o, "garbage")
	if !o.PHPUIDMismatch || o.Script != "" {
		t.Errorf("%+v", o)
	}
}

func TestProcessKindAndScript(t *testing.T) {
	tests := []struct {
		comm, cmdline, cwd, kind, script string
	}{
		{"cron", "/usr/sbin/CRON -f", "", "cron", ""},
		{"php-fpm8.2", "php-fpm: pool www", "", "php-fpm", ""},
		{"php", "php symfony.php default", "/home/u/site", "php", "/home/u/site/symfony.php"},
		{"php8.2", "/usr/bin/php8.2 -d memory_limit=1G -f /srv/x.php", "", "php", "/srv/x.php"},
		{"php", "php -r mail(1);", "", "php", ""},
		{"python3", "/usr/bin/python3 -u /srv/f2b.py", "", "python", "/srv/f2b.py"},
		{"python3", "python3 -m smtpd", "", "python", ""},
		{"perl", "/usr/bin/perl /usr/lib/git-core/git-send-email --to=x", "", "perl", "/usr/lib/git-core/git-send-email"},
		{"ruby", "ruby /srv/notify.rb --to x", "", "ruby", "/srv/notify.rb"},
		{"ruby3.1", "/usr/bin/ruby3.1 -w -I lib -r json mailer.rb", "/home/u/app", "ruby", "/home/u/app/mailer.rb"},
		{"ruby", "ruby -C /srv/app bin/send.rb", "/home/u", "ruby", "/srv/app/bin/send.rb"},
		{"ruby", "ruby -Capp send.rb", "/home/u", "ruby", "/home/u/app/send.rb"},
		{"ruby", "ruby -e Mail.deliver x.rb", "", "ruby", ""},
		{"ruby", "ruby -eMail.deliver x.rb", "", "ruby", ""},
		{"perl", "perl -eprint x.pl", "", "perl", ""},
		{"perl", "perl -E say x.pl", "", "perl", ""},
		{"perl", "perl -I lib /srv/x.pl", "", "perl", "/srv/x.pl"},
		{"rubocop", "rubocop x.rb", "", "", ""},
		{"python3", "python3 -cprint(1) x.py", "", "python", ""},
		{"php", "php -rmail(1); x.php", "", "php", ""},
		// Clustered letters: the one taking a value may come last.
		{"ruby", "ruby -we Mail.deliver x.rb", "", "ruby", ""},
		{"perl", "perl -lne print x.pl", "", "perl", ""},
		{"perl", "perl -0777ne print x.pl", "", "perl", ""},
		{"python3", "python3 -uc print(1) x.py", "", "python", ""},
		{"php", "php -nr mail(1); x.php", "", "php", ""},
		{"ruby", "ruby -wrjson /srv/x.rb", "", "ruby", "/srv/x.rb"},
		{"ruby", "ruby -wr json /srv/x.rb", "", "ruby", "/srv/x.rb"},
		// ruby -X is -C; its long options may take the next argument.
		{"ruby", "ruby -X /srv/app send.rb", "/home/u", "ruby", "/srv/app/send.rb"},
		{"ruby", "ruby --disable gems /srv/x.rb", "", "ruby", "/srv/x.rb"},
		// perl -l and -x take no separate value: the next argument is the script.
		{"perl", "perl -l /srv/x.pl a@b", "", "perl", "/srv/x.pl"},
		{"perl", "perl -x /srv/x.pl a@b", "", "perl", "/srv/x.pl"},
		{"perl", "perl -Mstrict -i.bak /srv/x.pl", "", "perl", "/srv/x.pl"},
		// php -R is inline code, -F the script, -S takes a value.
		{"php", "php -R mail(1); x.php", "", "php", ""},
		{"php", "php -F /srv/x.php", "", "php", "/srv/x.php"},
		{"php", "php -S localhost:8000 router.php", "/srv", "php", "/srv/router.php"},
		{"php", "php -dmemory_limit=1G /srv/x.php", "", "php", "/srv/x.php"},
		// php -d= is an empty value (php_getopt): the next argument is the script.
		{"php", "php -d= /srv/x.php", "", "php", "/srv/x.php"},
		// php's long options are its letters': --run is -r, --process-file -F, --server -S.
		{"php", "php --run mail(1); x.php", "", "php", ""},
		{"php", "php --process-code mail(1); x.php", "", "php", ""},
		{"php", "php --process-file /srv/x.php", "", "php", "/srv/x.php"},
		{"php", "php --server localhost:8000 router.php", "/srv", "php", "/srv/router.php"},
		{"php", "php --file x.php", "/srv", "php", "/srv/x.php"},
		{"ruby", "ruby --encoding utf-8 /srv/x.rb", "", "ruby", "/srv/x.rb"},
		{"php", "php --run=mail(1); x.php", "", "php", ""},
		{"php", "php --file=/srv/x.php a", "", "php", "/srv/x.php"},
		{"php", "php --define=a=1 /srv/x.php", "", "php", "/srv/x.php"},
		{"ruby", "ruby --encoding=utf-8 --disable=gems /srv/x.rb", "", "ruby", "/srv/x.rb"},
		{"php", "php -nd= /srv/x.php", "", "php", "/srv/x.php"},
		// python -m: the program is a module, what follows is its arguments.
		{"python3", "python3 -m mailer --to a@b", "", "python", ""},
		// "-": the program is read from standard input.
		{"perl", "perl - a@b", "", "perl", ""},
		{"git-send-email", "git-send-email", "", "git", ""},
		{"s-nail", "s-nail -s x a@b", "", "mailx", ""},
		{"bsd-mailx-extra", "bsd-mailx-extracted -s x", "", "mailx", ""},
		{"sudo", "sudo ls", "", "sudo", ""},
		{"bash", "-bash", "", "", ""},
		// A shell script (a cron job, a deploy hook) is the script; -c and
		// -s bring the program from elsewhere; -o and -O take a value.
		{"cronjob.sh", "/bin/sh ./cronjob.sh", "/srv", "", "/srv/cronjob.sh"},
		{"bash", "bash -e -o pipefail +o posix /srv/job.sh a", "", "", "/srv/job.sh"},
		{"bash", "bash --rcfile /etc/rc --norc /srv/job.sh", "", "", "/srv/job.sh"},
		{"dash", "dash -ec 'sendmail x' job", "", "", ""},
		{"sh", "sh -s a b", "", "", ""},
		{"sh", "sh", "", "", ""},
		{"bash", "bash --login -O extglob +O nullglob -x -- /srv/job.sh", "", "", "/srv/job.sh"},
		{"bash", "bash --init-file /etc/rc /srv/job.sh", "", "", "/srv/job.sh"},
		{"sh", "sh -c 'sendmail x' /srv/job.sh", "", "", ""},
		{"sh", "sh -", "", "", ""},
		// "#!/bin/sh -" (no option read from the file's name): the
		// kernel runs "/bin/sh - /path/job.sh"; "-" ends the options.
		{"sh", "/bin/sh - /srv/job.sh", "", "", "/srv/job.sh"},
		{"busybox", "busybox sh /srv/job.sh", "", "", ""},
	}
	for _, tt := range tests {
		p := Process{Comm: tt.comm, Cmdline: strings.Fields(tt.cmdline), Cwd: tt.cwd}
		if k := p.Kind(); k != tt.kind {
			t.Errorf("%q: kind %q, want %q", tt.cmdline, k, tt.kind)
		}
		if s := p.Script(); s != tt.script {
			t.Errorf("%q: script %q, want %q", tt.cmdline, s, tt.script)
		}
	}
}

func TestShellWrapper(t *testing.T) {
	for _, tt := range []struct {
		comm, cmdline string
		want          bool
	}{
		{"sh", "sh -c /usr/sbin/sendmail -t -i", true},
		{"dash", "/bin/sh -c x", true},
		{"bash", "-bash -c x", true},
		{"bash", "bash -ec x", true},
		{"bash", "bash script.sh", false},
		{"php", "php -c x", false},
	} {
		p := Process{Comm: tt.comm, Cmdline: strings.Fields(tt.cmdline)}
		if got := isShellWrapper(p); got != tt.want {
			t.Errorf("%q: %v", tt.cmdline, got)
		}
	}
}

func TestCmdlineString(t *testing.T) {
	p := Process{Cmdline: []string{"php", "-f", "a b.php", "it's", ""}}
	if got := p.CmdlineString(); got != `php -f 'a b.php' 'it'\''s' ''` {
		t.Errorf("%q", got)
	}
}

// FindParent walks up through "sh -c" to the real caller, here this test
// process, started through a real shell.
func TestFindParentThroughShell(t *testing.T) {
	exe, _ := os.Executable()
	if os.Getenv("ORIGIN_HELPER") == "1" {
		p := FindParent(os.Getppid())
		os.Stdout.WriteString(p.Exe + "\n" + p.Comm + "\n")
		os.Exit(0)
	}
	_ = exe
	cmd := exec.Command("/bin/sh", "-c", `"$0" -test.run=TestFindParentThroughShell; exit $?`, os.Args[0])
	cmd.Env = append(os.Environ(), "ORIGIN_HELPER=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	self, _ := filepath.EvalSymlinks(os.Args[0])
	if lines[0] != self {
		t.Errorf("parent exe %q, want this test binary %q (sh -c skipped)", lines[0], self)
	}
}

func TestUserName(t *testing.T) {
	if n := UserName(0); n != "root" {
		t.Errorf("uid 0: %q", n)
	}
	if n := UserName(987654321); n != "" {
		t.Errorf("unknown uid: %q", n)
	}
}

// Sanitize: what a socket client claims is bounded and re-checked.
func TestSanitize(t *testing.T) {
	o := spool.Origin{UID: 1001, Mode: "x", Script: "/a.php", ScriptSource: "made-up",
		PHPHeader: "1001:/b.php", Cgroup: strings.Repeat("c", 3000)}
	for i := 0; i < 50; i++ {
		o.Ignored = append(o.Ignored, "-k"+strings.Repeat("k", 2000))
	}
	Sanitize(&o)
	if o.Mode != "" || o.Script != "" || o.ScriptSource != "" || o.PHPUIDMismatch || len(o.Cgroup) != 1024 ||
		len(o.Ignored) != MaxIgnored || len(o.Ignored[0]) != 1024 {
		t.Errorf("%+v", o)
	}
	// A PHP header of another UID claimed as the script's source.
	o = spool.Origin{UID: 1001, Script: "/root/x.php", ScriptSource: SourcePHPHeader, PHPHeader: "0:/root/x.php"}
	Sanitize(&o)
	if !o.PHPUIDMismatch || o.Script != "" {
		t.Errorf("%+v", o)
	}
	// The caller's own, believed.
	o = spool.Origin{UID: 1001, Script: "/b.php", ScriptSource: SourcePHPHeader, PHPHeader: "1001:/b.php", Mode: "bs"}
	Sanitize(&o)
	if o.PHPUIDMismatch || o.Script != "/b.php" || o.Mode != "bs" {
		t.Errorf("%+v", o)
	}
}

// ApplyProcess returns the process's real GID from the one read of
// /proc/PID/status it records the process with.
func TestApplyProcessGID(t *testing.T) {
	var o spool.Origin
	if g := ApplyProcess(&o, os.Getpid()); g != os.Getgid() || o.ParentPID != os.Getpid() {
		t.Errorf("ApplyProcess(self) = %d, ParentPID %d; want %d, %d", g, o.ParentPID, os.Getgid(), os.Getpid())
	}
	if g := ApplyProcess(&o, 1<<30); g != -1 {
		t.Errorf("ApplyProcess(no such process) = %d, want -1", g)
	}
}

// PrimaryGID reads uid's entry of /etc/passwd by UserName's rule.
func TestPrimaryGID(t *testing.T) {
	if g := PrimaryGID(0); g != 0 {
		t.Errorf("PrimaryGID(0) = %d, want 0", g)
	}
	if g := PrimaryGID(987654321); g != -1 {
		t.Errorf("PrimaryGID of a uid with no entry = %d, want -1", g)
	}
}

func TestThirdField(t *testing.T) {
	for line, want := range map[string]string{
		"root:x:0:0:root:/root:/bin/bash": "0",
		"nobody:x:65534:65534::/:":        "65534",
		"a:b:c":                           "c",
		"a:b:":                            "",
		"a:b":                             "<nil>",
		"":                                "<nil>",
	} {
		got := thirdField([]byte(line))
		s := string(got)
		if got == nil {
			s = "<nil>"
		}
		if s != want {
			t.Errorf("thirdField(%q) = %q, want %q", line, s, want)
		}
	}
}

// readProcess reads this process as the kernel has it: its name, parent,
// real UID and GID, and every argument, in order.
func TestReadProcessSelf(t *testing.T) {
	p := readProcess(os.Getpid())
	if p.PPID != os.Getppid() || p.UID != os.Getuid() || p.GID != os.Getgid() {
		t.Errorf("ppid %d uid %d gid %d, want %d %d %d", p.PPID, p.UID, p.GID, os.Getppid(), os.Getuid(), os.Getgid())
	}
	if want := filepath.Base(os.Args[0]); len(want) > 15 && p.Comm != want[:15] || len(want) <= 15 && p.Comm != want {
		t.Errorf("name %q, want %q", p.Comm, want)
	}
	if !slices.Equal(p.Cmdline, os.Args) {
		t.Errorf("command line %q, want %q", p.Cmdline, os.Args)
	}
}

// BenchmarkApplyProcess is the listener's reading of a client's process
// (status, cmdline, exe, cwd, cgroup), here this process.
func BenchmarkApplyProcess(b *testing.B) {
	b.ReportAllocs()
	pid := os.Getpid()
	for b.Loop() {
		var o spool.Origin
		if ApplyProcess(&o, pid) < 0 {
			b.Fatal("not read")
		}
	}
}

// A UID is only what /proc/PID/status says: a process whose status gives
// no real UID (unreadable, gone, no or a malformed Uid line) has UID -1,
// never 0 (root).
func TestStatusWithoutUID(t *testing.T) {
	for name, status := range map[string]string{
		"no Uid line": "Name:\tphp\nPPid:\t1\nGid:\t33\t33\t33\t33\n",
		"empty Uid":   "Name:\tphp\nUid:\t\nGid:\t33\t33\t33\t33\n",
		"bad Uid":     "Name:\tphp\nUid:\tx\t0\t0\t0\n",
		"empty":       "",
	} {
		p := Process{UID: -1, GID: -1}
		p.parseStatus([]byte(status))
		if p.UID != -1 {
			t.Errorf("%s: UID %d, want -1", name, p.UID)
		}
	}
	p := Process{UID: -1, GID: -1}
	p.parseStatus([]byte("Name:\tphp\nUid:\t1001\t0\t0\t0\nGid:\t33\t33\t33\t33\n"))
	if p.UID != 1001 || p.GID != 33 || p.Comm != "php" {
		t.Errorf("status read as %+v", p)
	}
	// A PID that no process has (above pid_max's largest value).
	if p := readProcess(1 << 23); p.UID != -1 || p.GID != -1 {
		t.Errorf("a process that does not exist: uid %d gid %d, want -1 -1", p.UID, p.GID)
	}
	var o spool.Origin
	if _, ok := ApplyProcessOf(&o, 1<<23, 0); ok {
		t.Error("a process that does not exist is taken as root's")
	}
}

// A caller's command line can be megabytes (a hostile client of the
// listener, or sendmail's caller): only its first maxCmdline bytes are
// read, and an argument the bound cuts is left out, never recorded in
// part.
func TestHugeCmdline(t *testing.T) {
	args := []string{"-c", "read x", "sh"}
	for i := 0; len(args) < 3000; i++ {
		args = append(args, strings.Repeat(string(rune('a'+i%26)), 99+i%7))
	}
	cmd := exec.Command("/bin/sh", args...)
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close(); cmd.Wait() }()
	want := append([]string{"/bin/sh"}, args...)
	var p Process
	for range 500 {
		// Until the child has exec'd the shell.
		if p = readProcess(cmd.Process.Pid); len(p.Cmdline) > 0 && p.Cmdline[0] == "/bin/sh" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := 0
	for _, a := range p.Cmdline {
		n += len(a) + 1
	}
	if n > maxCmdline || len(p.Cmdline) < 4 {
		t.Fatalf("%d arguments, %d bytes read; want at most %d bytes", len(p.Cmdline), n, maxCmdline)
	}
	if !slices.Equal(p.Cmdline, want[:len(p.Cmdline)]) {
		t.Errorf("the arguments read are not the command line's first ones, each whole")
	}
	if p.Script() != "" || p.Kind() != "" || !isShellWrapper(p) {
		t.Errorf("script %q kind %q shell wrapper %v (comm %q)", p.Script(), p.Kind(), isShellWrapper(p), p.Comm)
	}
}

// FuzzScript: Script reads a command line its caller chose (relayd's
// SMTP clients, sendmail's parent): whatever it holds, Script must not
// panic, and what it returns is "" or bounded, and absolute when the
// working directory is. cmdline is NUL-separated, as in /proc/PID/cmdline.
func FuzzScript(f *testing.F) {
	for _, row := range interpreters {
		k := row.kind
		o := row.opts
		for _, letters := range []string{o.value, o.inline, o.script, o.chdir, o.rest, o.digits} {
			for _, c := range letters {
				f.Add(k, k+"\x00-"+string(c)+"\x00x\x00/srv/s", "/home/u")
				f.Add(k, k+"\x00-w"+string(c)+"v\x00x", "")
				f.Add(k, k+"\x00-"+string(c), "/home/u")
			}
		}
		for _, l := range o.long {
			name, _, _ := strings.Cut(l, "=")
			f.Add(k, k+"\x00"+name+"\x00v\x00s", "/home/u")
			f.Add(k, k+"\x00"+name+"=v\x00s", "/home/u")
			f.Add(k, k+"\x00"+name+"=", "")
			f.Add(k, k+"\x00"+name, "")
		}
		f.Add(k, k+"\x00-0x\x00s", "/")
		f.Add(k, k+"\x00-0777ne\x00c\x00s", "")
		f.Add(k, k+"\x00--\x00", "/home/u")
		f.Add(k, k+"\x00-\x00s", "")
		f.Add(k, k+"\x00-d=\x00s", "")
	}
	f.Add("ruby3.1", "ruby3.1\x00-Capp\x00-X\x00..\x00s.rb", "/home/u")
	for _, c := range shellOptions.value + shellOptions.inline {
		f.Add("bash", "bash\x00-"+string(c)+"\x00x\x00/srv/s", "/home/u")
		f.Add("sh", "sh\x00+"+string(c)+"\x00x\x00s", "/home/u")
	}
	for _, l := range shellOptions.long {
		f.Add("bash", "bash\x00"+l+"\x00v\x00s", "/home/u")
	}
	f.Fuzz(func(t *testing.T, comm, cmdline, cwd string) {
		p := Process{Comm: comm, Cmdline: strings.Split(cmdline, "\x00"), Cwd: cwd}
		s := p.Script()
		if len(s) > maxField {
			t.Fatalf("script of %d bytes", len(s))
		}
		if s != "" && strings.HasPrefix(cwd, "/") && !strings.HasPrefix(s, "/") {
			t.Fatalf("script %q not absolute (cwd %q)", s, cwd)
		}
	})
}
