package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

var update = flag.Bool("update", false, "rewrite the golden files (then put the wildcards back by hand)")

// matchGolden compares got with the golden file line by line; a '*' in a
// golden line matches any run of characters within that line.
func matchGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(string(b), "\n")
	have := strings.Split(got, "\n")
	ok := len(want) == len(have)
	for i := 0; ok && i < len(want); i++ {
		ok = globLine(want[i], have[i])
	}
	if !ok {
		t.Errorf("%s does not match:\n--- got:\n%s\n--- want:\n%s", name, got, b)
	}
}

func globLine(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	re := "^"
	for i, p := range parts {
		if i > 0 {
			re += ".*"
		}
		re += regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(re + "$").MatchString(s)
}

// logLines returns the log lines of the events given for queue id.
func logLines(log, id string, events ...string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, " id="+id+" ") && !strings.HasSuffix(l, " id="+id) {
			continue
		}
		for _, e := range events {
			if strings.Contains(l, " event="+e+" ") {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n") + "\n"
}

const e2eMessage = "To: alice@example.org\nCc: root\nSubject: e2e through mailshim\n\nHello from the end-to-end test.\n.leading dot line\n"

// TestEndToEndSendmail runs the real sendmail (built from cmd/sendmail)
// into the real relayd, which relays to the in-process upstream; the
// delivered bytes and the log lines are checked against golden files.
// As the invoking user sendmail writes into the maildrop; as nobody (when
// the test runs as root) it cannot, and uses the submission socket, where
// relayd takes the UID from SO_PEERCRED.
func TestEndToEndSendmail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nobody bool
	}{{"maildrop", false}, {"socket-nobody", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.nobody && os.Geteuid() != 0 {
				t.Skip("running sendmail as nobody needs root (CI runs as root)")
			}
			up := newUpstream(t, smtptest.Options{})
			s := newSite(t, up, siteOpts{})
			s.start()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sendmailBin, "-t", "-i")
			cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath, "SCRIPT_FILENAME=/srv/www/site/contact.php"}
			cmd.Stdin = strings.NewReader(e2eMessage)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if tc.nobody {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				cmd.Dir = "/"
			}
			if err := cmd.Run(); err != nil {
				t.Fatalf("sendmail: %v\n%s", err, stderr.String())
			}
			if stderr.Len() > 0 {
				t.Errorf("sendmail wrote to stderr: %q", stderr.String())
			}
			msgs, err := up.WaitFor(1, 30*time.Second)
			if err != nil {
				t.Fatalf("%v\n%s", err, s.log())
			}
			m := msgs[0]
			if strings.Join(m.To, ",") != "alice@example.org,ops@example.com" || !m.TLS || m.User != "relay@example.com" {
				t.Errorf("envelope: from %q to %q tls %v user %q", m.From, m.To, m.TLS, m.User)
			}
			data := strings.ReplaceAll(string(m.Data), "\r\n", "\n")
			matchGolden(t, "e2e-"+tc.name+".eml", data)
			id := regexp.MustCompile(`\(mailshim\) id ([0-9A-F]{20});`).FindStringSubmatch(data)
			if id == nil {
				t.Fatalf("no queue id in Received:\n%s", data)
			}
			waitfor.True(t, "the removed line", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=removed id="+id[1]) })
			matchGolden(t, "e2e-"+tc.name+".log", logLines(s.log(), id[1], "pickup", "delivery", "removed"))
		})
	}
}
