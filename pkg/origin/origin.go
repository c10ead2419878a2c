// Package origin finds out who sent a message: the caller's user and group
// IDs (from the kernel: the real IDs of the process), the user name (from
// the password database), and — advisory, as claimed by the caller's
// environment and /proc — the script, the parent process, the systemd unit
// and the kind of caller (cron, php, git, ...).
//
// Only UID, GID and User are trustworthy. Every other field of
// spool.Origin is labelled advisory in the spool format and must never be
// used for an access decision.
//
// Its Go API is not stable.
package origin

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/mailshim/mailshim/pkg/spool"
	"golang.org/x/sys/unix"
)

// TraceVars are the environment variables sendmail keeps (all others are
// dropped at start): they name the script that sent the message.
var TraceVars = []string{"SCRIPT_FILENAME", "MAILSHIM_SCRIPT"}

// Script sources, as recorded in spool.Origin.ScriptSource.
const (
	SourceScriptFilename = "SCRIPT_FILENAME"
	SourceMailshimScript = "MAILSHIM_SCRIPT"
	SourcePHPHeader      = "X-PHP-Originating-Script"
	SourceParentCmdline  = "parent-cmdline"
)

// maxField bounds every advisory string recorded.
const maxField = 1024

// Caller returns the kernel-verified part of the origin: the real UID and
// GID of this process and the user name of the UID.
func Caller() spool.Origin {
	uid, gid := unix.Getuid(), unix.Getgid()
	return spool.Origin{UID: uid, GID: gid, User: UserName(uid)}
}

// Collect returns the whole origin record of this process's caller: Caller
// plus the advisory fields from env (the trace variables, captured before
// the environment was cleared) and /proc.
func Collect(env map[string]string) spool.Origin {
	o := Caller()
	if v := clean(env["SCRIPT_FILENAME"]); v != "" {
		o.Script, o.ScriptSource = v, SourceScriptFilename
	} else if v := clean(env["MAILSHIM_SCRIPT"]); v != "" {
		o.Script, o.ScriptSource = v, SourceMailshimScript
	}
	FindParent(os.Getppid()).record(&o)
	o.Cgroup = Cgroup("/proc/self/cgroup")
	return o
}

// ApplyPHPHeader records the value of PHP's X-PHP-Originating-Script
// header ("uid:script") in o. Its uid is checked against o.UID: a mismatch
// is recorded (PHPUIDMismatch) and the script is then not believed. The
// header's script is used only when no better source (SCRIPT_FILENAME,
// MAILSHIM_SCRIPT) named one.
func ApplyPHPHeader(o *spool.Origin, value string) {
	value = clean(value)
	if value == "" {
		return
	}
	o.PHPHeader = value
	uidStr, script, ok := strings.Cut(value, ":")
	uid, err := strconv.Atoi(strings.TrimSpace(uidStr))
	if !ok || err != nil || uid != o.UID {
		o.PHPUIDMismatch = true
		return
	}
	if o.ScriptSource == "" || o.ScriptSource == SourceParentCmdline {
		o.Script, o.ScriptSource = strings.TrimSpace(script), SourcePHPHeader
	}
}

// clean bounds an advisory value; control characters are kept (the spool
// format escapes them).
func clean(s string) string {
	if len(s) > maxField {
		s = s[:maxField]
	}
	return s
}

// UserName returns the name of uid in /etc/passwd, or "".
func UserName(uid int) string {
	name := ""
	passwdEntry(uid, 4, func(f []string) bool { name = f[0]; return true })
	return name
}

// passwdEntry calls use with the first n colon-separated fields of each
// line of /etc/passwd that is uid's entry (a named, non-NIS line with at
// least n fields), until use returns true.
func passwdEntry(uid, n int, use func(fields []string) bool) {
	f, err := open("/etc/passwd")
	if err != nil {
		return
	}
	defer f.Close()
	want := []byte(strconv.Itoa(uid))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Only uid's lines are split into strings.
		if !bytes.Equal(thirdField(sc.Bytes()), want) {
			continue
		}
		fields := strings.SplitN(sc.Text(), ":", n)
		if len(fields) == n && fields[2] == string(want) && fields[0] != "" && !strings.HasPrefix(fields[0], "+") && !strings.HasPrefix(fields[0], "-") && use(fields) {
			return
		}
	}
}

