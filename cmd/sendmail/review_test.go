package main

// Tests for the findings of the security review of the setgid sendmail
// (/work/review/sendmail-security.md): F1 header limits shared with
// relayd's pickup, F6 the refusal naming the option, F4 hostile rlimits.

import (
	"bufio"
	"fmt"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
)

// F1: every message sendmail stores is readable by pickup's scanner
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
