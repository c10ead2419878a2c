package origin

import (
	"path/filepath"
	"strings"
)

// Redacted replaces a password in a recorded command line.
const Redacted = "[redacted]"

// A password given on a command line (swaks -ap, mysql -p, curl -u
// user:pass, ...) is readable by every local user while the program runs
// (/proc/PID/cmdline), but a record keeps it for days: in the maildrop
// file, the queue, relayd's log, relayd queue show, backups of the spool.
// The values of the options below are replaced by Redacted before the
// command line is recorded (Process.record), when pickup queues a
// message (a maildrop file need not come from this sendmail), and when
// relayd queue show prints an older record. The option itself stays, so
// the record still says what ran. relayd(8) lists them.

// How a program-specific option's value is masked.
const (
	maskAll      = iota // the whole value
	maskAttached        // only a value attached to the option (mysql -pSECRET; -p alone prompts)
	maskColon           // after the first ':' (user:password)
	maskPercent         // after the first '%' (smbclient -U user%password)
	maskComma           // after the first ',' (lftp -u user,password)
)

// secretOpt says how the value of option opt of program prog (the base
// name of its argv[0] or of its executable) is masked, when it is a
// password or carries one. (Switches, not maps: sendmail's package
// initialisers have an allocation budget, cmd/sendmail TestInitBudget.)
func secretOpt(prog, opt string) (int, bool) {
	how := -1
	switch prog {
	case "sshpass":
		if opt == "-p" {
			how = maskAll
		}
	case "swaks":
		if opt == "-ap" || opt == "--ap" {
			how = maskAll
		}
	case "curl":
		switch opt {
		case "-u", "--user", "-U", "--proxy-user":
			how = maskColon
		}
	case "smbclient":
		if opt == "-U" || opt == "--user" {
			how = maskPercent
		}
	case "lftp":
		if opt == "-u" {
			how = maskComma
		}
	case "redis-cli":
		if opt == "-a" {
			how = maskAll
		}
	case "sendemail", "sendEmail":
		if opt == "-xp" {
			how = maskAll
		}
	case "sqlcmd":
		if opt == "-P" {
			how = maskAll
		}
	case "mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport":
		if opt == "-p" {
			how = maskAll
		}
	case "ldapsearch", "ldapmodify", "ldapadd", "ldapdelete", "ldapwhoami", "ldapcompare", "ldapmodrdn":
		if opt == "-w" {
			how = maskAll
		}
	case "ldappasswd":
		if opt == "-w" || opt == "-s" {
			how = maskAll
		}
	}
	return how, how >= 0
}

// mysqlLike reports the MySQL and MariaDB clients: -pSECRET (attached
// only: -p alone prompts).
func mysqlLike(prog string) bool {
	return strings.HasPrefix(prog, "mysql") || strings.HasPrefix(prog, "mariadb")
}

// secretWord reports whether a word of an option's or a variable's name
// says its value is a secret.
func secretWord(w string) bool {
	switch w {
	case "password", "passwd", "pass", "passphrase", "pwd", "pw", "secret", "token", "apikey", "passin", "passout":
		return true
	}
	// PGPASSWORD, DBPASSWORD, SMTPPASSWD: one word that ends in one.
	return strings.HasPrefix(w, "password") || strings.HasPrefix(w, "passwd") ||
		strings.HasSuffix(w, "password") || strings.HasSuffix(w, "passwd")
}

// secretName reports whether the name of a long option (without its
// dashes) or of a NAME=VALUE argument names a secret: one of its words
// (split at '-', '_' and '.') is secretWord, and it does not name where
// the secret is read from (a file, a descriptor, standard input, a
// command: --password-file, --passwordeval, --password-stdin) nor a
// switch (--no-password, --ask-password).
func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, suffix := range []string{"file", "stdin", "fd", "eval", "cmd", "command", "prompt"} {
		if strings.HasSuffix(n, suffix) {
			return false
		}
	}
	words := strings.FieldsFunc(n, func(r rune) bool { return r == '-' || r == '_' || r == '.' })
	if len(words) > 0 && (words[0] == "no" || words[0] == "ask") {
		return false
	}
	for i, w := range words {
		if secretWord(w) || w == "key" && i > 0 && words[i-1] == "api" {
			return true
		}
	}
	return false
}

