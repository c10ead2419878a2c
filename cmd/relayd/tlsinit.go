package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/localca"
	"github.com/mailshim/mailshim/pkg/statefile"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// The local certificate's files (relayd tls-init). The listener's
// cert_file and key_file default to TLSCertFile and TLSKeyFile.
const (
	TLSDir      = "/etc/mailshim/tls"
	TLSCertFile = TLSDir + "/local.crt" // the leaf, then the CA
	TLSKeyFile  = TLSDir + "/local.key" // the leaf's key
	TLSCAFile   = TLSDir + "/ca.crt"    // the CA, to tell ours from another
	// TrustFile is the CA's copy the system trust store reads (mode
	// 0644, outside the 0750 directory, so that verifiers running as any
	// user can read it). The packages link it into the store: the .deb
	// from /usr/share/ca-certificates/mailshim/mailshim-local-ca.crt,
	// listed in /etc/ca-certificates.conf (update-ca-certificates(8)),
	// the RPM from /usr/share/pki/ca-trust-source/anchors/ (update-ca-trust(8)).
	// /usr/local is the administrator's (Debian policy 9.1.2), never the
	// package's.
	TrustFile = "/etc/mailshim/local-ca.crt"
)

// tlsInit makes (or renews) the certificate the loopback SMTP listener
// presents and puts its CA in the system's trust store. See relayd(8).
func tlsInit(args []string) int {
	flags := pflag.NewFlagSet("relayd tls-init", pflag.ContinueOnError)
	cfgPath := flags.StringP("config", "c", config.Path(), "configuration file (for hostname)")
	dir := flags.String("dir", TLSDir, "directory for local.crt, local.key and ca.crt")
	trust := flags.String("trust-file", TrustFile, `the CA's copy the system trust store reads ("" = not trusted system-wide)`)
	group := flags.String("group", "mailshim", "group that may read the key (relayd's)")
	force := flags.Bool("force", false, "make a new CA and certificate even if the current ones are good")
	renew := flags.Duration("renew-before", localca.RenewBefore, "renew when the certificate expires within this")
	validity := flags.Duration("validity", localca.Validity, "validity of a new certificate")
	extra := flags.StringSlice("name", nil, "another DNS name of this host (repeatable)")
	noUpdate := flags.Bool("no-update-ca", false, "do not run update-ca-certificates (or update-ca-trust)")
	if err := flags.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "relayd: tls-init: %v\n", err)
		return sysexits.Usage
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "relayd: tls-init: unexpected argument %q\n", flags.Arg(0))
		return sysexits.Usage
	}
	if *validity <= *renew {
		fmt.Fprintf(os.Stderr, "relayd: tls-init: --validity %v must be longer than --renew-before %v\n", *validity, *renew)
		return sysexits.Usage
	}

	names := localca.DefaultNames(append(tlsHostnames(*cfgPath), *extra...)...)
	certPath := filepath.Join(*dir, filepath.Base(TLSCertFile))
	keyPath := filepath.Join(*dir, filepath.Base(TLSKeyFile))
	caPath := filepath.Join(*dir, filepath.Base(TLSCAFile))
	list := strings.Join(append(append([]string{}, names.DNS...), "127.0.0.1", "::1"), ", ")

	reason := "--force"
	if !*force {
		err := checkTLSFiles(certPath, keyPath, caPath, *trust, names, *renew)
		if err == nil {
			leaf, _ := readLeafExpiry(certPath)
			fmt.Printf("relayd: tls-init: %s is good for %s until %s; nothing to do\n", certPath, list, leaf)
			return 0
		}
		reason = err.Error()
	}

	gid := -1
	if os.Geteuid() == 0 && *group != "" {
		g, err := user.LookupGroup(*group)
		if err != nil {
			fmt.Fprintf(os.Stderr, "relayd: tls-init: group %s: %v\n", *group, err)
			return sysexits.NoUser
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	b, err := localca.New(names, time.Now(), *validity)
	if err != nil {
		fmt.Fprintf(os.Stderr, "relayd: tls-init: %v\n", err)
		return sysexits.Software
	}
	// The trust store first, then the leaf: a client that sees the new
	// leaf already trusts its CA. The directory is readable by relayd's
	// group only, so the key's mode cannot leak it through a race.
	steps := []struct {
		path string
		data []byte
		mode fs.FileMode
		gid  int
	}{
		{caPath, b.CAPEM, 0o644, gid},
		{*trust, b.CAPEM, 0o644, -1},
		{keyPath, b.KeyPEM, 0o640, gid},
		{certPath, b.CertPEM, 0o644, gid},
	}
	if err := mkdirGroup(*dir, gid); err != nil {
		fmt.Fprintf(os.Stderr, "relayd: tls-init: %v\n", err)
		return sysexits.CantCreat
	}
	for _, s := range steps[:2] {
		if s.path == "" {
			continue
		}
		if err := writeAtomic(s.path, s.data, s.mode, s.gid); err != nil {
			fmt.Fprintf(os.Stderr, "relayd: tls-init: %v\n", err)
			return sysexits.CantCreat
		}
	}
	if *trust != "" && !*noUpdate {
		if err := updateTrustStore(); err != nil {
			fmt.Fprintf(os.Stderr, "relayd: tls-init: %v\n", err)
			return sysexits.OSErr
		}
	}
	for _, s := range steps[2:] {
		if err := writeAtomic(s.path, s.data, s.mode, s.gid); err != nil {
			fmt.Fprintf(os.Stderr, "relayd: tls-init: %v\n", err)
			return sysexits.CantCreat
		}
	}
	fmt.Printf("relayd: tls-init: new certificate %s for %s, valid until %s (%s)\n",
		certPath, list, b.Leaf.NotAfter.UTC().Format(time.RFC3339), reason)
	if *trust != "" {
		fmt.Printf("relayd: tls-init: its CA, limited to these names, is in %s for the system trust store\n", *trust)
	}
	// A running relayd keeps presenting the old certificate, whose CA is
	// no longer trusted: clients that verify refuse it until the restart.
	fmt.Printf("relayd: tls-init: relayd presents it from its next start (if relayd runs now: systemctl restart relayd)\n")
	return 0
}

// tlsHostnames are the host names the certificate is for: the configured
// hostname (or /etc/mailname), and the system host name with its domain
// when it differs. A configuration that does not load yet (a fresh
// install without [[upstream]]) still names the host the default way.
func tlsHostnames(cfgPath string) []string {
	var hosts []string
	if cfg, err := config.Load(cfgPath); err == nil {
		hosts = append(hosts, cfg.Hostname)
	} else {
		hosts = append(hosts, config.DefaultHostname())
	}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	return hosts
}

// checkTLSFiles returns nil when the files on disk serve names for longer
// than renew, else why they do not.
func checkTLSFiles(certPath, keyPath, caPath, trust string, names localca.Names, renew time.Duration) error {
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist", p)
		}
		return b, err
	}
	cert, err := read(certPath)
	if err != nil {
		return err
	}
	key, err := read(keyPath)
	if err != nil {
		return err
	}
	ca, err := read(caPath)
	if err != nil {
		return err
	}
	if trust != "" {
		t, err := read(trust)
		if err != nil {
			return err
		}
		if string(t) != string(ca) {
			return fmt.Errorf("%s is not the CA in %s", trust, caPath)
		}
	}
	return localca.Check(cert, key, ca, names, time.Now(), renew)
}

