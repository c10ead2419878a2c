package attack

// Spool exhaustion: one user fills the spool with mail that the default
// [policy] holds, and another user's sendmail meets the full spool.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

func TestSpoolExhaustion(t *testing.T) {
	needRoot(t)
	e := &env{t: t, dir: openDir(t)}
	e.up = smtptest.New(t, smtptest.Options{Username: "relay@example.com", Password: upstreamPassword})
	// The spool is a tmpfs of 8 MB and 1,000 inodes (mounted before relayd
	// starts, as in test/robust's TestDiskFull). relayd's queue takes no
	// inode per message, so it is the space that runs out.
	sp := filepath.Join(e.dir, "site", "spool")
	if err := os.MkdirAll(sp, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=8m,nr_inodes=1000,mode=0711"); err != nil {
		t.Skipf("SKIPPED: cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(sp, unix.MNT_DETACH) })
	md := filepath.Join(sp, spool.DirMaildrop)
	if err := os.Mkdir(md, 0o730); err != nil {
		t.Fatal(err)
	}
	os.Chown(md, 0, driver.DropGID)
	os.Chmod(md, 0o730|os.ModeSticky)
	e.setup(e.upstreamTOML(e.up), "", "")
	tried(t, "user A floods the spool (a tmpfs of 8 MB) with 16 KB messages the default [policy] holds, until sendmail fails; then user B sends; then root deletes A's held mail",
		"A's sendmail and B's fail with 73 and one line (never 75), nothing accepted is lost, relayd stays up; once root deletes A's held mail B sends again")
	a, b := attacker(80), attacker(81)
	stored := 0
	filler := strings.Repeat(strings.Repeat("x", 63)+"\n", 256)
	var last result
	for i := 0; i < 2000; i++ {
		last = e.sendmail(run{uid: a, stdin: fmt.Sprintf("Subject: exhaust %d\n\n%s", i, filler)}, "-i", "exhaust@example.net")
		if last.code != 0 {
			break
		}
		stored++
	}
	if last.code == 0 {
		t.Fatalf("2,000 messages of 16 KB stored in 8 MB")
	}
	if last.code != 73 || strings.Count(last.stderr, "\n") > 2 {
		t.Errorf("A's sendmail on the exhausted spool: %v", last)
	}
	rb := e.sendmail(run{uid: b, stdin: "Subject: B on a full spool\n\nx\n"}, "-i", "b@example.net")
	if rb.code != 0 && rb.code != 73 {
		t.Errorf("B's sendmail on the exhausted spool: %v, want 0 or 73", rb)
	}
	if e.r.Exited() {
		t.Fatal("relayd exited")
	}
	// Every message A got 0 for ends up delivered, held, or still in the
	// maildrop (pickup cannot queue it while the spool is full).
	var held, delivered, waiting int
	e.waitFor("A's messages delivered, held or waiting in the maildrop", 30*time.Second, func() bool {
		held = strings.Count(e.relayd(run{uid: 0}, "queue", "list").stdout, " held ")
		delivered = len(e.delivered(0, "Subject: exhaust "))
		waiting = len(e.maildrop())
		return delivered+held+waiting >= stored
	})
	t.Logf("exhaustion: A stored %d messages before exit %d (%q); %d delivered, %d held, %d waiting in the maildrop; B's first try: exit %d %q",
		stored, last.code, strings.TrimSpace(last.stderr), delivered, held, waiting, rb.code, strings.TrimSpace(rb.stderr))
	// Root deletes A's held mail; B sends again.
	r := e.relayd(run{uid: 0}, "queue", "delete", "--user", fmt.Sprintf("uid:%d", a))
	n := regexp.MustCompile(`--confirm (\d+)`).FindStringSubmatch(r.stdout + r.stderr)
	if n == nil {
		t.Fatalf("queue delete --user: %v", r)
	}
	if r := e.relayd(run{uid: 0}, "queue", "delete", "--user", fmt.Sprintf("uid:%d", a), "--confirm", n[1]); r.code != 0 {
		t.Fatalf("queue delete --user --confirm: %v", r)
	}
	skip := len(e.up.Messages())
	var rb2 result
	e.waitFor("B's sendmail to succeed once space is back", 60*time.Second, func() bool {
		rb2 = e.sendmail(run{uid: b, stdin: "Subject: B after the cleanup\n\nx\n"}, "-i", "b@example.net")
		return rb2.code == 0
	})
	e.waitFor("B's message delivered", 30*time.Second, func() bool { return len(e.delivered(skip, "Subject: B after the cleanup")) >= 1 })
}
