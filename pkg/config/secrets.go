package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// TLSFilesCheck, when set, checks that caFile ("" for none) holds a PEM
// certificate and that the client pair (cert and key, "" for none) loads;
// LoadSecrets reports its errors at ca_file's and client_cert's lines.
// pkg/relay sets it (in its init): relayd links it, sendmail must not
// (crypto/tls and crypto/x509 would enter the setgid binary and its
// start-up: cmd/sendmail's TestDeps and TestInitBudget).
var TLSFilesCheck func(caFile, cert, key string) (caErr, pairErr error)

// ErrNoUpstream is returned by LoadSecrets when no [[upstream]] is
// configured: sendmail does not need one, relayd does.
var ErrNoUpstream = errors.New("no [[upstream]] configured: relayd has nowhere to send mail")

// maxSecret bounds a password file.
const maxSecret = 64 << 10

// LoadSecrets prepares the configuration for relayd (and only relayd:
// sendmail never calls it). It reads every upstream's password_file into
// Password, refusing a file that is not a regular file (symbolic links are
// not followed) or that the group or others may read (mode & 0o077), and
// trims one trailing newline. It also checks that ca_file, client_cert and
// client_key can be opened and, through TLSFilesCheck when it is set
// (relayd), that they load. It fails with ErrNoUpstream when there is no
// upstream. Errors have Load's "<file>:<line>: <key>: <what>" form.
func (c *Config) LoadSecrets() error {
	if len(c.Upstreams) == 0 {
		return &Error{File: c.source(), Key: "upstream", Msg: ErrNoUpstream.Error()}
	}
	var errs []error
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		at := func(key string) []string { return []string{"upstream", index(i), key} }
		readable := map[string]bool{}
		for _, f := range []struct{ key, path string }{
			{"ca_file", u.CAFile}, {"client_cert", u.ClientCert}, {"client_key", u.ClientKey},
		} {
			if f.path == "" {
				continue
			}
			if err := checkReadable(f.path); err != nil {
				errs = append(errs, c.errAt(at(f.key), "%v", err))
				continue
			}
			readable[f.key] = true
		}
		// What relayd would refuse at every delivery (relay.TLSConfig)
		// is refused here, where check-config and a reload see it.
		if TLSFilesCheck != nil {
			var ca, cert, key string
			if readable["ca_file"] {
				ca = u.CAFile
			}
			if readable["client_cert"] && readable["client_key"] {
				cert, key = u.ClientCert, u.ClientKey
			}
			caErr, pairErr := TLSFilesCheck(ca, cert, key)
			if caErr != nil {
				errs = append(errs, c.errAt(at("ca_file"), "%v", caErr))
			}
			if pairErr != nil {
				errs = append(errs, c.errAt(at("client_cert"), "%v", pairErr))
			}
		}
		// The OAuth2 secrets follow password_file's rules; pkg/oauth
		// reads them (and writes back a rotated refresh token).
		for _, f := range []struct{ key, path string }{
			{"oauth_client_secret_file", u.OAuthClientSecretFile}, {"oauth_refresh_token_file", u.OAuthRefreshTokenFile},
		} {
			if f.path == "" {
				continue
			}
			if _, err := ReadSecret(f.path); err != nil {
				errs = append(errs, c.errAt(at(f.key), "%v", err))
			}
		}
		if u.PasswordFile == "" {
			continue
		}
		pw, err := ReadSecret(u.PasswordFile)
		if err != nil {
			errs = append(errs, c.errAt(at("password_file"), "%v", err))
			continue
		}
		u.Password = pw
	}
	if c.Trace.KeyFile != "" {
		key, err := ReadSecret(c.Trace.KeyFile)
		switch {
		case err != nil:
			errs = append(errs, c.errAt([]string{"trace", "key_file"}, "%v", err))
		case len(key) < 16:
			errs = append(errs, c.errAt([]string{"trace", "key_file"}, "%s: the key is %d bytes; use at least 16 (e.g. head -c 32 /dev/urandom | base64 > %s)", c.Trace.KeyFile, len(key), c.Trace.KeyFile))
		default:
			c.Trace.Key = key
		}
	}
	return errors.Join(errs...)
}