func readLeafExpiry(certPath string) (string, error) {
	b, err := os.ReadFile(certPath)
	if err != nil {
		return "", err
	}
	c, err := localca.ParseLeaf(b)
	if err != nil {
		return "", err
	}
	return c.NotAfter.UTC().Format(time.RFC3339), nil
}

// mkdirGroup makes dir 0750 root:gid (gid -1: the caller's group), or puts
// an existing one right. A symbolic link is refused.
func mkdirGroup(dir string, gid int) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if gid >= 0 {
		if err := os.Lchown(dir, 0, gid); err != nil {
			return err
		}
	}
	return os.Chmod(dir, 0o750)
}

// writeAtomic writes data to path (statefile.Write: fsync, rename, fsync
// of the directory) with mode and, if gid >= 0, that group, creating the
// directory if need be.
func writeAtomic(path string, data []byte, mode fs.FileMode, gid int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := statefile.Write(path, data, statefile.Options{Perm: mode, SetGroup: gid >= 0, Group: gid}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// updateTrustStore rebuilds the system trust store with the tool the
// system has: Debian's update-ca-certificates (/etc/ssl/certs and
// ca-certificates.crt), else Fedora's and RHEL's update-ca-trust.
func updateTrustStore() error {
	for _, tool := range []string{"update-ca-certificates", "update-ca-trust"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			continue
		}
		if out, err := exec.Command(path).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", tool, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return errors.New("neither update-ca-certificates nor update-ca-trust is installed (package ca-certificates); the CA is not trusted yet")
}