// thirdField returns the third colon-separated field of line (nil when
// it has fewer than three).
func thirdField(line []byte) []byte {
	for i := 0; i < 2; i++ {
		j := bytes.IndexByte(line, ':')
		if j < 0 {
			return nil
		}
		line = line[j+1:]
	}
	if j := bytes.IndexByte(line, ':'); j >= 0 {
		return line[:j]
	}
	return line
}

// Process is an ancestor of sendmail as /proc describes it.
type Process struct {
	PID     int
	PPID    int
	UID     int // real UID; -1 when neither the pidfd (Procs) nor /proc/PID/status gave it
	GID     int // real GID; -1 when neither the pidfd (Procs) nor /proc/PID/status gave it
	Comm    string
	Cmdline []string
	Exe     string // "" when unreadable
	Cwd     string // "" when unreadable
}

// shells are the programs whose "sh -c '...'" wrappers are skipped on the
// way up to the real caller (PHP's mail(), PHPMailer, Symfony and git all
// run sendmail through one).
var shells = map[string]bool{"sh": true, "dash": true, "bash": true, "ash": true, "zsh": true, "ksh": true, "mksh": true, "busybox": true}

// FindParent returns the process pid, or, when it is a shell running
// "-c", the nearest ancestor of the same user that is not: the real caller.
func FindParent(pid int) Process {
	p := readProcess(pid)
	for depth := 0; depth < 8 && isShellWrapper(p) && p.PPID > 1; depth++ {
		q := readProcess(p.PPID)
		if q.Comm == "" || q.UID != p.UID {
			break // a shell started by another user is the caller we can name
		}
		p = q
	}
	if p.PID > 0 {
		p.Exe, p.Cwd = readLinks(p.PID)
	}
	return p
}

// record puts p into o as the process that sent the message (sendmail's
// caller, the SMTP listener's client): its PID, executable, command line,
// working directory and kind, and the script it runs when no better
// source named one.
func (p Process) record(o *spool.Origin) {
	o.ParentPID = p.PID
	o.ParentExe = p.Exe
	// The values of password options are not recorded (secrets.go).
	o.ParentCmdline = Process{Cmdline: maskArgs(p.Cmdline, p.Exe)}.CmdlineString()
	o.ParentCwd = p.Cwd
	o.Caller = p.Kind()
	if o.Script == "" {
		if s := p.Script(); s != "" {
			o.Script, o.ScriptSource = s, SourceParentCmdline
		}
	}
}

func isShellWrapper(p Process) bool {
	if !shells[p.Comm] {
		return false
	}
	for _, a := range p.Cmdline[min(1, len(p.Cmdline)):] {
		if a == "-c" || strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.Contains(a, "c") {
			return true
		}
	}
	return false
}

func readProcess(pid int) Process {
	p := Process{PID: pid, UID: -1, GID: -1}
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	withFile(dir+"status", 0, func(b []byte, _ bool) { p.parseStatus(b) })
	withFile(dir+"cmdline", maxCmdline, p.parseCmdline)
	return p
}

// parseCmdline records the arguments of b, the content of
// /proc/PID/cmdline (its first maxCmdline bytes unless whole).
func (p *Process) parseCmdline(b []byte, whole bool) {
	if !whole {
		// The argument the bound cut is left out.
		b = b[:bytes.LastIndexByte(b, 0)+1]
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return
	}
	// One string for all the arguments, each a part of it, and the list
	// made at its size: two allocations, not one per argument (relayd's
	// listener reads a client's command line at every connection). What
	// is kept of it past the reading (Script) is cloned.
	all := string(b)
	p.Cmdline = make([]string, 0, bytes.Count(b, []byte{0})+1)
	for {
		a, rest, more := strings.Cut(all, "\x00")
		p.Cmdline = append(p.Cmdline, a)
		if !more {
			return
		}
		all = rest
	}
}

// parseStatus records the name, parent, real UID and real GID that b, the
// content of /proc/PID/status, gives.
func (p *Process) parseStatus(b []byte) {
	for len(b) > 0 {
		var l []byte
		l, b, _ = bytes.Cut(b, []byte{'\n'})
		k, v, _ := bytes.Cut(l, []byte(":\t"))
		switch string(k) {
		case "Name":
			p.Comm = string(v)
		case "PPid":
			p.PPID, _ = strconv.Atoi(string(v))
		case "Uid":
			if u, err := strconv.Atoi(string(firstField(v))); err == nil {
				p.UID = u
			}
		case "Gid":
			if g, err := strconv.Atoi(string(firstField(v))); err == nil {
				p.GID = g
			}
		}
	}
}

