package doctor

import (
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailshim/mailshim/packaging"
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/control"
	"github.com/mailshim/mailshim/pkg/spool"
)

// LocalOptions are the settings of the local checks.
type LocalOptions struct {
	// Config is the loaded configuration (secrets loaded too).
	Config *config.Config
	// Owner is relayd's user and groups for the spool (as check-config
	// computes it).
	Owner spool.Owner
	// Layout is checked when not nil (the packaged configuration only).
	Layout []packaging.Entry
	// Root is prepended to every packaged path ("" for /; tests).
	Root string
	// Sendmail is the sendmail to check (/usr/sbin/sendmail if "").
	Sendmail string
	// Timeout bounds the control socket request (DefaultTimeout if 0).
	Timeout time.Duration
	// Roots verify the listener's certificate (nil: the system's, as
	// PHP and Ruby use; tests).
	Roots *x509.CertPool
}

// Local check names, in order.
const (
	CConfig   = "config"
	CLayout   = "layout"
	CSendmail = "sendmail"
	CSpool    = "spool"
	CRelayd   = "relayd"
	CListen   = "listen"
	CSecrets  = "secrets"
	CHostname = "hostname"
)

// Local runs the checks of this machine. The configuration has parsed
// already (a configuration that does not is exit status 78, before any
// check).
func Local(ctx context.Context, o LocalOptions) []Check {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Sendmail == "" {
		o.Sendmail = "/usr/sbin/sendmail"
	}
	cfg := o.Config
	var out []Check
	src := cfg.Source
	if src == "" {
		src = "(defaults)"
	}
	out = append(out, Check{Name: CConfig, Status: OK, Saw: fmt.Sprintf("%s parses: %d upstream(s), spool %s, host name %s", src, len(cfg.Upstreams), cfg.Spool, cfg.Hostname)})
	out = append(out, checkLayout(o))
	running := checkRelayd(ctx, o)
	out = append(out, checkSendmail(o, running.Status == OK))
	out = append(out, checkSpool(o), running)
	out = append(out, checkListen(o))
	out = append(out, checkSecrets(o))
	out = append(out, checkHostname(cfg.Hostname))
	return out
}

