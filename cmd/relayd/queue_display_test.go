package main

// The queue as relayd's listing commands and mailq show it, through the
// real binaries and control socket.

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// A bounce (null sender) the upstream refused for good stays in failed;
// mailq, sendmail -bp, relayd queue list (with and without options) and
// mailq --json show its recipients (they showed none: every recipient
// had failed), and the list shows its sender as <>.
func TestQueueListFailedBounce(t *testing.T) {
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
		if stage == smtptest.StageRcpt {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{})
	// The message fails for good, its bounce (from <>) to app@example.org
	// too: that bounce stays in failed.
	const rcpt = "app@example.org"
	s.dropEnv(spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop"}, spool.Envelope{Sender: rcpt, Recipients: []string{"gone@example.net"}}, 1, func(int) string {
		return "From: app@example.org\nTo: gone@example.net\nSubject: to nobody\n\nbody\n"
	})
	s.start()
	var id string
	waitfor.True(t, "the bounce's permanent failure", 30*time.Second, func() bool {
		for _, l := range strings.Split(s.log(), "\n") {
			if strings.Contains(l, "event=failed ") && strings.Contains(l, " from=<> ") {
				id = logKV(l, "id")
				return true
			}
		}
		return false
	})
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	for _, argv := range [][]string{{sendmailBin, "-bp"}, {relaydBin, "queue", "mailq"}} {
		out, errOut, code := runCmd(t, env, argv[0], argv[1:]...)
		var block string
		if i := strings.Index(out, id); i >= 0 {
			block, _, _ = strings.Cut(out[i:], "\n\n")
		}
		if code != 0 || !strings.Contains(block, "MAILER-DAEMON") || !strings.Contains(block, "\n"+strings.Repeat(" ", 43)+rcpt) {
			t.Errorf("%v: exit %d, no recipient %s under %s:\n%s%s", argv[1:], code, rcpt, id, out, errOut)
		}
	}
	for _, args := range [][]string{{"queue", "list"}, {"queue", "list", "--user", "uid:" + strconv.Itoa(os.Getuid())}} {
		out, errOut, code := runCmd(t, env, relaydBin, args...)
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, id) {
				line = l
			}
		}
		if code != 0 || !strings.HasSuffix(line, " <> -> "+rcpt) {
			t.Errorf("%v: exit %d, line %q, want it to end in \"<> -> %s\"\n%s%s", args, code, line, rcpt, out, errOut)
		}
	}
	for _, argv := range [][]string{{sendmailBin, "-bp", "--json"}, {relaydBin, "queue", "list", "--json"}} {
		out, errOut, code := runCmd(t, env, argv[0], argv[1:]...)
		var list []struct {
			ID         string   `json:"id"`
			Recipients []string `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list) != 1 || list[0].ID != id || strings.Join(list[0].Recipients, ",") != rcpt {
			t.Errorf("%v: exit %d, %v, want %s with recipients [%s]:\n%s%s", argv[1:], code, err, id, rcpt, out, errOut)
		}
	}
}