// parseComm records the name that b, the content of /proc/PID/comm,
// gives, in the form of status's Name line (a backslash and a newline
// escaped), so that both sources record the same name.
func (p *Process) parseComm(b []byte) {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	if bytes.IndexAny(b, "\\\n") < 0 {
		p.Comm = string(b)
		return
	}
	p.Comm = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(string(b))
}

// maxCmdline bounds the part of /proc/PID/cmdline that is read: what is
// taken from a command line (the program, the first argument that is not
// an option, the whole cut to maxField) is at its start, and a caller's
// command line can be megabytes, which relayd's listener would otherwise
// read and split at every connection of that caller.
const maxCmdline = 64 << 10

// firstField is the first of the tab- or space-separated fields of v.
func firstField(v []byte) []byte {
	v = bytes.TrimLeft(v, " \t")
	if i := bytes.IndexAny(v, " \t"); i >= 0 {
		return v[:i]
	}
	return v
}

// readLinks reads /proc/PID/exe and cwd (or returns those
// PrefetchParentLinks read, for that PID).
//
// A setgid process cannot read them: the kernel's ptrace access check
// compares the caller's fs gid with the target's gids, and sendmail's fs
// gid is mailshim-drop. Only the fs gid is switched, to the real gid
// (setfsgid(2) is per thread, and allowed for the real gid), only on the
// calling goroutine's thread, and only while the goroutine is locked to
// it: no other goroutine runs on a locked thread, and the thread is
// unlocked only once its fs gid is back to the effective gid, checked.
// The effective and saved gids are never touched. The switch lowers what
// the thread may open to the caller's own rights, so a failure in it can
// make a read (or the later spool write) fail, never grant more: should
// the fs gid not read back as the effective gid, the goroutine stays
// locked to its thread for good, so that nothing else ever runs there,
// and the spool write that follows fails for want of the group.
// Switching back on the calling thread, rather than reading on a new
// thread that exits still locked, saves a thread creation and destruction
// at every call.
func readLinks(pid int) (exe, cwd string) {
	if pid > 0 && pid == prefetched.pid {
		return prefetched.exe, prefetched.cwd
	}
	// (The gids are asked once here and handed on: relayd's listener
	// reads a client's links at every connection.)
	rgid, egid := unix.Getgid(), unix.Getegid()
	if rgid == egid {
		exe, cwd, _ = linksAs(pid, rgid, egid)
		return
	}
	runtime.LockOSThread()
	exe, cwd, restored := linksAs(pid, rgid, egid)
	if restored {
		runtime.UnlockOSThread()
	}
	return
}

// links reads /proc/PID/exe and cwd with the fs gid of the calling thread
// switched to the real gid when it differs from the effective one (see
// readLinks), and reports whether the fs gid is the effective gid again.
// The calling goroutine must be locked to its thread.
func links(pid int) (exe, cwd string, restored bool) {
	return linksAs(pid, unix.Getgid(), unix.Getegid())
}

// linksAs is links for a process whose real and effective gids are rgid
// and egid.
func linksAs(pid, rgid, egid int) (exe, cwd string, restored bool) {
	read := func() {
		dir := "/proc/" + strconv.Itoa(pid) + "/"
		exe, _ = os.Readlink(dir + "exe")
		cwd, _ = os.Readlink(dir + "cwd")
		exe, cwd = clean(exe), clean(cwd)
	}
	if egid == rgid {
		read()
		return exe, cwd, true
	}
	// setfsgid(2) returns the previous fs gid and never fails; asked for
	// an invalid gid (-1) it changes nothing, so it reads the fs gid.
	unix.Setfsgid(rgid)
	if fs, _ := unix.SetfsgidRetGid(-1); fs == rgid {
		read()
	}
	unix.Setfsgid(egid)
	fs, _ := unix.SetfsgidRetGid(-1)
	return exe, cwd, fs == egid
}

// prefetched are the links of this process's parent, read by
// PrefetchParentLinks.
var prefetched struct {
	pid      int
	exe, cwd string
}

