package attack

// Floods of relayd's sockets from many UIDs.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// Twelve users holding idle connections to control.sock cannot lock root
// (or another user) out.
func TestControlSocketAdminNotLockedOut(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	const users, each = 12, 12
	tried(t, fmt.Sprintf("%d UIDs x %d idle connections to control.sock, then root's queue list/flush and a 13th user's mailq", users, each),
		"root and the other user were served; the idle connections were dropped")
	for i := 0; i < users; i++ {
		e.hold(attacker(i), e.controlSock(), each, "")
	}
	start := time.Now()
	if r := e.relayd(run{uid: 0}, "queue", "list"); r.code != 0 {
		t.Errorf("root's queue list with %d users x %d idle connections: %v", users, each, r)
	}
	if r := e.relayd(run{uid: 0}, "queue", "flush"); r.code != 0 {
		t.Errorf("root's queue flush with %d users x %d idle connections: %v", users, each, r)
	}
	if r := e.sendmail(run{uid: attacker(99)}, "-bp"); r.code != 0 {
		t.Errorf("another user's mailq with %d users x %d idle connections: %v", users, each, r)
	}
	t.Logf("root and a 13th user served %v after the flood", time.Since(start).Round(time.Millisecond))
	// Idle connections are dropped quickly: the attackers' sockets are
	// closed by relayd long before the request timeout.
	e.waitFor("idle control connections dropped", 30*time.Second, func() bool {
		return countSockets(e.r.Cmd.Process.Pid) <= 8
	})
}

// Eight users holding stalled submissions cannot refuse a ninth user's
// message on submit.sock.
func TestSubmitSocketRoomForEveryUser(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	const users, each = 8, 40
	tried(t, fmt.Sprintf("%d UIDs x %d stalled connections to submit.sock, then a ninth user's sendmail (socket path)", users, each),
		"the ninth user's message was stored and delivered")
	for i := 0; i < users; i++ {
		e.hold(attacker(i), e.submitSock(), each, "MAILSHIM-SUBMIT 1\n")
	}
	// Every stalled connection is in relayd's hands (served or waiting)
	// before the ninth user comes.
	e.waitFor("relayd holding the stalled connections", 30*time.Second, func() bool {
		return countSockets(e.r.Cmd.Process.Pid) >= users*each
	})
	r := e.sendmail(run{uid: attacker(50), plain: true, stdin: "Subject: ninth user\n\nhello\n"}, "-i", "ninth@example.net")
	if r.code != 0 {
		t.Fatalf("a ninth user's submission with %d users x %d stalled connections: %v", users, each, r)
	}
	if _, err := e.up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatalf("the ninth user's message was not delivered: %v\n%s", err, e.log())
	}
}

// Users who send the largest spool header the submission socket takes,
// and then stall, cost relayd bounded memory and refuse nobody.
func TestSubmitSocketMemory(t *testing.T) {
	e := newEnv(t, smtptest.Options{}, "", "")
	const full, fullEach, floor, floorEach = 8, 8, 8, 2
	tried(t, fmt.Sprintf("%d UIDs x %d and %d more UIDs x %d submissions, each sending a 3.9 MB spool header and stalling before its end", full, fullEach, floor, floorEach),
		"relayd stays up, its memory grows by less than 256 MB (the header budget), and another user's message is stored and delivered")
	var b strings.Builder
	b.WriteString("MAILSHIM-SUBMIT 1\nMAILSHIM-SPOOL 1\n")
	for b.Len() < 3900<<10 {
		b.WriteString("rcpt " + strings.Repeat("r", 990) + "@example.net\n")
	}
	f := filepath.Join(e.dir, "bigheader")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	_, base, _ := e.r.RSS()
	for i := 0; i < full+floor; i++ {
		n := fullEach
		if i >= full {
			n = floorEach
		}
		e.hold(attacker(30+i), e.submitSock(), n, "@"+f)
	}
	e.settle()
	cur, peak, _ := e.r.RSS()
	t.Logf("relayd RSS: %d KB before, %d KB holding %d stalled 3.9 MB headers (peak %d KB)", base, cur, full*fullEach+floor*floorEach, peak)
	// The header budget (64 MiB beyond 64 KiB per header) bounds them:
	// about 1.5 times that, plus the free parts, plus relayd's own.
	if peak-base > 256<<10 {
		t.Errorf("relayd grew by %d KB holding stalled headers; the header budget should bound it", peak-base)
	}
	if e.r.Exited() {
		t.Fatal("relayd exited")
	}
	r := e.sendmail(run{uid: attacker(59), plain: true, stdin: "Subject: beside the big headers\n\nx\n"}, "-i", "beside@example.net")
	if r.code != 0 {
		t.Fatalf("another user's submission: %v", r)
	}
	if _, err := e.up.WaitFor(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