func (c *Config) source() string {
	if c.Source == "" {
		return "(defaults)"
	}
	return c.Source
}

func (c *Config) errAt(path []string, format string, args ...any) *Error {
	e := &Error{File: c.source(), Line: c.loc.line(path...), Key: displayKey(path), Msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			e.Err = err
			break
		}
	}
	return e
}

// ReadSecret reads a secret file: a regular file, not a symbolic link, not
// readable by group or others; one trailing newline ("\n" or "\r\n") is
// removed. The secret must not be empty nor contain NUL, CR or LF.
func ReadSecret(path string) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if err == unix.ELOOP {
			return "", fmt.Errorf("%s: is a symbolic link; name the file itself", path)
		}
		return "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s: mode %04o lets group or others read it; run chmod 600 %s (owner: the mailshim user)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecret+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxSecret {
		return "", fmt.Errorf("%s: larger than %d bytes, not a password", path, maxSecret)
	}
	s := string(b)
	if strings.HasSuffix(s, "\r\n") {
		s = s[:len(s)-2]
	} else {
		s = strings.TrimSuffix(s, "\n")
	}
	if s == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	if strings.ContainsAny(s, "\x00\r\n") {
		return "", fmt.Errorf("%s: the secret contains a NUL or line break (only one trailing newline is allowed)", path)
	}
	return s, nil
}

// checkReadable opens path for reading (no following of symbolic links is
// required here: certificates are public and often linked).
func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	return nil
}

// CheckFilesFor is for relayd check-config run by root on behalf of the
// daemon user uid (name, in groups gids), who opens the files root checked:
// every secret file (password_file, the OAuth secret files, [trace]
// key_file) must belong to that user, and ca_file, client_cert and
// client_key must be readable by it. ReadSecret already refuses group and
// other access, so a secret that passed it and belongs to someone else
// (root, after echo pw | sudo tee) is one relayd cannot read; so is a key
// left root's, mode 0600: root's check would pass and relayd's start fail.
func (c *Config) CheckFilesFor(uid int, gids []int, name string) error {
	var errs []error
	secret := func(path []string, file string) {
		if file == "" {
			return
		}
		fi, err := os.Lstat(file)
		if err != nil {
			return // LoadSecrets has reported it
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
			errs = append(errs, c.errAt(path, "%s: owned by uid %d, not by relayd's user %s (uid %d), who cannot read it; run chown %s %s", file, st.Uid, name, uid, name, file))
		}
	}
	readable := func(path []string, file, fix string) {
		if file == "" {
			return
		}
		fi, err := os.Stat(file) // followed, as LoadSecrets opens it
		if err != nil {
			return // LoadSecrets has reported it
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return
		}
		if n, err := unix.Getxattr(file, "system.posix_acl_access", nil); err == nil && n > 0 {
			return // an ACL (setfacl -m u:mailshim:r) the mode does not show
		}
		perm := fi.Mode().Perm()
		var can bool
		switch {
		case int(st.Uid) == uid:
			can = perm&0o400 != 0
		case slices.Contains(gids, int(st.Gid)):
			can = perm&0o040 != 0
		default:
			can = perm&0o004 != 0
		}
		if !can {
			errs = append(errs, c.errAt(path, "%s: relayd's user %s (uid %d) cannot read it (owner uid %d, group %d, mode %04o); %s", file, name, uid, st.Uid, st.Gid, perm, fix))
		}
	}
	for i, u := range c.Upstreams {
		at := func(key string) []string { return []string{"upstream", index(i), key} }
		readable(at("ca_file"), u.CAFile, "run chmod 644 "+u.CAFile)
		readable(at("client_cert"), u.ClientCert, "run chmod 644 "+u.ClientCert)
		readable(at("client_key"), u.ClientKey, "run chown "+name+" "+u.ClientKey)
		secret(at("password_file"), u.PasswordFile)
		secret(at("oauth_client_secret_file"), u.OAuthClientSecretFile)
		secret(at("oauth_refresh_token_file"), u.OAuthRefreshTokenFile)
	}
	secret([]string{"trace", "key_file"}, c.Trace.KeyFile)
	return errors.Join(errs...)
}
