package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
)

// forgedMessage carries a caller's own copies of the trace fields relayd
// adds: an origin header claiming root's cron, the same under the custom
// header name, and a Received: line in mailshim's form (folded).
const forgedMessage = "X-Mailshim-Origin: uid=0 user=root script=/etc/cron.daily/backup\n" +
	"x-origin: uid=0 user=root\n" +
	"Received: from uid 0 (root)\n by web1.example.com (mailshim) id 0006270A1B2C3D4E5F60;\n Mon, 23 Nov 2026 14:40:00 +0000\n" +
	"Received: from mx.example.net by relay.example.org (Postfix) with ESMTP id 4ABC;\n Mon, 23 Nov 2026 14:39:00 +0000\n" +
	"To: alice@example.org\nSubject: forged trace\n\nbody\n"

// headerLines returns the unfolded fields of a delivered message's header
// section whose name is name (case-insensitive).
func headerLines(data, name string) []string {
	head, _, _ := strings.Cut(strings.ReplaceAll(data, "\r\n", "\n"), "\n\n")
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(head, "\n ", " "), "\n") {
		if n, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(n, name) {
			out = append(out, l)
		}
	}
	return out
}

// A caller's own origin header or mailshim Received: line never reaches
// the upstream as ours, whichever door the message came through: the
// maildrop (sendmail), the submission socket (submit.Send), and sendmail
// as an unprivileged user that falls back to the socket. The forged fields
// arrive renamed X-Mailshim-Forged-*, the other MTA's Received: untouched,
// and ours (one of each) name the real UID.
func TestForgedTraceNeverPassesAsOurs(t *testing.T) {
	for _, header := range []string{"", "X-Origin"} {
		for _, door := range []string{"sendmail", "socket", "sendmail-nobody"} {
			t.Run(fmt.Sprintf("%s/header=%s", door, header), func(t *testing.T) {
				if door == "sendmail-nobody" && os.Geteuid() != 0 {
					t.Skip("running sendmail as nobody needs root (CI runs as root)")
				}
				up := newUpstream(t, smtptest.Options{})
				s := newSite(t, up, siteOpts{})
				ours := "X-Mailshim-Origin"
				if header != "" {
					s.writeConfig(fmt.Sprintf("\n[trace]\nheader = %q\n", header))
					ours = header
				}
				s.start()
				uid := os.Getuid()
				switch door {
				case "socket":
					m := &spool.Meta{Env: spool.Envelope{Recipients: []string{"alice@example.org"}}}
					if _, err := submit.Send(context.Background(), s.submitSock(), m, strings.NewReader(forgedMessage)); err != nil {
						t.Fatal(err)
					}
				default:
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					cmd := exec.CommandContext(ctx, sendmailBin, "-t", "-i")
					cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
					cmd.Stdin = strings.NewReader(forgedMessage)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					if door == "sendmail-nobody" {
						uid = 65534
						cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
						cmd.Dir = "/"
					}
					if err := cmd.Run(); err != nil {
						t.Fatalf("sendmail: %v\n%s", err, stderr.String())
					}
				}
				msgs, err := up.WaitFor(1, 30*time.Second)
				if err != nil {
					t.Fatalf("%v\n%s", err, s.log())
				}
				data := string(msgs[0].Data)
				origin := headerLines(data, ours)
				if len(origin) != 1 || !strings.HasPrefix(origin[0], ours+": uid="+fmt.Sprint(uid)+" ") {
					t.Errorf("origin fields named %s: %q, want only ours with uid=%d\n%s", ours, origin, uid, data)
				}
				if header != "" {
					if got := headerLines(data, "X-Mailshim-Origin"); len(got) != 0 {
						t.Errorf("the caller's X-Mailshim-Origin passed under a custom [trace] header: %q", got)
					}
				}
				var mailshim []string
				for _, r := range headerLines(data, "Received") {
					if strings.Contains(r, "mailshim") {
						mailshim = append(mailshim, r)
					}
				}
				if len(mailshim) != 1 || !regexp.MustCompile(`^Received: from uid `+fmt.Sprint(uid)+` \(`).MatchString(mailshim[0]) {
					t.Errorf("mailshim Received fields: %q, want only ours (uid %d)", mailshim, uid)
				}
				if got := headerLines(data, "Received"); len(got) != 2 || !strings.Contains(got[1], "(Postfix)") {
					t.Errorf("the other MTA's Received: should be kept: %q", got)
				}
				forgedOrigin := headerLines(data, "X-Mailshim-Forged-Origin")
				wantForged := 1
				if header != "" {
					wantForged = 2 // x-origin is ours too
				}
				if len(forgedOrigin) != wantForged || !strings.Contains(forgedOrigin[0], "uid=0 user=root script=/etc/cron.daily/backup") {
					t.Errorf("renamed origin fields: %q", forgedOrigin)
				}
				if got := headerLines(data, "X-Mailshim-Forged-Received"); len(got) != 1 || !strings.Contains(got[0], "from uid 0 (root) by web1.example.com (mailshim)") {
					t.Errorf("renamed Received fields: %q", got)
				}
				if !strings.Contains(s.log(), "event=forged-trace ") {
					t.Errorf("no forged-trace log line:\n%s", s.log())
				}
			})
		}
	}
}
