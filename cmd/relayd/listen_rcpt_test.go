package main

import (
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// The listener applies the caller's own recipient limit ([policy]
// max_recipients, per UID) at RCPT, as Postfix's smtpd_recipient_limit
// does: the recipient over it gets 452 4.5.3, the ones before it stand
// and the message goes to them, and the client sends the rest in another
// transaction (RFC 5321 4.5.3.1.8). Pipelined RCPTs get the same replies,
// one each. EHLO promises no more recipients (LIMITS RCPTMAX) than the
// caller may give.
func TestListenRecipientLimitPerUID(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf +
		"\n[policy]\nnotice_to = \"\"\n[policy.\"*\"]\nmax_recipients = 3\n[policy.root]\nmax_recipients = 2\n"})
	d := s.start()
	defer d.term(t)
	addrs := s.listenAddrs()

	// Root (this test's UID; limit 2), everything up to DATA in one write.
	r := dialRaw(t, "tcp", addrs["tcp4"])
	r.reply()
	r.send("EHLO x\r\n")
	for {
		l, err := r.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`LIMITS .*RCPTMAX=(\d+)`).FindStringSubmatch(l); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > 2 {
				t.Errorf("EHLO advertises %q to a caller allowed 2 recipients", strings.TrimSpace(l))
			}
		}
		if len(l) < 4 || l[3] != '-' {
			break
		}
	}
	r.send("MAIL FROM:<root@web1.example.com>\r\n" +
		"RCPT TO:<r1@example.net>\r\nRCPT TO:<r2@example.net>\r\nRCPT TO:<r3@example.net>\r\nRCPT TO:<r4@example.net>\r\n" +
		"DATA\r\n")
	for i, want := range []string{"250 ", "250 ", "250 ", "452 4.5.3 Too many recipients", "452 4.5.3 Too many recipients", "354 "} {
		if got := r.reply(); !strings.HasPrefix(got, want) {
			t.Fatalf("pipelined reply %d: %q, want %q", i, got, want)
		}
	}
	r.send("Subject: root over the limit\r\n\r\nbody\r\n.\r\n")
	if got := r.reply(); !strings.HasPrefix(got, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("after DATA: %q", got)
	}
	r.cmd("QUIT")
	// The refusal is logged, once for the transaction (not once per
	// recipient: a client may send thousands), with the limit.
	waitfor.True(t, "the 452's log line", 10*time.Second, func() bool { return strings.Contains(s.log(), "event=smtp-error") })
	var refusals []string
	for _, l := range strings.Split(s.log(), "\n") {
		if strings.Contains(l, "event=smtp-error") {
			refusals = append(refusals, l)
		}
	}
	if len(refusals) != 1 || !strings.Contains(refusals[0], " uid=0 ") || !strings.Contains(refusals[0], "limit of 2 recipients") ||
		!strings.Contains(refusals[0], "from=root@web1.example.com") {
		t.Errorf("log lines for the 452s: %q, want one smtp-error line for uid 0 naming the limit of 2 recipients", refusals)
	}

	// www-data (limit 3 from "*") with smtplib, which sends the refused
	// recipients again in another transaction until none is left.
	cmd := exec.Command("setpriv", "--reuid=33", "--regid=33", "--clear-groups", "/usr/bin/python3", "-c", `
import smtplib, sys
c = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
c.ehlo("x")
rcpts = ["w%d@example.net" % i for i in range(1, 6)]
n = 0
while rcpts:
    n += 1
    refused = c.sendmail("www-data@web1.example.com", rcpts, "Subject: www-data part %d\r\n\r\nbody\r\n" % n)
    print(n, sorted((k, v[0], v[1].decode()) for k, v in refused.items()))
    rcpts = sorted(refused)
c.quit()
`, addrs["tcp4"][strings.LastIndexByte(addrs["tcp4"], ':')+1:])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib as www-data: %v\n%s", err, out)
	}
	want := "1 [('w4@example.net', 452, '4.5.3 Too many recipients'), ('w5@example.net', 452, '4.5.3 Too many recipients')]\n2 []\n"
	if string(out) != want {
		t.Errorf("smtplib as www-data:\n%s\nwant\n%s", out, want)
	}

	waitfor.True(t, "delivery", 30*time.Second, func() bool { return len(up.Messages()) >= 3 })
	time.Sleep(200 * time.Millisecond)
	got := map[string]string{}
	for _, m := range up.Messages() {
		subj := regexp.MustCompile(`Subject: ([^\r\n]*)`).FindStringSubmatch(string(m.Data))
		to := append([]string(nil), m.To...)
		sort.Strings(to)
		got[subj[1]] = strings.Join(to, " ")
	}
	for subj, to := range map[string]string{
		"root over the limit": "r1@example.net r2@example.net",
		"www-data part 1":     "w1@example.net w2@example.net w3@example.net",
		"www-data part 2":     "w4@example.net w5@example.net",
	} {
		if got[subj] != to {
			t.Errorf("%q delivered to %q, want %q", subj, got[subj], to)
		}
	}
	if len(got) != 3 {
		t.Errorf("delivered: %v", got)
	}
	if strings.Contains(s.log(), "event=policy ") {
		t.Errorf("a message was refused by the policy after its data:\n%s", s.log())
	}
}
