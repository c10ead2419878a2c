package attack

// SMTP smuggling: a second transaction hidden in a message's body.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// An application's user who controls part of a body passed to sendmail
// -bs (a contact form) cannot end the message early and inject a second
// transaction with recipients of their own.
func TestBSSmuggling(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	for _, c := range smtptest.SmugglingCases() {
		t.Run(c.Name, func(t *testing.T) {
			e.use(t)
			tried(t, "a -bs DATA with "+fmt.Sprintf("%q", c.End)+" followed by a second transaction",
				"no message reached the smuggled recipient; at most one message stored")
			before := len(e.up.Messages())
			r := e.sendmail(run{uid: nobody, stdin: smtptest.SmugglingDialogue(c, "webapp@example.org", "owner@example.org")}, "-bs")
			if n := strings.Count(r.stdout, " Ok: queued as "); n > 1 {
				t.Errorf("one -bs session stored %d messages:\n%s", n, r.stdout)
			}
			if strings.Contains(r.stdout, "\r\n521 ") && (r.code != 65 || strings.Count(r.stderr, "\n") != 1) {
				t.Errorf("a refused session must exit 65 with one line on stderr: %v", r)
			}
			e.drained(t)
			for _, m := range e.up.Messages()[before:] {
				for _, to := range m.To {
					if strings.Contains(to, smtptest.SmuggledRcpt) {
						t.Errorf("the smuggled transaction was delivered to %s:\n%s", to, m.Data)
					}
				}
			}
		})
	}
}
