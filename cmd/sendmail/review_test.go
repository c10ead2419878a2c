package main

// Tests of the setgid sendmail at its edges: header limits shared with
// relayd's pickup, refusals that name the option refused, and hostile
// resource limits.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/origin"
)

// Every message sendmail stores is readable by pickup's scanner
// (message.ReadHeader with the default limits, which pickup calls), and
// what that scanner would refuse is refused with 65 and nothing stored.
func TestHeaderLimitsSharedWithPickup(t *testing.T) {
	needBinary(t)
	var to []string
	for i := 0; i < 4000; i++ {
		to = append(to, fmt.Sprintf("user%d@example.org", i))
	}
	accepted := map[string]string{
		"4000 recipients on one To: line": "To: " + strings.Join(to, ", ") + "\nSubject: long unfolded To\n\nbody\n",
		"obsolete space before colon":     "Subject: t\nX-A : 1\nFrom: ceo@example.org\n\nbody\n",
		"long first body line":            "Subject: t\n" + strings.Repeat("b", 2*message.MaxField) + "\n",
	}
	for name, in := range accepted {
		t.Run(name, func(t *testing.T) {
			s := newSpool(t, false, "")
			checkOK(t, runSendmail(t, invocation{args: []string{"-t", "-i", "a@example.org"}, conf: s.conf, stdin: strings.NewReader(in)}))
			m := s.one(t)
			h, err := message.ReadHeader(bufio.NewReader(strings.NewReader(m.body)), 0)
			if err != nil {
				t.Fatalf("pickup's scanner refuses the stored message: %v", err)
			}
			if name == "obsolete space before colon" && (h.Get("From") != "ceo@example.org" || !h.Has("X-A")) {
				t.Errorf("fields after \"X-A : 1\" lost: %q", m.body)
			}
			if name == "4000 recipients on one To: line" && len(m.meta.Env.Recipients) != 4001 {
				t.Errorf("%d recipients", len(m.meta.Env.Recipients))
			}
		})
	}
	big := strings.Repeat("c", message.MaxField-1000)
	refused := map[string]string{
		"field over 1 MiB":    "To: a@example.org\nX-Big: " + strings.Repeat("x", message.MaxField) + "\n\nbody\n",
		"section over 8 MiB":  "To: a@example.org\n" + strings.Repeat("X-Big: "+big+"\n", 9) + "\nbody\n",
		"folded field 1 MiB+": "To: a@example.org\nX-Big: x\n" + strings.Repeat(" "+strings.Repeat("y", 998)+"\n", 1100) + "\nbody\n",
	}
	for name, in := range refused {
		t.Run(name, func(t *testing.T) {
			s := newSpool(t, false, "max_message_size = \"100MB\"\n")
			r := runSendmail(t, invocation{args: []string{"-t", "-i"}, conf: s.conf, stdin: strings.NewReader(in)})
			checkFailure(t, r, 65, "header is too large")
			s.none(t)
		})
	}
}

const policyConf = "[policy.allowed_senders]\n\"*\" = [\"%u@example.com\", \"*@shop.example.com\"]\n"

// Exit 77: the sender policy refuses -f/-r and MAIL FROM in -bs with one
// line and a hint naming the key; allowed senders and no -f still work.
func TestSenderPolicy(t *testing.T) {
	needBinary(t)
	user := origin.UserName(os.Getuid())
	if user == "" {
		t.Skip("SKIPPED: the test user has no name in /etc/passwd")
	}
	s := newSpool(t, false, policyConf)
	for _, args := range [][]string{
		{"-t", "-i", "-f", "ceo@example.com"},
		{"-t", "-i", "-rceo@example.com"},
		{"-t", "-i", "-f", "root@evil.example"},
	} {
		r := runSendmail(t, invocation{args: args, conf: s.conf, stdin: strings.NewReader(simple)})
		checkFailure(t, r, 77, "is not allowed for user "+user)
		if !strings.Contains(r.stderr, "hint: ") || !strings.Contains(r.stderr, "[policy] allowed_senders") {
			t.Errorf("no hint naming the key: %q", r.stderr)
		}
		s.none(t)
	}
	for _, args := range [][]string{
		{"-t", "-i", "-f", user + "@example.com"},
		{"-t", "-i", "-f", "orders@shop.example.com"},
		{"-t", "-i", "-f", user},
		{"-t", "-i"},
	} {
		checkOK(t, runSendmail(t, invocation{args: args, conf: s.conf, stdin: strings.NewReader(simple)}))
	}
	if n := len(s.files(t)); n != 4 {
		t.Fatalf("%d messages stored, want 4", n)
	}

	// -bs: refused at MAIL FROM (553 5.7.1), the session goes on, the
	// exit status is 77.
	s2 := newSpool(t, false, policyConf)
	in := "EHLO client\r\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<b@example.org>\r\n" +
		"MAIL FROM:<" + user + "@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n"
	r := runSendmail(t, invocation{args: []string{"-bs"}, conf: s2.conf, stdin: strings.NewReader(in)})
	if r.code != 77 || !strings.Contains(r.stdout, "553 5.7.1 sender address \"ceo@example.com\" is not allowed") ||
		!strings.Contains(r.stdout, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("-bs: %+v", r)
	}
	if m := s2.one(t); m.meta.Env.Sender != user+"@example.com" {
		t.Errorf("sender %q", m.meta.Env.Sender)
	}
}