// MaskArgs returns args (a command line, argv[0] first) with the values
// of well-known password options, and the password of a URL's
// user:password, replaced by Redacted; args itself when nothing is.
func MaskArgs(args []string) []string {
	return maskArgs(args, "")
}

func maskArgs(args []string, exe string) []string {
	if len(args) == 0 {
		return args
	}
	var out []string
	set := func(i int, v string) {
		if v == args[i] {
			return
		}
		if out == nil {
			out = append([]string(nil), args...)
		}
		out[i] = v
	}
	progs := [2]string{filepath.Base(args[0]), ""}
	if exe != "" {
		progs[1] = filepath.Base(exe)
	}
	mysql := mysqlLike(progs[0]) || progs[1] != "" && mysqlLike(progs[1])
	opt := func(o string) (int, bool) {
		if how, ok := secretOpt(progs[0], o); ok {
			return how, true
		}
		return secretOpt(progs[1], o)
	}
	positional := false // after "--": arguments, not options
	// A shell's -c command ("/bin/sh -c LINE", a cron job): its words are
	// masked as a command line of their own (maskShellCommand).
	shell, shellCmd := Process{Cmdline: args, Exe: exe}.isShell(), false
	for i := 1; i < len(args); i++ {
		a := args[i]
		set(i, maskURL(a))
		if shell && !positional {
			if shellCmd && !strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "+") {
				set(i, maskShellCommand(maskURL(a)))
				shellCmd, shell = false, false // then $0, $1, ...
				continue
			}
			if len(a) > 1 && a[0] == '-' && a[1] != '-' && strings.IndexByte(a, 'c') > 0 {
				shellCmd = true
			}
		}
		if a == "--" {
			positional = true
		}
		if positional {
			continue
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			// NAME=VALUE (env(1), make, a variable given to a script).
			if name, v, ok := strings.Cut(a, "="); ok && v != "" && !strings.ContainsAny(name, "/:@ ") && secretName(name) {
				set(i, name+"="+Redacted)
			}
			continue
		}
		name, v, attached := strings.Cut(a, "=")
		if how, ok := opt(name); ok {
			switch {
			case attached:
				set(i, name+"="+maskValue(v, how))
			case how != maskAttached && i+1 < len(args):
				i++
				set(i, maskValue(args[i], how))
			}
			continue
		}
		if !strings.HasPrefix(a, "--") {
			// -pSECRET: a value attached to a program's letter.
			if mysql && strings.HasPrefix(a, "-p") && len(a) > 2 {
				set(i, "-p"+Redacted)
				continue
			}
			if how, ok := opt(a[:2]); ok && len(a) > 2 {
				set(i, a[:2]+maskValue(a[2:], how))
				continue
			}
		}
		// --password=SECRET, --auth-password SECRET, -Dsome.password=SECRET,
		// -passin pass:SECRET.
		bare := strings.TrimLeft(name, "-")
		if len(bare) < 2 || !secretName(bare) {
			continue
		}
		if mysql && !attached && (bare == "password" || bare == "pass") {
			continue // MySQL's --password without its value prompts for it
		}
		switch {
		case attached:
			set(i, name+"="+Redacted)
		case i+1 < len(args):
			i++
			set(i, Redacted)
		}
	}
	if out == nil {
		return args
	}
	return out
}

