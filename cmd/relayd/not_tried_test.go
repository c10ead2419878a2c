package main

// A delivery batch whose upstream fails on one of its messages: the
// messages after it are not sent, and their log lines (and the metrics
// built from them) must say so, not repeat the other message's failure.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/metrics"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The upstream answers the first message of a batch of four with "421
// 4.3.2" to its MAIL (it is going away: its breaker opens) and takes
// everything after that. The three messages queued behind it are not
// sent in that pass: each gets event=delivery status=deferred with
// tried=no and a reason that says it was not tried and why, neither the
// other message's reply nor its stage; their event=deferred lines (whose
// reason is mailq's last reply) say the same; and the metrics count one deferred recipient and one upstream
// error (the one the upstream refused), not four.
func TestNotTriedMessagesSaySo(t *testing.T) {
	needRoot(t)
	var refused atomic.Int32
	up := newUpstream(t, smtptest.Options{Hook: func(ctx context.Context, st, arg string) error {
		if st == smtptest.StageMail && arg == "stuck@example.org" && refused.Add(1) == 1 {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing for maintenance"}
		}
		return nil
	}})
	s := newSite(t, up, siteOpts{retry: `["1h"]`, concurrency: 1})
	sock := filepath.Join(s.dir, "metrics.sock")
	s.writeConfig(fmt.Sprintf("\n[metrics]\nlisten = %q\n", sock))
	o := spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "maildrop", Mode: "t"}
	// The failing message first, then the others: one batch.
	s.dropEnv(o, spool.Envelope{Sender: "stuck@example.org", Recipients: []string{"stuck-rcpt@example.net"}}, 1,
		func(int) string { return "From: stuck@example.org\nSubject: stuck\n\nbody\n" })
	time.Sleep(2 * time.Millisecond)
	others := s.drop("other", 3)
	s.start()
	waitfor.True(t, "every message", 30*time.Second, func() bool {
		got := s.subjects()
		return got["stuck"] > 0 && got["other 0"] > 0 && got["other 1"] > 0 && got["other 2"] > 0
	})
	waitfor.True(t, "the last removal", 10*time.Second, func() bool { return strings.Count(s.log(), "event=removed ") >= 4 })
	log := s.log()
	var notTried, own int
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "event=delivery ") || !strings.Contains(l, "status=deferred") {
			continue
		}
		switch {
		case strings.Contains(l, "to=stuck-rcpt@example.net"):
			own++
			if strings.Contains(l, "tried=no") {
				t.Errorf("the message the upstream refused is logged as not tried:\n%s", l)
			}
		case strings.Contains(l, "to=rcpt@example.net"):
			notTried++
			if !strings.Contains(l, " tried=no") || !strings.Contains(l, `reason="not tried: `) {
				t.Errorf("a message of the batch that was not sent does not say so (tried=no, reason=\"not tried: ...\"):\n%s", l)
			}
			if strings.Contains(l, "closing for maintenance\" stage=") || strings.Contains(l, "stage=mail") || strings.Contains(l, `reply="421`) {
				t.Errorf("a message that was not sent carries the other message's reply and stage:\n%s", l)
			}
		}
	}
	if own != 1 || notTried != 3 {
		t.Errorf("%d deferred lines for the refused message and %d for the others, want 1 and 3", own, notTried)
	}
	for _, id := range others {
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "event=deferred id="+id+" ") && !strings.Contains(l, `reason="not tried: `) {
				t.Errorf("the deferral of %s, not tried, gives another reason:\n%s", id, l)
			}
		}
	}
	fams := scrape(t, sock)
	if v := value(fams, metrics.Deliveries, map[string]string{"status": "deferred"}); v != 1 {
		t.Errorf("%s{status=\"deferred\"} = %v, want 1 (the recipient the upstream refused; the others were not tried)", metrics.Deliveries, v)
	}
	if v := value(fams, metrics.UpstreamErrors, nil); v != 1 {
		t.Errorf("%s = %v, want 1 (the others were not tried)", metrics.UpstreamErrors, v)
	}
	if v := value(fams, metrics.Deliveries, map[string]string{"status": "sent"}); v != 4 {
		t.Errorf("%s{status=\"sent\"} = %v, want 4", metrics.Deliveries, v)
	}
	if t.Failed() {
		t.Logf("log:\n%s", s.logTail(8000))
	}
}
