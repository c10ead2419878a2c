package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/policy"
	"github.com/mailshim/mailshim/pkg/queue"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

const nobodyUID = 65534

// newPolicySite is a site whose [policy] sends no notices and whose
// [policy."<account>"] table holds rules (TOML lines).
func newPolicySite(t *testing.T, account, rules string) (*smtptest.Server, *site) {
	t.Helper()
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(fmt.Sprintf("\n[policy]\nnotice_to = \"\"\n[policy.%q]%s", account, rules))
	return up, s
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sending as another UID needs root (CI runs as root)")
	}
}

// dropAs writes n maildrop files owned by uid, as sendmail run by that
// user would (the owner is what relayd believes), with Subject "<tag> <i>".
func (s *site) dropAs(uid int, tag string, n int) []string {
	s.t.Helper()
	ids := s.dropOrigin(spool.Origin{UID: uid, GID: uid, Via: "maildrop", Mode: "t", Script: "/srv/www/" + tag + ".php"}, tag, n)
	for _, id := range ids {
		// The owner is set after the link: call this while relayd is
		// not running, or it may pick the file up as ours first.
		if err := os.Chown(filepath.Join(s.spool, spool.DirMaildrop, id), uid, -1); err != nil {
			s.t.Fatal(err)
		}
	}
	return ids
}

// sendmailAs runs the real sendmail as uid (falling back to the
// submission socket, as a sendmail that is not setgid does) and returns
// its exit code and stderr.
func (s *site) sendmailAs(uid int, subject string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sendmailBin, "-t", "-i")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath, "SCRIPT_FILENAME=/srv/www/" + subject + ".php"}
	cmd.Stdin = strings.NewReader("From: app@example.org\nTo: rcpt@example.net\nSubject: " + subject + "\n\nbody\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Dir = "/"
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return 0, stderr.String()
}

func (s *site) queueJSON(args ...string) []queue.ListEntry {
	s.t.Helper()
	out, stderr, code := runCmd(s.t, []string{"MAILSHIM_CONFIG=" + s.cfgPath}, relaydBin, append([]string{"queue", "list", "--json"}, args...)...)
	if code != 0 {
		s.t.Fatalf("queue list --json %v: %d %s", args, code, stderr)
	}
	var l []queue.ListEntry
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	return l
}

// countTo counts the delivered messages to rcpt.
func countTo(up *smtptest.Server, rcpt string) int {
	n := 0
	for _, m := range up.Messages() {
		for _, r := range m.To {
			if r == rcpt {
				n++
			}
		}
	}
	return n
}