// The same as nobody through the setgid copy: the policy binds the UID
// the kernel gives, not anything the caller says.
func TestSetgidSenderPolicy(t *testing.T) {
	needRoot(t)
	s := newSpool(t, true, policyConf)
	r := runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i", "-f", "root@example.com"}, stdin: strings.NewReader(simple)})
	checkFailure(t, r, 77, "is not allowed for user nobody (uid 65534)")
	s.none(t)
	checkOK(t, runSendmail(t, invocation{nobody: true, args: []string{"-t", "-i", "-f", "nobody@example.com"}, stdin: strings.NewReader(simple)}))
	if m := s.one(t); m.st.Uid != uint32(nobodyUID) || m.meta.Env.Sender != "nobody@example.com" {
		t.Errorf("uid %d sender %q", m.st.Uid, m.meta.Env.Sender)
	}
}

// A refusal names the whole word that was refused, not an
// innocent option it starts with.
func TestRefusalNamesTheWord(t *testing.T) {
	for argv, want := range map[string]string{
		"-oi-X/tmp/x":          `option "-oi-X/tmp/x" is refused: it names a path`,
		"-oQ/tmp":              `option -oQ is refused`,
		"-Z/tmp/x":             `option "-Z/tmp/x" is refused: it names a path`,
		"-OFoo=/tmp/x":         `option "-OFoo=/tmp/x" is refused: it names a path`,
		"-O QueueDirectory=/x": `option -O QueueDirectory is refused`,
		"-ptest/x":             `option "-ptest/x" is refused: it names a path`,
		"-X/var/www/x.php":     `option -X is refused`,
	} {
		_, err := parseArgs("sendmail", strings.Fields(argv))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", argv, err, want)
		}
	}
	// End to end: one line, exit 64, nothing stored.
	needBinary(t)
	s := newSpool(t, false, "")
	r := runSendmail(t, invocation{args: []string{"-oi-X/tmp/x", "-t"}, conf: s.conf, stdin: strings.NewReader(simple)})
	checkFailure(t, r, 64, `option "-oi-X/tmp/x" is refused`)
	s.none(t)
}

// Hostile resource limits end in an honest exit — 0 with the message
// stored, or a non-zero status that is not 75 with nothing stored — and,
// for a file limit too low to run, one line that says so.
func TestHostileRlimits(t *testing.T) {
	needBinary(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("SKIPPED: prlimit (util-linux) not installed")
	}
	setgid := []bool{false}
	if os.Geteuid() == 0 && sgPath != "" {
		setgid = append(setgid, true) // as nobody through the setgid copy
	} else {
		t.Log("setgid cases SKIPPED: need root and the setgid copy")
	}
	for _, sg := range setgid {
		for _, lim := range []string{"--nofile=4", "--nofile=6", "--nofile=8", "--nofile=12", "--nofile=16", "--as=100000000", "--as=400000000"} {
			t.Run(fmt.Sprintf("setgid=%v/%s", sg, lim), func(t *testing.T) { hostileRlimit(t, sg, lim) })
		}
	}
}

func hostileRlimit(t *testing.T, sg bool, lim string) {
	t.Helper()
	s := newSpool(t, sg, "")
	inv := invocation{wrap: []string{"prlimit", lim}, args: []string{"-t", "-i"}, conf: s.conf, stdin: strings.NewReader(simple), nobody: sg}
	if sg {
		inv.conf = ""
	}
	r := runSendmail(t, inv)
	switch {
	case r.code == 0:
		if len(s.files(t)) != 1 {
			t.Fatalf("exit 0 but %d messages stored", len(s.files(t)))
		}
	case r.code == 75:
		t.Fatalf("exit 75 (a caller may read it as queued): %q", r.stderr)
	default:
		s.none(t)
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(lim, "--nofile=")); n > 0 && n < minNOFILE {
		checkFailure(t, r, 71, "the open file limit (RLIMIT_NOFILE) is")
	}
	t.Logf("%s: exit %d %q", lim, r.code, firstLine(r.stderr))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
