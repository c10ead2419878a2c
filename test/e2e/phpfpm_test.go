//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/waitfor"
)

// prependPath is where the package installs PHP-FPM's auto_prepend_file
// snippet (packaging/php/mailshim-prepend.php).
const prependPath = "/usr/share/mailshim/php/mailshim-prepend.php"

// testPHPFPM runs a php-fpm master with one pool as bob, the mailshim
// prepend snippet as auto_prepend_file, and sends one request to it over
// FastCGI, as a web server would. Under php-fpm SCRIPT_FILENAME is not in
// sendmail's environment (clear_env), so the snippet is what names the
// script.
func testPHPFPM(t *testing.T, s *System) {
	if !fileExists(prependPath) {
		t.Skipf("%s is not installed (packaging/php/mailshim-prepend.php has not landed)", prependPath)
	}
	fpms, _ := filepath.Glob("/usr/sbin/php-fpm*")
	if len(fpms) == 0 {
		t.Fatal("no /usr/sbin/php-fpm* (package php-fpm)")
	}
	tok := token(t)
	p := phpScript(t, s.Bob, "fpm.php", tok, `<?php
$ok = mail("x@example.org", "TOKEN", "from php-fpm TOKEN\n", "From: bob@example.com");
echo $ok ? "sent ok\n" : "mail() failed\n";
`)
	dir, err := os.MkdirTemp("", "mailshim-e2e-fpm-")
	must(t, err, "fpm dir")
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "fpm.sock")
	conf := filepath.Join(dir, "php-fpm.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[global]
pid = %[1]s/fpm.pid
error_log = %[1]s/fpm.log
daemonize = no

[e2e]
user = %[2]s
group = %[2]s
listen = %[3]s
listen.owner = root
listen.group = root
listen.mode = 0600
pm = static
pm.max_children = 1
clear_env = yes
catch_workers_output = yes
php_admin_value[auto_prepend_file] = %[4]s
php_admin_value[sendmail_path] = "/usr/sbin/sendmail -t -i"
`, dir, s.Bob.Username, sock, prependPath)), 0o644), "php-fpm.conf")

	c := exec.Command(fpms[0], "--nodaemonize", "--fpm-config", conf)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	must(t, c.Start(), "start %s", fpms[0])
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			<-done
		}
	})
	if !waitfor.Poll(30*time.Second, func() bool {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}) {
		log, _ := os.ReadFile(filepath.Join(dir, "fpm.log"))
		t.Fatalf("php-fpm did not listen on %s:\n%s", sock, log)
	}
	out, errOut, err := fcgiGet(sock, map[string]string{
		"SCRIPT_FILENAME":   p,
		"SCRIPT_NAME":       "/fpm.php",
		"REQUEST_URI":       "/fpm.php",
		"DOCUMENT_ROOT":     filepath.Dir(p),
		"REQUEST_METHOD":    "GET",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_NAME":       "web1.e2e.test",
		"SERVER_PORT":       "80",
		"REMOTE_ADDR":       "127.0.0.1",
		"QUERY_STRING":      "",
	})
	if err != nil || !strings.Contains(string(out), "sent ok") {
		log, _ := os.ReadFile(filepath.Join(dir, "fpm.log"))
		t.Fatalf("php-fpm request: %v\nstdout: %s\nstderr: %s\nfpm log: %s", err, out, errOut, log)
	}
	checkDelivered(t, s, tok, Want{User: s.Bob, Script: p, Body: "from php-fpm " + tok + "\n" + phpEOL})
}