// An account over its rate with action "hold": what fits is delivered,
// the rest is held; one notice goes to notice_to, with the account, the
// limit and its scripts; "release --user" delivers the held ones.
func TestPolicyHoldNoticeRelease(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy]
notice_to = "abuse@example.com"
[policy."*"]
messages_per_hour = 5
action = "hold"
`)
	s.dropAs(nobodyUID, "burst", 12)
	s.start()
	waitfor.True(t, "12 messages picked up", 30*time.Second, func() bool { return strings.Count(s.log(), "event=pickup ") >= 13 })
	if _, err := up.WaitFor(6, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	held := s.queueJSON("--held", "--user", "nobody")
	if len(held) != 7 {
		t.Fatalf("%d held, want 7\n%s", len(held), s.log())
	}
	for _, e := range held {
		if e.State != spool.Held || e.UID != nobodyUID || !strings.Contains(e.Reason, "messages_per_hour=5") {
			t.Errorf("held entry %+v", e)
		}
	}
	if n := countTo(up, "rcpt@example.net"); n != 5 {
		t.Errorf("%d delivered before the release, want 5", n)
	}
	if n := countTo(up, "abuse@example.com"); n != 1 {
		t.Fatalf("%d notices, want 1\n%s", n, s.log())
	}
	var notice string
	for _, m := range up.Messages() {
		if m.To[0] == "abuse@example.com" {
			notice = string(m.Data)
		}
	}
	for _, want := range []string{"Subject: mailshim: account nobody tripped messages_per_hour (hold)", "uid 65534", "messages_per_hour=5",
		"/srv/www/burst.php", "Subject: \"burst", "relayd queue release --user nobody"} {
		if !strings.Contains(notice, want) {
			t.Errorf("notice lacks %q:\n%s", want, notice)
		}
	}
	if n := strings.Count(s.log(), "event=limit-tripped "); n != 1 {
		t.Errorf("%d limit-tripped lines, want 1", n)
	}
	if n := strings.Count(s.log(), "event=policy "); n != 7 {
		t.Errorf("%d policy lines, want 7", n)
	}
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	out, stderr, code := runCmd(t, env, relaydBin, "queue", "release", "--user", "nobody")
	if code != 0 || out != "7 held message(s) of nobody released\n" {
		t.Fatalf("release: %d %q %q", code, out, stderr)
	}
	if _, err := up.WaitFor(13, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	subj := s.subjects()
	for i := 0; i < 12; i++ {
		if subj[fmt.Sprintf("burst %d", i)] != 1 {
			t.Errorf("burst %d delivered %d times", i, subj[fmt.Sprintf("burst %d", i)])
		}
	}
	waitfor.True(t, "an empty queue", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
}

// With action "refuse", the submission socket refuses at once: sendmail
// (not setgid, as nobody) exits 77 with one line naming the limit, and
// nothing is stored. A maildrop file over the limit, already accepted by
// sendmail, is bounced to its sender with the same line.
func TestPolicyRefuse(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "nobody", `
messages_per_hour = 2
action = "refuse"
`)
	d := s.start()
	for i := 0; i < 2; i++ {
		if code, stderr := s.sendmailAs(nobodyUID, fmt.Sprintf("ok%d", i)); code != 0 {
			t.Fatalf("message %d: exit %d %s", i, code, stderr)
		}
	}
	code, stderr := s.sendmailAs(nobodyUID, "over")
	if code != 77 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "rate limit messages_per_hour=2 reached ([policy.nobody])") {
		t.Fatalf("over the limit: exit %d, stderr %q", code, stderr)
	}
	if _, err := up.WaitFor(2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// The maildrop: accepted by sendmail, so refused as a bounce (relayd
	// stopped meanwhile: the count is kept across the restart).
	if code := d.term(t); code != 0 {
		t.Fatalf("relayd exit %d", code)
	}
	s.dropAs(nobodyUID, "late", 1)
	s.start()
	msgs, err := up.WaitFor(3, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	dsn := msgs[2]
	if dsn.From != "" || dsn.To[0] != "app@example.org" || !strings.Contains(string(dsn.Data), "messages_per_hour=2") || !strings.Contains(string(dsn.Data), "Subject: late 0") {
		t.Errorf("bounce: from %q to %v\n%s", dsn.From, dsn.To, dsn.Data)
	}
	if s.subjects()["over"] != 0 || s.subjects()["late 0"] != 0 {
		t.Errorf("a refused message was delivered: %v", s.subjects())
	}
	if !strings.Contains(s.log(), "event=rejected ") || !strings.Contains(s.log(), "event=limit-tripped ") {
		t.Errorf("log:\n%s", s.log())
	}
	waitfor.True(t, "an empty queue", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
}

// Static limits refuse whatever the action, for root too: a From: domain
// the account may not use, too many recipients, too large.
func TestPolicyStaticLimits(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy."*"]
from_domains = ["example.org"]
max_recipients = 2
max_size = "1KB"
action = "hold"
`)
	s.start()
	for _, tc := range []struct {
		rcpts []string
		body  string
		want  string
	}{
		{[]string{"a@example.net"}, "From: ceo@bank.example\nSubject: x\n\nx\n", `the From: address "ceo@bank.example" is not in a domain this account may send from (from_domains ([policy."*"]))`},
		{[]string{"a@example.net", "b@example.net", "c@example.net"}, "From: a@example.org\n\nx\n", "3 recipients, more than the 2 allowed per message"},
		{[]string{"a@example.net"}, "From: a@example.org\n\n" + strings.Repeat("x", 2000) + "\n", "larger than the 1024 bytes allowed (max_size"},
	} {
		m := &spool.Meta{Env: spool.Envelope{Recipients: tc.rcpts}}
		_, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader(tc.body))
		var se *submit.Error
		if !errors.As(err, &se) || se.Code != 77 || !strings.Contains(se.Msg, tc.want) {
			t.Errorf("%v: %v, want 77 %q", tc.rcpts, err, tc.want)
		}
	}
	m := &spool.Meta{Env: spool.Envelope{Recipients: []string{"a@example.net"}}}
	if _, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader("From: a@example.org\n\nfine\n")); err != nil {
		t.Fatal(err)
	}
	if msgs, err := up.WaitFor(1, 30*time.Second); err != nil || len(msgs) != 1 {
		t.Fatalf("%v %d", err, len(msgs))
	}
	if n := strings.Count(s.log(), "event=policy "); n != 3 {
		t.Errorf("%d policy lines, want 3\n%s", n, s.log())
	}
}