// PrefetchParentLinks reads the exe and cwd links of this process's
// parent now, for FindParent (sendmail's caller is its parent unless a
// shell wrapper stands between them). It must be called from a package
// initialiser: the Go runtime runs those on the main goroutine locked to
// the main thread, so the fs gid switch needs no runtime.LockOSThread,
// whose first call starts the runtime's template thread (a thread
// created at every sendmail call and torn down at its exit: ~60 µs of
// CPU and five page faults, measured). readlink(2) opens no descriptor,
// so this is safe before main has checked fds 0-2. Should the fs gid
// not read back as the effective gid, the goroutine is locked to the
// thread for good, as readLinks leaves it.
func PrefetchParentLinks() {
	pid := os.Getppid()
	exe, cwd, restored := links(pid)
	if !restored {
		runtime.LockOSThread()
	}
	prefetched.pid, prefetched.exe, prefetched.cwd = pid, exe, cwd
}

// CmdlineString returns the command line, arguments separated by spaces
// and quoted shell-style when they need it, bounded in length.
func (p Process) CmdlineString() string {
	var b strings.Builder
	for i, a := range p.Cmdline {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
		if b.Len() > maxField {
			break
		}
	}
	return clean(b.String())
}

// Kind names the kind of caller: "cron", "php-fpm", "php", "git",
// "mailx", "python", "perl", "ruby", "sudo", or "".
func (p Process) Kind() string {
	names := []string{p.Comm, filepath.Base(p.Exe)}
	if len(p.Cmdline) > 0 {
		names = append(names, filepath.Base(p.Cmdline[0]))
	}
	for _, n := range names {
		n = strings.ToLower(n)
		switch {
		case n == "cron" || n == "crond" || n == "anacron" || n == "systemd-cron":
			return "cron"
		case strings.HasPrefix(n, "php-fpm"):
			return "php-fpm"
		case strings.HasPrefix(n, "php"):
			return "php"
		case strings.HasPrefix(n, "git"):
			return "git"
		case n == "mail" || n == "mailx" || n == "bsd-mailx" || n == "s-nail" || n == "heirloom-mailx" || strings.HasPrefix(n, "bsd-mailx") || n == "mutt" || n == "neomutt":
			return "mailx"
		case strings.HasPrefix(n, "python"):
			return "python"
		case n == "perl":
			return "perl"
		case n == "ruby" || strings.HasPrefix(n, "ruby") && isVersion(n[len("ruby"):]):
			return "ruby"
		case n == "sudo":
			return "sudo"
		}
	}
	return ""
}

// interpreterOptions says, per interpreter, how the options before its
// script are read. Single-letter options may be clustered ("perl -lne
// code", "ruby -we code", "python3 -uc code"): each letter is read in
// turn until one takes a value.
type interpreterOptions struct {
	value  string   // the value is the rest of the argument, or else the next one
	inline string   // as value, and the value is the program itself: no script
	script string   // as value, and the value is the script (php -f)
	chdir  string   // as value, and the script is found from that directory (ruby -C)
	rest   string   // an optional value, only the rest of the argument (perl -Mmod, -i.bak)
	digits string   // optional digits follow, then more letters (perl -l, -0)
	long   []string // long options whose value is the next argument; "--name=c" is option -c
}

// interpreters is a table, not a map: a package-level map is built when
// the program starts, and sendmail (which links this package) keeps its
// start-up allocations within a budget (TestInitBudget); a table of
// constants is laid out by the linker.
var interpreters = [...]struct {
	kind string
	opts interpreterOptions
}{
	{"php", interpreterOptions{value: "cdztSBE", inline: "rR", script: "fF", long: []string{"--php-ini=c", "--define=d", "--zend-extension=z", "--docroot=t", "--server=S", "--process-begin=B", "--process-end=E", "--run=r", "--process-code=R", "--file=f", "--process-file=F"}}},
	{"python", interpreterOptions{value: "WX", inline: "cm", long: []string{"--check-hash-based-pycs"}}}, // -m: the program is a module
	{"perl", interpreterOptions{value: "I", inline: "eE", rest: "CdDFiMmVx", digits: "l0"}},
	{"ruby", interpreterOptions{value: "EIr", inline: "e", chdir: "CX", rest: "FiKTWx", digits: "0", long: []string{"--enable", "--disable", "--encoding=E", "--external-encoding", "--internal-encoding", "--dump", "--backtrace-limit"}}},
}