func statOwner(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func lookupUID(name string) (int, bool) {
	if name == "root" {
		return 0, true
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, false
	}
	n, _ := strconv.Atoi(u.Uid)
	return n, true
}

func lookupGID(name string) (int, bool) {
	if name == "root" {
		return 0, true
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, false
	}
	n, _ := strconv.Atoi(g.Gid)
	return n, true
}

// checkLayout compares the installed paths that carry mail — the
// binaries and links, the configuration, the spool and the runtime
// directory — with packaging/layout.txt.
func checkLayout(o LocalOptions) Check {
	c := Check{Name: CLayout}
	if o.Layout == nil {
		c.Status, c.Saw = Skipped, "not the packaged configuration ("+config.DefaultPath+"): the package's paths are not this setup's"
		return c
	}
	var problems, fixes []string
	n := 0
	for _, e := range o.Layout {
		switch e.Type {
		case "f", "c", "l", "d", "r":
		default:
			continue // man pages
		}
		if strings.HasPrefix(e.Source, "?") || strings.Contains(e.Path, "/share/") ||
			strings.Contains(e.Path, "/systemd/") || strings.Contains(e.Path, "sysusers.d") || strings.Contains(e.Path, "tmpfiles.d") {
			// Optional, or not on the mail's path: data under /usr/share,
			// systemd's files (absent where systemd is not PID 1).
			continue
		}
		n++
		p := filepath.Join(o.Root, e.Path)
		fi, err := os.Lstat(p)
		if err != nil {
			problems = append(problems, e.Path+": missing")
			fixes = append(fixes, "reinstall the mailshim package (apt-get install --reinstall mailshim)")
			continue
		}
		if e.Type == "l" {
			t, err := os.Readlink(p)
			if err != nil || t != e.Source {
				problems = append(problems, fmt.Sprintf("%s: not a link to %s", e.Path, e.Source))
				fixes = append(fixes, fmt.Sprintf("ln -sf %s %s", e.Source, e.Path))
			}
			continue
		}
		isDir := e.Type == "d" || e.Type == "r"
		if fi.IsDir() != isDir || fi.Mode()&os.ModeSymlink != 0 {
			problems = append(problems, e.Path+": wrong type ("+fi.Mode().Type().String()+")")
			fixes = append(fixes, "reinstall the mailshim package")
			continue
		}
		uid, gid := statOwner(fi)
		wu, uok := lookupUID(e.Owner)
		wg, gok := lookupGID(e.Group)
		if !uok || !gok {
			problems = append(problems, fmt.Sprintf("%s: user %s or group %s does not exist", e.Path, e.Owner, e.Group))
			fixes = append(fixes, "reinstall the mailshim package (it creates them)")
			continue
		}
		mode := spool.ModeString(fi.Mode())
		okMode := mode == e.Mode
		if e.Type == "c" {
			// An administrator may tighten the configuration's mode.
			okMode = fi.Mode().Perm()&0o022 == 0 && uid == 0
		}
		if uid != wu || (gid != wg && e.Type != "c") || !okMode {
			problems = append(problems, fmt.Sprintf("%s: %d:%d %s, want %s:%s %s", e.Path, uid, gid, mode, e.Owner, e.Group, e.Mode))
			fixes = append(fixes, fmt.Sprintf("chown %s:%s %s && chmod %s %s", e.Owner, e.Group, e.Path, e.Mode, e.Path))
		}
	}
	if len(problems) > 0 {
		c.Status = Fail
		c.Saw = strings.Join(problems, "; ")
		c.Cause = "installed paths differ from the package's layout (packaging/layout.txt)"
		c.Fix = strings.Join(fixes, "; ")
		return c
	}
	c.Status, c.Saw = OK, fmt.Sprintf("%d installed paths have the owners and modes of the package's layout", n)
	return c
}

// checkSendmail: the sendmail is mailshim's, setgid to mailshim-drop; or
// else the submission socket it falls back to is there.
func checkSendmail(o LocalOptions, relaydUp bool) Check {
	c := Check{Name: CSendmail}
	p := filepath.Join(o.Root, o.Sendmail)
	fi, err := os.Stat(p)
	if err != nil {
		c.Status, c.Saw = Fail, o.Sendmail+": "+errText(err)
		c.Cause = "there is no sendmail: programs that send mail (PHP mail(), cron) cannot reach mailshim"
		c.Fix = "reinstall the mailshim package"
		return c
	}
	bi, err := buildinfo.ReadFile(p)
	if err != nil || bi.Path != "github.com/mailshim/mailshim/cmd/sendmail" {
		what := "not a Go program"
		if err == nil {
			what = bi.Path
		}
		c.Status, c.Saw = Fail, fmt.Sprintf("%s is not mailshim's sendmail (%s)", o.Sendmail, what)
		c.Cause = "another mail system's sendmail is installed: mail from PHP and cron does not go through mailshim"
		c.Fix = "remove the other MTA's package and reinstall mailshim (or point update-alternatives at mailshim's sendmail)"
		return c
	}
	_, gid := statOwner(fi)
	dropGID, _ := lookupGID(spool.DropGroup)
	saw := fmt.Sprintf("%s is mailshim's sendmail, mode %s", o.Sendmail, spool.ModeString(fi.Mode()))
	if fi.Mode()&os.ModeSetgid != 0 && gid == dropGID {
		c.Status, c.Saw = OK, saw+", setgid "+spool.DropGroup
		return c
	}
	sock := o.Config.SubmitSocket
	sfi, err := os.Stat(sock)
	if err == nil && sfi.Mode()&os.ModeSocket != 0 && relaydUp {
		c.Status = Warn
		c.Saw = saw + ", not setgid " + spool.DropGroup + "; it falls back to relayd's submission socket " + sock + ", which is there"
		c.Cause = "sendmail is not setgid: it submits through relayd's socket, so mail is refused while relayd is down"
		c.Fix = fmt.Sprintf("chown root:%s %s && chmod 2755 %s (unless a sandbox strips setgid on purpose)", spool.DropGroup, o.Sendmail, o.Sendmail)
		return c
	}
	c.Status = Fail
	c.Saw = saw + ", not setgid " + spool.DropGroup + ", and the submission socket " + sock + " does not answer"
	c.Cause = "sendmail can store mail neither in the maildrop (not setgid) nor through relayd's submission socket"
	c.Fix = fmt.Sprintf("chown root:%s %s && chmod 2755 %s, and start relayd", spool.DropGroup, o.Sendmail, o.Sendmail)
	return c
}

func checkSpool(o LocalOptions) Check {
	c := Check{Name: CSpool}
	root := o.Config.Spool
	if err := spool.Check(root, o.Owner); err != nil {
		var probs, fixes []string
		for _, e := range unjoin(err) {
			var le *spool.LayoutError
			if errors.As(e, &le) {
				probs = append(probs, le.Path+": "+le.Problem)
				if le.Fix != "" {
					fixes = append(fixes, le.Fix)
				}
			} else {
				probs = append(probs, e.Error())
			}
		}
		c.Status, c.Saw = Fail, strings.Join(probs, "; ")
		c.Cause = "the spool has unsafe or wrong owners or modes: relayd refuses to start on it"
		c.Fix = strings.Join(fixes, "; ")
		if c.Fix == "" {
			c.Fix = "fix the paths named above (relayd check-config says the same)"
		}
		return c
	}
	fi, err := os.Stat(filepath.Join(root, spool.DirMaildrop))
	if err != nil {
		c.Status, c.Saw = Warn, root+": no maildrop/ yet (relayd creates it at start)"
		return c
	}
	c.Status, c.Saw = OK, fmt.Sprintf("%s: owners and modes safe (maildrop/ %s)", root, spool.ModeString(fi.Mode()))
	if ns := spool.Attention(root, o.Owner); len(ns) > 0 {
		var probs, fixes []string
		for _, n := range ns {
			probs, fixes = append(probs, n.Problem), append(fixes, n.Fix)
		}
		c.Status, c.Saw = Warn, c.Saw+"; "+strings.Join(probs, "; ")
		c.Cause = "mail that relayd will not send until someone acts"
		c.Fix = strings.Join(fixes, "; ")
	}
	return c
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkRelayd asks relayd's control socket about a message that does not
// exist: any answer from relayd means it runs.
func checkRelayd(ctx context.Context, o LocalOptions) Check {
	c := Check{Name: CRelayd}
	sock := o.Config.ControlSocket
	done := make(chan error, 1)
	go func() { done <- control.Request(sock, control.VerbShow, []string{"doctor-probe"}, io.Discard) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(o.Timeout):
		c.Status, c.Saw = Fail, fmt.Sprintf("%s: no answer within %v", sock, o.Timeout)
		c.Cause, c.Fix = "relayd does not answer on its control socket (hung?)", "restart relayd (systemctl restart relayd) and read its log (journalctl -u relayd)"
		return c
	case <-ctx.Done():
		c.Status, c.Saw = Skipped, "interrupted"
		return c
	}
	switch {
	case errors.Is(err, control.ErrUnavailable):
		c.Status, c.Saw = Fail, sock+": "+errText(err)
		c.Cause = "relayd is not running: mail is stored in the spool but not sent"
		c.Fix = "start relayd (systemctl enable --now relayd) and read its log (journalctl -u relayd) if it stops"
	case errors.Is(err, control.ErrDenied):
		c.Status, c.Saw = Warn, sock+": relayd answers, but refuses doctor's user"
		c.Fix = "run relayd doctor as root or as the daemon user"
	default:
		c.Status, c.Saw = OK, "relayd answers on "+sock
	}
	return c
}

// checkSecrets: every secret file (password_file, the OAuth client secret
// and refresh token files, [trace] key_file) is a regular file owned by
// relayd's user, readable by it (its directories searchable) and by no one
// else.
func checkSecrets(o LocalOptions) Check {
	c := Check{Name: CSecrets}
	var seen, probs, fixes []string
	done := map[string]bool{}
	var files []string
	for _, up := range o.Config.Upstreams {
		files = append(files, up.PasswordFile, up.OAuthClientSecretFile, up.OAuthRefreshTokenFile)
	}
	files = append(files, o.Config.Trace.KeyFile)
	for _, f := range files {
		if f == "" || done[f] {
			continue
		}
		done[f] = true
		fi, err := os.Lstat(f)
		if err != nil {
			probs = append(probs, f+": "+errText(err))
			continue
		}
		uid, gid := statOwner(fi)
		perm := fi.Mode().Perm()
		switch {
		case !fi.Mode().IsRegular():
			probs = append(probs, f+": not a regular file")
			fixes = append(fixes, "make "+f+" a regular file (not a link)")
		case perm&0o077 != 0:
			probs = append(probs, fmt.Sprintf("%s: mode %04o lets group or others read it", f, perm))
			fixes = append(fixes, fmt.Sprintf("chmod 600 %s", f))
		case uid != o.Owner.UID:
			probs = append(probs, fmt.Sprintf("%s: owned by uid %d, not by relayd's uid %d: relayd cannot read it", f, uid, o.Owner.UID))
			fixes = append(fixes, fmt.Sprintf("chown %d %s", o.Owner.UID, f))
		case perm&0o400 == 0:
			probs = append(probs, fmt.Sprintf("%s: mode %04o: not readable by its owner", f, perm))
			fixes = append(fixes, fmt.Sprintf("chmod 600 %s", f))
		default:
			if d := unsearchable(filepath.Dir(f), o.Owner); d != "" {
				probs = append(probs, fmt.Sprintf("%s: relayd's user cannot reach it (directory %s)", f, d))
				fixes = append(fixes, "chmod o+x "+d)
				continue
			}
			seen = append(seen, fmt.Sprintf("%s (uid %d gid %d, %04o)", f, uid, gid, perm))
		}
	}
	if len(probs) > 0 {
		c.Status, c.Saw = Fail, strings.Join(probs, "; ")
		c.Cause = "a secret must be readable by relayd's user and by no one else (never by group " + spool.DropGroup + ", which every sendmail caller borrows)"
		c.Fix = strings.Join(fixes, "; ")
		return c
	}
	if len(seen) == 0 {
		c.Status, c.Saw = Skipped, "no secret file configured (password_file, oauth_client_secret_file, oauth_refresh_token_file, [trace] key_file)"
		return c
	}
	c.Status, c.Saw = OK, "readable by relayd's user only: "+strings.Join(seen, ", ")
	return c
}

// unsearchable returns the first directory on the way to dir that relayd's
// user may not search, or "".
func unsearchable(dir string, o spool.Owner) string {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return d
		}
		uid, gid := statOwner(fi)
		perm := fi.Mode().Perm()
		var ok bool
		switch {
		case o.UID == 0:
			ok = true
		case uid == o.UID:
			ok = perm&0o100 != 0
		case gid == o.GID || gid == o.DropGID:
			ok = perm&0o010 != 0
		default:
			ok = perm&0o001 != 0
		}
		if !ok {
			return d
		}
		if d == "/" || d == "." {
			return ""
		}
	}
}

// checkHostname: the name in EHLO, Message-ID and default senders must be
// fully qualified; upstreams refuse "need fully-qualified address".
func checkHostname(h string) Check {
	c := Check{Name: CHostname}
	bad := ""
	switch {
	case h == "":
		bad = "empty"
	case !strings.Contains(strings.Trim(h, "."), "."):
		bad = "not fully qualified (no domain)"
	case strings.EqualFold(h, "localhost.localdomain") || strings.HasSuffix(strings.ToLower(h), ".localdomain") || strings.HasSuffix(strings.ToLower(h), ".local"):
		bad = "a local-only name"
	case net.ParseIP(h) != nil:
		bad = "an IP address"
	}
	if bad != "" {
		c.Status, c.Saw = Fail, fmt.Sprintf("%q: %s", h, bad)
		c.Cause = "the host name is not a fully qualified domain name: it names us in EHLO and makes the default senders (user@host name), which upstreams refuse (\"need fully-qualified address\", sender verify)"
		c.Fix = "set hostname in mailshim.conf (or /etc/mailname) to this machine's FQDN, e.g. web1.example.com"
		return c
	}
	c.Status, c.Saw = OK, h+" is fully qualified"
	return c
}
