package driver

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NobodyUID is the unprivileged user sendmail and the reference run as
// when the driver is root.
const NobodyUID = 65534

// DropGID is the group the benchmark installs sendmail setgid to (Debian's
// "mail" group stands in for mailshim-drop, which is not created here).
const DropGID = 8

// Site is a private installation: a spool with PRODUCT.md's modes, a
// config file, sendmail installed setgid (when root), and a directory for
// the reference program.
type Site struct {
	Dir      string
	Spool    string
	Maildrop string
	Config   string
	Sendmail string // installed binary ("" when not built)
	RefDir   string
	Cred     *syscall.Credential // who the callers run as (nil: ourselves)
	Env      []string            // callers' environment
	Setgid   bool
	Note     string // how sendmail runs, for the table
	bound    bool   // etc/ is bind-mounted on /etc/mailshim
}

// Close undoes the bind mount, so that the site's directory can be
// removed.
func (s *Site) Close() {
	if s.bound {
		unix.Unmount(SystemConfDir, unix.MNT_DETACH)
		s.bound = false
	}
}

// conf is the site's configuration file with extraConf in it.
func (s *Site) conf(extraConf string) string {
	return fmt.Sprintf("hostname = \"bench.example\"\nspool = %q\nmax_message_size = \"200MB\"\ncontrol_socket = %q\nsubmit_socket = %q\n%s%s",
		s.Spool, filepath.Join(s.Dir, "control.sock"), filepath.Join(s.Dir, "submit.sock"), extraConf, UnlimitedPolicy)
}

// Reconfigure rewrites the site's configuration file (for relayd, which
// reads it at start) with extraConf in place of NewSite's.
func (s *Site) Reconfigure(extraConf string) error {
	return os.WriteFile(s.Config, []byte(s.conf(extraConf)), 0o644)
}

// UnlimitedPolicy lifts relayd's per-account limits for the user the
// callers run as (nobody): a site measures throughput and robustness, and
// thousands of messages a minute from one account, or one message to
// 10,000 recipients, is exactly what the default limits hold back. It goes
// at the end of a site's configuration.
const UnlimitedPolicy = `
[policy.nobody]
max_recipients = 0
messages_per_minute = 0
messages_per_hour = 0
messages_per_day = 0
recipients_per_minute = 0
recipients_per_hour = 0
recipients_per_day = 0
`

// NewSite prepares dir. When root it installs sendmail 2755 root:DropGID and
// makes the config visible at /etc/mailshim by a bind mount inside the
// driver's private mount namespace (see EnterNamespace); otherwise it
// points sendmail at the config with MAILSHIM_CONFIG and runs it as
// ourselves, not setgid.
func NewSite(dir string, bins *Binaries, extraConf string) (*Site, error) {
	s := &Site{Dir: dir, Spool: filepath.Join(dir, "spool"), RefDir: filepath.Join(dir, "ref")}
	s.Maildrop = filepath.Join(s.Spool, "maildrop")
	root := os.Geteuid() == 0
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{s.Spool, s.Maildrop, s.RefDir, etc, filepath.Join(dir, "sbin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(s.Spool, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(s.Maildrop, 0o730|os.ModeSticky); err != nil {
		return nil, err
	}
	s.Config = filepath.Join(etc, "mailshim.conf")
	conf := s.conf(extraConf)
	if err := os.WriteFile(s.Config, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	s.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}
	if root {
		if err := os.Chown(s.Maildrop, 0, DropGID); err != nil {
			return nil, err
		}
		if err := os.Chmod(s.Maildrop, 0o730|os.ModeSticky); err != nil {
			return nil, err
		}
		if err := os.Chown(s.RefDir, NobodyUID, NobodyUID); err != nil {
			return nil, err
		}
		s.Cred = &syscall.Credential{Uid: NobodyUID, Gid: NobodyUID, Groups: []uint32{}}
	} else {
		s.Env = append(s.Env, "MAILSHIM_CONFIG="+s.Config)
	}
	if bins.Sendmail == "" {
		return s, nil
	}
	s.Sendmail = filepath.Join(dir, "sbin", "sendmail")
	data, err := os.ReadFile(bins.Sendmail)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.Sendmail, data, 0o755); err != nil {
		return nil, err
	}
	if root {
		if err := os.Chown(s.Sendmail, 0, DropGID); err != nil {
			return nil, err
		}
		if err := os.Chmod(s.Sendmail, 0o755|os.ModeSetgid); err != nil {
			return nil, err
		}
		if bins.SendmailConf != "" {
			if err := os.WriteFile(bins.SendmailConf, []byte(conf), 0o644); err != nil {
				return nil, err
			}
		} else if err := bindConfig(etc); err != nil {
			return nil, err
		} else {
			s.bound = true
		}
		s.Setgid = true
		s.Note = "as nobody, setgid"
	} else {
		s.Note = "as the invoking user, NOT setgid (driver not run as root)"
	}
	return s, nil
}