// With action "defer", messages over the rate are queued and sent later
// at the allowed rate: 60 a minute is one a second after the burst (70
// dropped at once: the pickup would have to take over 10 s for none to
// be deferred).
func TestPolicyDefer(t *testing.T) {
	needRoot(t)
	up, s := newPolicySite(t, "nobody", `
messages_per_minute = 60
action = "defer"
`)
	s.dropAs(nobodyUID, "flood", 70)
	s.start()
	if _, err := up.WaitFor(60, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	deferred := 0
	for _, e := range s.queueJSON("--user", "nobody") {
		if e.State == spool.Deferred && strings.Contains(e.Reason, "deferred by policy") {
			deferred++
		}
	}
	if got := countTo(up, "rcpt@example.net"); got+deferred != 70 || deferred == 0 {
		t.Errorf("%d delivered, %d deferred by policy: want 70 in all, some deferred", got, deferred)
	}
	if _, err := up.WaitFor(70, 40*time.Second); err != nil {
		t.Fatalf("the deferred ones were not sent at the allowed rate: %v\n%s", err, s.log())
	}
	if n := strings.Count(s.log(), "event=policy ") + 60; n < 70 {
		t.Errorf("%d policy lines", n-60)
	}
	for i := 0; i < 70; i++ {
		if s.subjects()[fmt.Sprintf("flood %d", i)] != 1 {
			t.Errorf("flood %d delivered %d times", i, s.subjects()[fmt.Sprintf("flood %d", i)])
		}
	}
}

// The counters survive relayd being killed mid-burst: after a restart the
// account does not get a fresh allowance, and the notice is not sent
// again for the same episode.
func TestPolicySurvivesRestart(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy]
notice_to = "abuse@example.com"
[policy.nobody]
messages_per_hour = 5
`)
	s.dropAs(nobodyUID, "before", 4)
	d := s.start()
	if _, err := up.WaitFor(4, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	d.kill()
	s.dropAs(nobodyUID, "after", 4)
	s.start()
	waitfor.True(t, "8 messages picked up", 30*time.Second, func() bool { return strings.Count(s.log(), "event=pickup id=") >= 8 })
	if _, err := up.WaitFor(6, 30*time.Second); err != nil { // 5 + the notice
		t.Fatalf("%v\n%s", err, s.log())
	}
	if held := s.queueJSON("--held"); len(held) != 3 {
		t.Errorf("%d held after the restart, want 3 (the allowance was 5, 4 used before)\n%s", len(held), s.log())
	}
	if n := countTo(up, "rcpt@example.net"); n != 5 {
		t.Errorf("%d delivered, want 5", n)
	}
	// The episode's notice was sent before the restart, not again after.
	if n := countTo(up, "abuse@example.com"); n != 1 {
		t.Errorf("%d notices, want 1", n)
	}
}

// freeze holds the waiting mail of an account and everything new it
// sends until thaw; delete --user wants the count confirmed.
func TestFreezeThawDelete(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[policy]\nnotice_to = \"\"\n")
	s.start()
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	out, stderr, code := runCmd(t, env, relaydBin, "queue", "freeze", "--user", "nobody")
	if code != 0 || !strings.HasPrefix(out, "nobody: frozen: everything new it sends is held; 0 waiting message(s) held") {
		t.Fatalf("freeze: %d %q %q", code, out, stderr)
	}
	for i := 0; i < 3; i++ {
		if code, stderr := s.sendmailAs(nobodyUID, fmt.Sprintf("frozen%d", i)); code != 0 {
			t.Fatalf("sendmail while frozen: %d %s", code, stderr)
		}
	}
	if held := s.queueJSON("--held", "--user", "uid:65534"); len(held) != 3 || !strings.Contains(held[0].Reason, "frozen") {
		t.Fatalf("held while frozen: %+v", held)
	}
	if out, stderr, code = runCmd(t, env, relaydBin, "queue", "thaw", "--user", "nobody"); code != 0 || !strings.Contains(out, "nobody: thawed") {
		t.Fatalf("thaw: %d %q %q", code, out, stderr)
	}
	if code, stderr := s.sendmailAs(nobodyUID, "thawed"); code != 0 {
		t.Fatalf("sendmail after thaw: %d %s", code, stderr)
	}
	if _, err := up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody")
	if code != 64 || !strings.Contains(stderr, "nobody has 3 message(s) queued") || !strings.Contains(stderr, "--confirm 3") {
		t.Fatalf("delete without confirmation: %d %q", code, stderr)
	}
	if _, stderr, code = runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody", "--confirm", "2"); code != 1 || !strings.Contains(stderr, "not 2: nothing deleted") {
		t.Fatalf("delete with a wrong count: %d %q", code, stderr)
	}
	if out, stderr, code = runCmd(t, env, relaydBin, "queue", "delete", "--user", "nobody", "--confirm", "3"); code != 0 || out != "3 message(s) of nobody deleted\n" {
		t.Fatalf("delete: %d %q %q", code, out, stderr)
	}
	waitfor.True(t, "an empty queue", 20*time.Second, func() bool { return len(s.leftovers()) == 0 })
	if up.Count() != 1 {
		t.Errorf("%d delivered, want only the one sent after thaw", up.Count())
	}
}

// Every rate key of the configuration reaches the policy under its name.
func TestPolicyRulesFromConfig(t *testing.T) {
	c, err := config.Parse("p.conf", []byte(`
[policy.bob]
messages_per_minute = 1
messages_per_hour = 2
messages_per_day = 3
recipients_per_minute = 4
recipients_per_hour = 5
recipients_per_day = 6
max_recipients = 7
max_size = "8KB"
from_domains = ["example.org"]
action = "defer"
`))
	if err != nil {
		t.Fatal(err)
	}
	l := policyRules(c).Resolve(policy.Account{UID: 1000, User: "bob"})
	for r := policy.Rate(0); r < policy.NumRates; r++ {
		if l.Rates[r] != int(r)+1 || l.Source[r.String()] != "bob" {
			t.Errorf("%s = %d from %s", r, l.Rates[r], l.Source[r.String()])
		}
	}
	if l.MaxRecipients != 7 || l.MaxSize != 8<<10 || l.Action != policy.Defer || l.FromDomains[0] != "example.org" {
		t.Errorf("%+v", l)
	}
}

// frozenNobody starts relayd on a site with [policy] and no notices,
// freezes nobody's account, and returns the site, its upstream and the
// environment that points relayd's commands at the site.
func frozenNobody(t *testing.T) (*site, *smtptest.Server, []string) {
	t.Helper()
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig("\n[policy]\nnotice_to = \"\"\n")
	s.start()
	env := []string{"MAILSHIM_CONFIG=" + s.cfgPath}
	if _, stderr, code := runCmd(t, env, relaydBin, "queue", "freeze", "--user", "nobody"); code != 0 {
		t.Fatalf("freeze: exit %d, stderr %q", code, stderr)
	}
	return s, up, env
}

// mailq --json (sendmail -bp --json) lists the caller's own messages as
// JSON, with their state and why they wait; root sees every message.
func TestMailqJSON(t *testing.T) {
	s, _, env := frozenNobody(t)
	if code, stderr := s.sendmailAs(nobodyUID, "mine"); code != 0 {
		t.Fatal(stderr)
	}
	if _, _, code := runCmd(t, env, relaydBin, "queue", "freeze", "--user", "daemon"); code != 0 {
		t.Fatal("freeze")
	}
	if code, stderr := s.sendmailAs(1, "theirs"); code != 0 {
		t.Fatal(stderr)
	}
	mailq := func(uid int) []queue.ListEntry {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, sendmailBin, "-bp", "--json")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "MAILSHIM_CONFIG=" + s.cfgPath}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mailq --json as %d: %v", uid, err)
		}
		var l []queue.ListEntry
		if err := json.Unmarshal(out, &l); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return l
	}
	l := mailq(nobodyUID)
	if len(l) != 1 || l[0].UID != nobodyUID || l[0].State != spool.Held || !strings.Contains(l[0].Reason, "frozen") || l[0].Recipients[0] != "rcpt@example.net" {
		t.Errorf("nobody's mailq --json: %+v", l)
	}
	if l := mailq(0); len(l) != 2 {
		t.Errorf("root's mailq --json: %+v", l)
	}
}
