package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A password given on the command line of the program that ran sendmail
// (swaks -ap, --auth-password, curl -u user:pass, mysql -p, sshpass -p, a
// URL's user:password) is in no file of the spool, in no line of relayd's
// log and not in relayd queue show: the recorded command line has the
// option and "[redacted]" in its place. Each caller is bash under the
// program's name (a symlink), so that /proc/PID/cmdline is the program's
// command line; the real sendmail records it.
func TestOriginCommandLinePasswordsMasked(t *testing.T) {
	up, _ := newDeferringUpstream(t) // the messages stay queued
	s := newSite(t, up, siteOpts{retry: `["1h"]`})
	s.prepareSpool() // relayd starts after sendmail: the maildrop files are looked at first
	bin := t.TempDir()
	const run = `printf 'Subject: masked\n\nbody\n' | "$SENDMAIL" -i rcpt@example.net; exit $?`
	cases := []struct {
		prog   string
		args   []string
		secret string
		want   string // in queue show's cmd line
	}{
		{"swaks", []string{"--to", "rcpt@example.net", "--auth-user", "u", "--auth-password", "Sw4ks-Long-Secret"}, "Sw4ks-Long-Secret", "--auth-password [redacted]"},
		{"swaks", []string{"-au", "u", "-ap", "Sw4ks-Ap-Secret"}, "Sw4ks-Ap-Secret", "-ap [redacted]"},
		{"curl", []string{"-u", "alice:Cu7l-Secret", "https://example.net/"}, "Cu7l-Secret", "-u alice:[redacted]"},
		{"mysql", []string{"-uroot", "-pMysq1-Secret", "shop"}, "Mysq1-Secret", "-p[redacted] shop"},
		{"sshpass", []string{"-p", "Sshp4ss-Secret", "ssh", "host"}, "Sshp4ss-Secret", "-p [redacted] ssh host"},
		{"git", []string{"clone", "https://bob:G1t-Url-Secret@git.example.net/r.git"}, "G1t-Url-Secret", "https://bob:[redacted]@git.example.net/r.git"},
		// env(1) setting libpq's variable for a backup job.
		{"env", []string{"PGPASSWORD=Pg3nv-Secret", "pg_dump", "shop"}, "Pg3nv-Secret", "PGPASSWORD=[redacted] pg_dump shop"},
	}
	for _, c := range cases {
		if err := os.Symlink("/bin/bash", filepath.Join(bin, c.prog)); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		argv := append([]string{"-c", run}, c.args...)
		out, errOut, code := runCmd(t, []string{"MAILSHIM_CONFIG=" + s.cfgPath, "SENDMAIL=" + sendmailBin}, filepath.Join(bin, c.prog), argv...)
		if code != 0 {
			t.Fatalf("%s: sendmail exit %d: %s%s", c.prog, code, out, errOut)
		}
	}
	noSecret := func(when string) {
		for _, c := range cases {
			filepath.WalkDir(s.spool, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(c.secret)) {
						t.Errorf("%s: %s: %s holds the password %q", when, c.prog, p, c.secret)
					}
				}
				return nil
			})
		}
	}
	noSecret("before pickup")
	s.start()
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	var ids []string
	waitfor.True(t, "every message queued and tried", 30*time.Second, func() bool {
		ids = ids[:0]
		out, _, _ := runCmd(t, env, relaydBin, "queue", "list")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] == "deferred" {
				ids = append(ids, f[0])
			}
		}
		return len(ids) == len(cases)
	})
	var shows string
	for _, id := range ids {
		out, errOut, code := runCmd(t, env, relaydBin, "queue", "show", id)
		if code != 0 {
			t.Fatalf("queue show %s: exit %d %s", id, code, errOut)
		}
		shows += out
	}
	for _, c := range cases {
		if strings.Contains(shows, c.secret) {
			t.Errorf("%s: queue show shows the password %q", c.prog, c.secret)
		}
		if !strings.Contains(shows, c.want) {
			t.Errorf("%s: no %q in queue show", c.prog, c.want)
		}
		if strings.Contains(s.log(), c.secret) {
			t.Errorf("%s: the log holds the password %q", c.prog, c.secret)
		}
	}
	noSecret("queued")
	if t.Failed() {
		t.Logf("queue show:\n%s", shows)
	}
}

// A maildrop file whose record holds a password on the command line (an
// older sendmail's, or one that did not mask it) is queued without it:
// pickup masks it, and neither the queue nor queue show nor the log
// holds it.
func TestOriginCommandLinePasswordsMaskedAtPickup(t *testing.T) {
	up, _ := newDeferringUpstream(t) // the message stays queued
	s := newSite(t, up, siteOpts{retry: `["1h"]`})
	const secret = "Old-Sendmail-Secret"
	ids := s.dropOrigin(spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t",
		ParentCmdline: "/usr/bin/swaks --to rcpt@example.net -ap " + secret}, "older sendmail", 1)
	s.start()
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	var show string
	waitfor.True(t, "the message queued and tried", 30*time.Second, func() bool {
		out, _, code := runCmd(t, env, relaydBin, "queue", "show", ids[0])
		show = out
		return code == 0 && strings.Contains(out, "deferred")
	})
	if strings.Contains(show, secret) || !strings.Contains(show, "-ap [redacted]") {
		t.Errorf("queue show does not mask the password:\n%s", show)
	}
	filepath.WalkDir(s.spool, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the password", p)
			}
		}
		return nil
	})
	if strings.Contains(s.log(), secret) {
		t.Errorf("the log holds the password")
	}
}
