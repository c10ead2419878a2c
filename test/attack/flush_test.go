package attack

// A local user's flush (sendmail -q, the users' door to the control
// socket) against other users' deferred mail.

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// rcptCounter is an upstream hook that defers every recipient (451) and
// counts the RCPT attempts per address.
type rcptCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *rcptCounter) hook(ctx context.Context, stage, arg string) error {
	if stage != smtptest.StageRcpt {
		return nil
	}
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[strings.Trim(arg, "<>")]++
	c.mu.Unlock()
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
}

func (c *rcptCounter) get(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[addr]
}

const longRetry = `
[queue]
retry = ["1h"]
lifetime = "1d"
scan_interval = "1s"
`

// A user's flush ("sendmail -q", the users' door) retries that user's
// mail only; root's flush retries everybody's.
func TestFlushOnlyOwnMail(t *testing.T) {
	var rc rcptCounter
	e := newEnv(t, smtptest.Options{Hook: rc.hook}, longRetry, "")
	tried(t, "sendmail -q as nobody with root's and another user's deferred mail in the queue",
		"only nobody's message was retried; root's flush retried all")
	if r := e.sendmail(run{uid: 0, stdin: "Subject: root's\n\nhi\n"}, "-i", "root-rcpt@example.net"); r.code != 0 {
		t.Fatalf("sendmail as root: %v", r)
	}
	if r := e.sendmail(run{uid: nobody, stdin: "Subject: nobody's\n\nhi\n"}, "-i", "nobody-rcpt@example.net"); r.code != 0 {
		t.Fatalf("sendmail as nobody: %v", r)
	}
	if r := e.sendmail(run{uid: attacker(1), stdin: "Subject: another user's\n\nhi\n"}, "-i", "other-rcpt@example.net"); r.code != 0 {
		t.Fatalf("sendmail as uid %d: %v", attacker(1), r)
	}
	e.waitFor("three first attempts", 30*time.Second, func() bool {
		return rc.get("root-rcpt@example.net") == 1 && rc.get("nobody-rcpt@example.net") == 1 && rc.get("other-rcpt@example.net") == 1 &&
			strings.Count(e.log(), "event=deferred ") >= 3
	})
	// nobody flushes, twice: through sendmail -q and through relayd's
	// client (the same verb on the control socket). The second comes
	// within the minute: it does nothing and says so (exit 75).
	if r := e.sendmail(run{uid: nobody}, "-q"); r.code != 0 {
		t.Fatalf("sendmail -q as nobody: %v", r)
	}
	e.waitFor("nobody's message retried", 30*time.Second, func() bool { return rc.get("nobody-rcpt@example.net") >= 2 })
	if r := e.relayd(run{uid: nobody}, "queue", "flush"); r.code != 75 || !strings.Contains(r.stderr, "not done") {
		t.Errorf("relayd queue flush as nobody within the minute: %v", r)
	}
	// Let any wrongly flushed message reach the upstream: the flush makes
	// every message it releases due at once, in the same pass.
	time.Sleep(2 * time.Second)
	if n := rc.get("root-rcpt@example.net"); n != 1 {
		t.Errorf("nobody's flush retried root's message: %d attempts, want 1", n)
	}
	if n := rc.get("other-rcpt@example.net"); n != 1 {
		t.Errorf("nobody's flush retried uid %d's message: %d attempts, want 1", attacker(1), n)
	}
	if !strings.Contains(e.log(), "event=flush uid=65534 ") {
		t.Errorf("no flush line for uid 65534:\n%s", e.log())
	}
	// root flushes everything.
	if r := e.relayd(run{uid: 0}, "queue", "flush"); r.code != 0 {
		t.Fatalf("relayd queue flush as root: %v", r)
	}
	e.waitFor("root's flush retried every message", 30*time.Second, func() bool {
		return rc.get("root-rcpt@example.net") >= 2 && rc.get("other-rcpt@example.net") >= 2
	})
}

// A user who flushes in a loop cannot make relayd retry their mail in a
// loop (and hammer the upstream): a flush takes effect once a minute.
func TestFlushLoop(t *testing.T) {
	var rc rcptCounter
	e := newEnv(t, smtptest.Options{Hook: rc.hook}, longRetry, "")
	tried(t, "nobody flushes 20 times in a row (sendmail -q) with a deferred message of its own",
		"the message is retried once for the first flush only; the others are refused, and logged once (rate-limited)")
	if r := e.sendmail(run{uid: nobody, stdin: "Subject: loop\n\nhi\n"}, "-i", "loop-rcpt@example.net"); r.code != 0 {
		t.Fatalf("sendmail: %v", r)
	}
	e.waitFor("the first attempt", 30*time.Second, func() bool {
		return rc.get("loop-rcpt@example.net") == 1 && strings.Contains(e.log(), "event=deferred ")
	})
	for i := 0; i < 20; i++ {
		if r := e.sendmail(run{uid: nobody}, "-q"); r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("sendmail -q: %v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.waitFor("the flushed retry", 30*time.Second, func() bool { return rc.get("loop-rcpt@example.net") >= 2 })
	time.Sleep(2 * time.Second)
	if n := rc.get("loop-rcpt@example.net"); n != 2 {
		t.Errorf("20 flushes made %d attempts, want 2 (the first and one flush)", n)
	}
	// The 19 refusals are logged once (the first; the others are counted
	// for the user's next such line, a minute later at the earliest): a
	// flush loop does not flood the log.
	if n := strings.Count(e.log(), "event=flush uid=65534 deferred=0 throttled=\"one flush a minute per user\" refused=1\n"); n != 1 ||
		strings.Count(e.log(), "event=flush uid=65534 deferred=0 throttled=") != 1 {
		t.Errorf("throttled flush lines:\n%s\nwant one, refused=1", e.log())
	}
}