// interpreter returns how the options of an interpreter of kind are read
// (interpreters); ok is false for other kinds.
func interpreter(kind string) (opts *interpreterOptions, ok bool) {
	for i := range interpreters {
		if interpreters[i].kind == kind {
			return &interpreters[i].opts, true
		}
	}
	return nil, false
}

// longOption reports whether a is one of o's long options (o.long),
// and the letter of the option it is ("" when none).
func (o *interpreterOptions) longOption(a string) (short string, ok bool) {
	for _, l := range o.long {
		if name, c, _ := strings.Cut(l, "="); name == a {
			return c, true
		}
	}
	return "", false
}

// isVersion reports whether s is empty or a version number ("3.1"), as
// in an interpreter's name ("ruby3.1").
func isVersion(s string) bool {
	for _, c := range s {
		if c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// shellOptions is how a shell's options before its script are read
// (sh, dash, bash, ksh, zsh): -c brings the program, -s reads it from
// standard input, -o and -O take a value, "+o" is an option too.
var shellOptions = interpreterOptions{value: "oO", inline: "cs", long: []string{"--rcfile", "--init-file"}}

// isShell reports whether p is a shell running a script or a command: the
// program it was started as or its executable is one of shells (not
// busybox itself, whose first argument is the applet).
func (p Process) isShell() bool {
	if len(p.Cmdline) > 0 && shells[strings.TrimPrefix(filepath.Base(p.Cmdline[0]), "-")] && filepath.Base(p.Cmdline[0]) != "busybox" {
		return true
	}
	return p.Exe != "" && shells[filepath.Base(p.Exe)] && filepath.Base(p.Exe) != "busybox"
}

// Script returns the script a PHP, Python, Perl or Ruby interpreter or a
// shell was started with (its first argument that is not an option or an
// option's value), made absolute with its working directory when known
// (Ruby's -C directory first); "" for other callers, and when the program
// came from -r/-R/-c/-m/-e/-E/-s or standard input instead of a file.
func (p Process) Script() string {
	kind := p.Kind()
	opts, ok := interpreter(kind)
	shell := false
	if !ok && kind == "" && p.isShell() {
		opts, ok, shell = &shellOptions, true, true
	}
	if !ok {
		return ""
	}
	args := p.Cmdline[min(1, len(p.Cmdline)):]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if shell && len(a) > 1 && a[0] == '+' {
			a = "-" + a[1:] // set +o name, +e: an option as its "-" form
		}
		if shell && a == "-" {
			a = "--" // sh - file: "-" ends a shell's options (#!/bin/sh -)
		}
		switch {
		case a == "--":
			if i+1 < len(args) {
				return p.abs(args[i+1])
			}
			return ""
		case a == "-":
			return "" // the program is read from standard input
		case strings.HasPrefix(a, "--"):
			name, v, attached := strings.Cut(a, "=")
			short, ok := opts.longOption(name)
			switch {
			case !ok:
				continue // an option without a value
			case short == "":
				if !attached {
					i++ // skip the value
				}
				continue
			case attached:
				// Read as its letter with the value attached after
				// "=" (only php's and ruby -E's: php's "-f=x" is "x").
				a = "-" + short + "=" + v
			default:
				a = "-" + short // its value the next argument
			}
			fallthrough
		case strings.HasPrefix(a, "-"):
			// A cluster of letters, up to the first that takes a value.
		letters:
			for j := 1; j < len(a); j++ {
				c := a[j]
				switch {
				case strings.IndexByte(opts.value+opts.inline+opts.script+opts.chdir, c) >= 0:
					v := a[j+1:]
					attached := v != ""
					if kind == "php" {
						// php -d=x=1; "-d=" is an empty value, not
						// the next argument (php_getopt).
						v = strings.TrimPrefix(v, "=")
					}
					if !attached && i+1 < len(args) {
						i++
						v = args[i]
					}
					switch {
					case strings.IndexByte(opts.inline, c) >= 0:
						return "" // inline code
					case strings.IndexByte(opts.script, c) >= 0:
						if v == "" {
							return ""
						}
						return p.abs(v)
					case strings.IndexByte(opts.chdir, c) >= 0 && v != "":
						// ruby -C dir script: the script is found from dir.
						p.Cwd = p.abs(v)
					}
					break letters
				case strings.IndexByte(opts.rest, c) >= 0:
					break letters
				case strings.IndexByte(opts.digits, c) >= 0:
					if c == '0' && j+1 < len(a) && (a[j+1] == 'x' || a[j+1] == 'X') {
						j++ // perl -0xHHH
						for j+1 < len(a) && strings.IndexByte("0123456789abcdefABCDEF", a[j+1]) >= 0 {
							j++
						}
					}
					for j+1 < len(a) && '0' <= a[j+1] && a[j+1] <= '7' {
						j++
					}
				}
			}
		case a == "":
		default:
			return p.abs(a)
		}
	}
	return ""
}

func (p Process) abs(path string) string {
	if !filepath.IsAbs(path) && p.Cwd != "" {
		return clean(filepath.Join(p.Cwd, path))
	}
	// A copy: path is a part of the whole command line (parseCmdline),
	// which would otherwise be kept with it.
	return strings.Clone(clean(path))
}

// Cgroup returns the systemd unit or scope named in a /proc/PID/cgroup
// file: the last path element of the unified (or name=systemd) hierarchy
// that ends in ".service" or ".scope", e.g. "php8.2-fpm.service"; "" when
// none does.
func Cgroup(path string) string {
	var unit string
	withFile(path, 0, func(b []byte, _ bool) { unit = cgroupUnit(b) })
	return unit
}

// cgroupUnit is Cgroup of b, the content of a /proc/PID/cgroup file.
func cgroupUnit(b []byte) string {
	unit, _ := cgroupUnits(b)
	return unit
}

// cgroupUnits is cgroupUnit of b, and whether the unified hierarchy's
// line named it (then it is the unit whatever the other lines say).
func cgroupUnits(b []byte) (unit string, unified bool) {
	var best string
	for len(b) > 0 {
		var l []byte
		l, b, _ = bytes.Cut(b, []byte{'\n'})
		id, rest, ok1 := bytes.Cut(l, []byte{':'})
		ctl, cpath, ok2 := bytes.Cut(rest, []byte{':'})
		if !ok1 || !ok2 || !(string(id) == "0" && len(ctl) == 0 || string(ctl) == "name=systemd") {
			continue
		}
		for len(cpath) > 0 {
			elem := cpath
			if i := bytes.LastIndexByte(cpath, '/'); i >= 0 {
				elem, cpath = cpath[i+1:], cpath[:i]
			} else {
				cpath = nil
			}
			if bytes.HasSuffix(elem, []byte(".service")) || bytes.HasSuffix(elem, []byte(".scope")) {
				if len(ctl) == 0 || best == "" {
					best = string(elem)
				}
				unified = unified || len(ctl) == 0
				break
			}
		}
	}
	return clean(best), unified
}

// MaxIgnored bounds the ignored options recorded for one message.
const MaxIgnored = 32

// Sanitize bounds and re-checks the advisory fields of o against o.UID,
// for an origin record that a client of the submission socket wrote
// (sendmail applies it to its own record too, so that both doors store
// the same shapes): every string is cut to 1024 bytes, at most MaxIgnored
// ignored options are kept, an unknown Mode or ScriptSource is dropped
// (with the script it named), and PHP's X-PHP-Originating-Script value is
// checked again against o.UID — a mismatch is recorded and its script not
// believed, whatever the client claimed.
func Sanitize(o *spool.Origin) {
	for _, p := range []*string{&o.User, &o.Via, &o.Mode, &o.Script, &o.ScriptSource, &o.PHPHeader,
		&o.ParentExe, &o.ParentCmdline, &o.ParentCwd, &o.Cgroup, &o.Caller, &o.Client, &o.Helo, &o.AuthUser} {
		*p = clean(*p)
	}
	switch o.Mode {
	case "", "bm", "t", "bs":
	default:
		o.Mode = ""
	}
	switch o.ScriptSource {
	case SourceScriptFilename, SourceMailshimScript, SourcePHPHeader, SourceParentCmdline:
	default:
		o.Script, o.ScriptSource = "", ""
	}
	o.PHPUIDMismatch = false
	if o.PHPHeader != "" {
		uidStr, _, ok := strings.Cut(o.PHPHeader, ":")
		uid, err := strconv.Atoi(strings.TrimSpace(uidStr))
		o.PHPUIDMismatch = !ok || err != nil || uid != o.UID
	}
	if o.ScriptSource == SourcePHPHeader && (o.PHPHeader == "" || o.PHPUIDMismatch) {
		o.Script, o.ScriptSource = "", ""
	}
	if o.ParentPID < 0 {
		o.ParentPID = 0
	}
	if len(o.Ignored) > MaxIgnored {
		o.Ignored = o.Ignored[:MaxIgnored]
	}
	for i := range o.Ignored {
		o.Ignored[i] = clean(o.Ignored[i])
	}
}

// ApplyProcess records in o the process pid as the client of a
// connection (the SMTP listener: the process that holds the client's
// socket): its PID, executable, command line, working directory, systemd
// unit (Cgroup), kind (Caller) and, for an interpreter, the script it
// runs. The fields are the ones sendmail fills with its parent process,
// and as advisory. Reading another user's exe and cwd needs the ptrace
// access check to pass (CAP_SYS_PTRACE, see sockdiag.WithScanCaps); what
// cannot be read stays empty.
// It returns the process's real GID (-1 when unknown).
func ApplyProcess(o *spool.Origin, pid int) (gid int) {
	p := readProcess(pid)
	if p.Comm == "" && len(p.Cmdline) == 0 {
		return -1
	}
	p.Exe, p.Cwd = readLinks(pid)
	p.record(o)
	o.Cgroup = Cgroup("/proc/" + strconv.Itoa(pid) + "/cgroup")
	return p.GID
}

// ApplyProcessOf is ApplyProcess for a process that counts only if it
// is uid's (its real UID, from the same reading of /proc/PID/status):
// ok is false, and o unchanged, when it is gone or another user's.
func ApplyProcessOf(o *spool.Origin, pid, uid int) (gid int, ok bool) {
	p := readProcess(pid)
	if p.Comm == "" && len(p.Cmdline) == 0 || p.UID != uid {
		return -1, false
	}
	p.Exe, p.Cwd = readLinks(pid)
	p.record(o)
	o.Cgroup = Cgroup("/proc/" + strconv.Itoa(pid) + "/cgroup")
	return p.GID, true
}

// PrimaryGID returns the primary group of uid in /etc/passwd, or -1.
func PrimaryGID(uid int) int {
	gid := -1
	passwdEntry(uid, 5, func(f []string) bool {
		g, err := strconv.Atoi(f[3])
		if err != nil || g < 0 {
			return false
		}
		gid = g
		return true
	})
	return gid
}

// open opens path for reading. Not os.Open, which tries to add every file
// to the network poller (five more system calls for each, and the
// poller's set-up), nor os.NewFile, which asks for the descriptor's flags
// and sets a finalizer: sendmail reads these small files once each, at
// every call.
func open(path string) (fileReader, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fileReader(fd), nil
}

// fileReader is an open file descriptor read with read(2).
type fileReader int

func (f fileReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(int(f), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f fileReader) Close() error { return unix.Close(int(f)) }

// withFile calls use with the content of the file at path, read through
// open into a buffer of 4 KB to start with (/proc/PID/status and cgroup
// fit, and the kernel generates them in one read): the whole file
// (whole), or its first limit bytes when it has more or may have (no
// limit when 0). It is for the /proc files of a process only: the kernel
// answers a read of status, cgroup (seq_file) or cmdline with all it has
// up to the buffer's size, so a read that leaves room in the buffer is
// the end, and the read that would return 0 is not made (a system call
// less per file). The buffer is reused once use returns (relayd's
// listener reads three such files per connection): use must not keep b.
// A file that cannot be read is not passed to use.
func withFile(path string, limit int, use func(b []byte, whole bool)) error {
	f, err := open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return readWith(func(p []byte, _ int) (int, error) { return f.Read(p) }, limit, use)
}

// readWith is withFile's reading: read(p, off) reads the file's bytes
// from off (a reader of its own, or pread(2) on a descriptor kept open)
// into p.
func readWith(read func(p []byte, off int) (int, error), limit int, use func(b []byte, whole bool)) error {
	bp := fileBufs.Get().(*[]byte)
	defer fileBufs.Put(bp)
	b := (*bp)[:0]
	for {
		if limit > 0 && len(b) >= limit {
			use(b, false)
			return nil
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
			*bp = b[:0]
		}
		end := cap(b)
		if limit > 0 {
			end = min(end, limit)
		}
		n, err := read(b[len(b):end], len(b))
		b = b[:len(b)+n]
		if err == io.EOF || err == nil && n > 0 && len(b) < end {
			use(b, true)
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// fileBufs are withFile's buffers.
var fileBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 4<<10)
	return &b
}}
