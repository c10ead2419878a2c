package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// Pickup removes a maildrop file once its message is durable in the
// queue; the removal itself must be durable before the message can be
// delivered, or a power loss brings the file back and the message is
// sent twice. The real relayd, traced with strace: every unlinkat in
// maildrop/ is followed by an fsync of maildrop/ before relayd first
// connects to the upstream, and there is one such fsync per batch, not
// one per file.
func TestMaildropUnlinkDurableBeforeDelivery(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	const n = 5
	s.drop("durable", n)
	trace := filepath.Join(s.dir, "strace.out")
	d, relayd := s.startStraced("-f", "-qq", "-y", "-e", "trace=unlinkat,fsync,connect", "-o", trace)
	if _, err := up.WaitFor(n, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, s.log())
	}
	waitfor.True(t, "an empty maildrop", 10*time.Second, func() bool {
		ents, _ := os.ReadDir(filepath.Join(s.spool, spool.DirMaildrop))
		return len(ents) == 0
	})
	if err := d.stopStraced(t, relayd); err != nil {
		t.Errorf("relayd under strace: %v", err)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(s.spool, spool.DirMaildrop)
	port := strconv.Itoa(up.Upstream().Port)
	unlink := regexp.MustCompile(`unlinkat\(\d+<` + regexp.QuoteMeta(md) + `>, "[^"]+", 0\) = 0`)
	fsync := regexp.MustCompile(`fsync\(\d+<` + regexp.QuoteMeta(md) + `>\) = 0`)
	connect := regexp.MustCompile(`connect\(.*htons\(` + port + `\)`)
	unlinks, fsyncs, pending := 0, 0, 0
	connected := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case unlink.MatchString(l):
			unlinks++
			pending++
		case fsync.MatchString(l):
			fsyncs++
			pending = 0
		case connect.MatchString(l) && !connected:
			connected = true
			if pending > 0 || unlinks == 0 {
				t.Errorf("relayd connected to the upstream with %d of %d maildrop removals not made durable (no fsync of maildrop/ after them)", pending, unlinks)
			}
		}
	}
	if unlinks != n || pending != 0 || fsyncs == 0 || fsyncs >= n {
		t.Errorf("%d maildrop removals, %d fsyncs of maildrop/, %d removals never made durable; want %d removals and fewer fsyncs, at least one, after the last", unlinks, fsyncs, pending, n)
	}
	if t.Failed() {
		t.Logf("trace:\n%.6000s", b)
	}
}
