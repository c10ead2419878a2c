package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPHPPrepend runs real php-cgi (as a web server runs it, CGI
// environment) with sendmail_path pointing at the built sendmail. Under
// PHP-FPM, SCRIPT_FILENAME is not in the environment that mail() passes
// on; the script simulates that by removing it before calling mail().
// With packaging/php/mailshim-prepend.php as auto_prepend_file the script
// is still recorded, from MAILSHIM_SCRIPT.
func TestPHPPrepend(t *testing.T) {
	needBinary(t)
	phpCGI, err := exec.LookPath("php-cgi")
	if err != nil {
		t.Skip("SKIPPED: php-cgi not installed (apt-get install php-cgi)")
	}
	prepend, err := filepath.Abs("../../packaging/php/mailshim-prepend.php")
	if err != nil {
		t.Fatal(err)
	}
	s := newSpool(t, false, "")
	site := t.TempDir()
	script := filepath.Join(site, "contact.php")
	os.WriteFile(script, []byte(`<?php
if (($_GET['case'] ?? '') === 'fpm') {
    putenv('SCRIPT_FILENAME'); // as under PHP-FPM: not in the environment
}
$ok = mail("Rcpt One <rcpt1@example.org>", "Hello", "body\n.leading dot\n", "From: Web App <webapp@example.org>\r\nBcc: hidden@example.org");
echo $ok ? "sent" : "failed";
`), 0o644)
	for _, tc := range []struct {
		name, query, prepend, source, script string
	}{
		{"cgi", "case=cgi", "", "SCRIPT_FILENAME", script},
		{"cgi with prepend", "case=cgi", prepend, "SCRIPT_FILENAME", script},
		{"fpm-like with prepend", "case=fpm", prepend, "MAILSHIM_SCRIPT", script},
		{"fpm-like without prepend", "case=fpm", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-n", "-d", "sendmail_path=" + binPath + " -t -i", "-d", "mail.add_x_header=0"}
			if tc.prepend != "" {
				args = append(args, "-d", "auto_prepend_file="+tc.prepend)
			}
			cmd := exec.Command(phpCGI, args...)
			cmd.Dir = site
			cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.conf,
				"GATEWAY_INTERFACE=CGI/1.1", "REDIRECT_STATUS=200", "REQUEST_METHOD=GET", "SERVER_PROTOCOL=HTTP/1.1",
				"SCRIPT_FILENAME=" + script, "SCRIPT_NAME=/contact.php", "QUERY_STRING=" + tc.query}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.HasSuffix(string(out), "sent") {
				t.Fatalf("php-cgi: %v\n%s", err, out)
			}
			f := s.files(t)
			if len(f) != 1 {
				t.Fatalf("%d messages", len(f))
			}
			defer os.Remove(f[0].path)
			o := f[0].meta.Origin
			if o.ScriptSource != tc.source || o.Script != tc.script || o.Caller != "php" {
				t.Errorf("script %q from %q, caller %q; want %q from %q", o.Script, o.ScriptSource, o.Caller, tc.script, tc.source)
			}
			if strings.Join(f[0].meta.Env.Recipients, " ") != "rcpt1@example.org hidden@example.org" || strings.Contains(f[0].body, "Bcc:") {
				t.Errorf("envelope %v body %q", f[0].meta.Env.Recipients, f[0].body)
			}
		})
	}
}
