package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// Mail from the system's daemons (sudo, atd, cron, unattended-upgrades)
// has root or another local user as its envelope sender: root@hostname.
// When the upstream refuses such a message for good (most often "553
// sender not owned by user" from a provider), the bounce goes to that
// sender, and root must reach the admin through [aliases] as the message
// itself would: root@hostname is a name of this send-only host, which
// receives no mail. The inputs are the programs' own, byte for byte
// (testdata/daemons/README).
func TestBounceToLocalSenderGoesThroughAliases(t *testing.T) {
	for _, tc := range []struct {
		name, eml string
		args      []string
	}{
		{"sudo", "sudo-mail-always.eml", []string{"-t"}},
		{"atd", "atd-job-root.eml", []string{"-i", "root"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", "daemons", tc.eml))
			if err != nil {
				t.Fatal(err)
			}
			up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, stage, arg string) error {
				if stage == smtptest.StageMail && arg != "" {
					return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address rejected: not owned by user relay@example.com"}
				}
				return nil
			}})
			s := newSite(t, up, siteOpts{})
			s.start()
			cmd := s.sendmailCmd(tc.args...)
			cmd.Stdin = strings.NewReader(string(in))
			if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
				t.Fatalf("sendmail %q: %v %q", tc.args, err, out)
			}
			msgs, err := up.WaitFor(1, 20*time.Second)
			if err != nil {
				t.Fatalf("no bounce reached the upstream: %v\n%s", err, s.log())
			}
			b := msgs[0]
			if b.From != "" || strings.Join(b.To, " ") != "ops@example.com" {
				t.Errorf("bounce sent from %q to %q, want from <> to ops@example.com ([aliases] root)\n%s", b.From, b.To, s.log())
			}
			if !strings.Contains(string(b.Data), "553 5.7.1 Sender address rejected") {
				t.Errorf("bounce does not quote the upstream's reply:\n%s", b.Data)
			}
		})
	}
}