// SystemConfDir is where a setgid sendmail reads its configuration.
const SystemConfDir = "/etc/mailshim"

// bindConfig bind-mounts etc over /etc/mailshim. Only valid inside the
// private mount namespace the driver enters when root.
func bindConfig(etc string) error {
	if os.Getenv(nsEnv) == "" {
		return fmt.Errorf("bench: not in a private mount namespace; cannot give the setgid sendmail a private config")
	}
	if err := unix.Mount(etc, SystemConfDir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s on %s: %w", etc, SystemConfDir, err)
	}
	return nil
}

// Clean removes every file from the maildrop and the reference directory.
func (s *Site) Clean() error {
	for _, d := range []string{s.Maildrop, s.RefDir} {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := os.Remove(filepath.Join(d, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func countFiles(dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "tmp.") {
			n++
		}
	}
	return n
}

func (s *Site) ref(stdin string, args ...string) Proc {
	return Proc{Path: refPath, Args: append([]string{s.RefDir}, args...), Env: s.Env, Cred: s.Cred, Stdin: stdin}
}

func (s *Site) sendmail(stdin string, args ...string) Proc {
	return Proc{Path: s.Sendmail, Args: args, Env: s.Env, Cred: s.Cred, Stdin: stdin}
}

// SendmailProc is sendmail with args, fed data on stdin, as the site's
// caller.
func (s *Site) SendmailProc(data []byte, args ...string) Proc {
	return Proc{Path: s.Sendmail, Args: args, Env: s.Env, Cred: s.Cred, StdinData: data}
}

// RelaxModes opens the spool root to 0755 and maildrop/ to 1770: the
// fallback used when the setgid sendmail cannot open PRODUCT.md's 0711
// root and 1730 maildrop/ (it needs to read them to fsync).
func (s *Site) RelaxModes() error {
	if err := os.Chmod(s.Spool, 0o755); err != nil {
		return err
	}
	return os.Chmod(s.Maildrop, 0o770|os.ModeSticky)
}

// Queued counts the messages in maildrop/ and in relayd's queue.
func (s *Site) Queued() int { return queued(s) }

// CountFiles counts the entries of dir that are not temporary files.
func CountFiles(dir string) int { return countFiles(dir) }

// refPath is set by Run to the built reference binary.
var refPath string

// Pair holds interleaved samples of a program and its reference.
type Pair struct {
	Subject, Ref []Sample
}

// measurePair runs ref and subject alternately n times, checking after
// each that the expected number of files appeared, and cleaning up.
func measurePair(s *Site, n int, ref, subj Proc, files int) (*Pair, error) {
	p := &Pair{}
	for i := 0; i < n; i++ {
		r, err := ref.Run()
		if err != nil {
			return nil, err
		}
		if got := countFiles(s.RefDir); got != files {
			return nil, fmt.Errorf("reference wrote %d files, want %d", got, files)
		}
		var out bytes.Buffer
		subj.Stdout = &out
		x, err := subj.Run()
		if err != nil {
			return nil, err
		}
		if got := countFiles(s.Maildrop); got != files {
			return nil, fmt.Errorf("sendmail exited 0 but %d files are in maildrop/, want %d (stdout %q)", got, files, firstLine(out.String()))
		}
		p.Ref = append(p.Ref, r)
		p.Subject = append(p.Subject, x)
		if err := s.Clean(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func walls(ss []Sample) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = s.Wall
	}
	return out
}

func maxRSS(ss []Sample) int64 {
	var m int64
	for _, s := range ss {
		m = max(m, s.MaxRSSKB)
	}
	return m
}

// Probe runs sendmail once. A setgid sendmail that cannot open PRODUCT.md's
// 0711 spool root or 1730 maildrop/ (it must read a directory to fsync it)
// gets the modes relaxed (RelaxModes) so that the rest can still be
// measured; note then says so, to be reported as a bug.
func (s *Site) Probe() (note string, err error) {
	try := func() error {
		_, err := s.SendmailProc(message(2<<10, -1), "-t", "-i").Run()
		s.Clean()
		return err
	}
	err = try()
	if err == nil {
		return "", nil
	}
	if !s.Setgid || !strings.Contains(err.Error(), "permission denied") {
		return "", fmt.Errorf("sendmail does not work in the site: %w", err)
	}
	if rerr := s.RelaxModes(); rerr != nil {
		return "", rerr
	}
	if err2 := try(); err2 != nil {
		return "", fmt.Errorf("sendmail does not work in the site: %w (and with relaxed modes: %v)", err, err2)
	}
	return fmt.Sprintf("BUG: the setgid sendmail cannot use the spool with PRODUCT.md's modes (root 0711, maildrop/ 1730): %v; measured with root 0755 and maildrop/ 1770", err), nil
}