// maskShellCommand returns cmd, a shell's command ("mysqldump -pX shop |
// gzip; curl -u alice:X ..."), with each of its simple commands masked as
// maskArgs masks a command line: the words of one are split at blanks,
// kept whole within quotes, and end at a shell operator (newline ; & | ( )
// ` { }); the first that is not an assignment (NAME=VALUE) names the
// program. Only the words that change are replaced; cmd itself is
// returned when none does.
func maskShellCommand(cmd string) string {
	var b strings.Builder
	copied := 0        // cmd[:copied] is in b
	var words [][2]int // the current simple command's words (spans in cmd)
	var args []string
	command := func() {
		if len(words) == 0 {
			return
		}
		prog := ""
		for _, w := range words {
			if v := cmd[w[0]:w[1]]; !strings.Contains(v, "=") || strings.HasPrefix(v, "-") {
				prog = v
				break
			}
		}
		args = append(args[:0], prog)
		for _, w := range words {
			args = append(args, cmd[w[0]:w[1]])
		}
		masked := maskArgs(args, "")
		for j, w := range words {
			if v, m := args[j+1], masked[j+1]; m != v {
				b.WriteString(cmd[copied:w[0]])
				b.WriteString(m)
				if q := v[len(v)-1]; (q == '\'' || q == '"') && v[0] == q && m[0] == q && m[len(m)-1] != q {
					b.WriteByte(q) // the closing quote of 'user:[redacted]'
				}
				copied = w[1]
			}
		}
		words = words[:0]
	}
	start := -1 // the start of the current word, -1 between words
	word := func(end int) {
		if start >= 0 {
			words = append(words, [2]int{start, end})
			start = -1
		}
	}
	var quote byte
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case quote == '"':
			if c == '\\' {
				i++
			} else if c == '"' {
				quote = 0
			}
		case c == ' ' || c == '\t':
			word(i)
		case strings.IndexByte("\n;&|()`{}", c) >= 0:
			word(i)
			command()
		default:
			if start < 0 {
				start = i
			}
			switch c {
			case '\\':
				i++
			case '\'', '"':
				quote = c
			}
		}
	}
	word(len(cmd))
	command()
	if copied == 0 {
		return cmd
	}
	b.WriteString(cmd[copied:])
	return b.String()
}

// maskValue masks v as how says.
func maskValue(v string, how int) string {
	sep := ""
	switch how {
	case maskColon:
		sep = ":"
	case maskPercent:
		sep = "%"
	case maskComma:
		sep = ","
	}
	if sep == "" {
		return Redacted
	}
	user, _, ok := strings.Cut(v, sep)
	if !ok {
		return v // a user name alone: the program asks for the password
	}
	return user + sep + Redacted
}

// maskURL masks the password of every scheme://user:password@host in a.
func maskURL(a string) string {
	if !strings.Contains(a, "://") {
		return a
	}
	var b strings.Builder
	rest := a
	for {
		i := strings.Index(rest, "://")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i+3])
		rest = rest[i+3:]
		end := strings.IndexAny(rest, "/?# \t")
		if end < 0 {
			end = len(rest)
		}
		auth := rest[:end]
		at := strings.LastIndexByte(auth, '@')
		if at < 0 {
			continue
		}
		user, _, ok := strings.Cut(auth[:at], ":")
		if !ok {
			continue
		}
		b.WriteString(user + ":" + Redacted)
		rest = rest[at:]
	}
	return b.String()
}

// MaskCmdline masks the passwords (MaskArgs) in a command line as
// recorded (Process.CmdlineString: arguments separated by spaces, quoted
// shell-style when they need it); s itself when there are none.
func MaskCmdline(s string) string {
	if s == "" || !strings.ContainsAny(s, "-=:") {
		return s
	}
	args := splitCmdline(s)
	masked := MaskArgs(args)
	if len(masked) == 0 || &masked[0] == &args[0] {
		return s
	}
	return Process{Cmdline: masked}.CmdlineString()
}

// splitCmdline undoes CmdlineString's quoting: words separated by
// spaces, '...' quoted, '\” a quote.
func splitCmdline(s string) []string {
	var out []string
	var b strings.Builder
	word, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\'':
			quoted = false
		case quoted:
			b.WriteByte(c)
		case c == '\'':
			quoted, word = true, true
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			word = true
		case c == ' ':
			if word {
				out = append(out, b.String())
				b.Reset()
				word = false
			}
		default:
			b.WriteByte(c)
			word = true
		}
	}
	if word {
		out = append(out, b.String())
	}
	return out
}
