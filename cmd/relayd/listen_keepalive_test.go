package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// The TCP sockets relayd binds itself serve their connections without
// TCP keep-alive: no setsockopt(2) for it at an accept (TCP_NODELAY is
// the one option set). The real relayd under strace, a client as nobody.
func TestListenNoKeepAlive(t *testing.T) {
	needRoot(t)
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{extra: listenConf})
	trace := t.TempDir() + "/strace.out"
	d, relayd := s.startStraced("-f", "-qq", "-e", "trace=accept4,setsockopt,close", "-o", trace)
	addrs := s.listenAddrs()
	out := sendAs(t, 65534, "tcp", addrs["tcp4"], "", "nobody@web1.example.com", "rcpt@example.net", "no keep-alive")
	if !strings.HasPrefix(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("the message: %s\n%s", out, s.log())
	}
	d.stopStraced(t, relayd)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	// The options set on a descriptor accept4 returned, until it is
	// closed (relayd's own connection to the upstream is not one).
	accepted := map[string]bool{}
	var opts []string
	for _, l := range straceLines(string(b)) {
		if m := acceptRet.FindStringSubmatch(l); m != nil {
			accepted[m[1]] = true
		} else if m := closeCall.FindStringSubmatch(l); m != nil {
			delete(accepted, m[1])
		} else if m := setsockoptCall.FindStringSubmatch(l); m != nil && accepted[m[1]] {
			opts = append(opts, m[2])
		}
	}
	if !slices.Contains(opts, "TCP_NODELAY") {
		t.Fatalf("no TCP_NODELAY on an accepted connection: it was not traced:\n%s", b)
	}
	if bad := slices.DeleteFunc(opts, func(o string) bool { return o == "TCP_NODELAY" }); len(bad) > 0 {
		t.Errorf("relayd set %v on an accepted connection:\n%s", bad, grepLines(string(b), "setsockopt"))
	}
}

var (
	acceptRet      = regexp.MustCompile(`accept4.* = (\d+)$`)
	closeCall      = regexp.MustCompile(`close\((\d+)\)`)
	setsockoptCall = regexp.MustCompile(`setsockopt\((\d+), \w+, (\w+),`)
)
