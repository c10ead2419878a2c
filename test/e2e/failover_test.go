//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// Failover to the real Postfix: the first [[upstream]] is dead (nothing
// listens on its port); relayd tries it, fails over to Postfix at once,
// and leaves the dead one alone for the circuit breaker's backoff.
func TestFailoverDeadUpstream(t *testing.T) {
	s := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "a free port")
	dead := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := s.Relayd.DefaultConfig()
	cfg.Retry = []string{"1h"} // a deferral would show: nothing may wait for it
	cfg.Before = fmt.Sprintf("[[upstream]]\nname = \"dead\"\nhost = \"127.0.0.1\"\nport = %d\ntls = \"starttls\"\nca_file = %q\nusername = %q\npassword_file = %q\n\n",
		dead, s.Relayd.CAFile, s.Upstream.User, s.Relayd.Secret)
	s.Relayd.Restart(t, cfg)
	defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())

	var toks []string
	for i := 0; i < 3; i++ {
		tok := token(t)
		from := tok + "@example.com"
		sendAs(t, s.Alice, "From: "+from+"\nSubject: "+tok+"\n\nfailover "+tok+"\n", "-f", from, "x@example.org")
		toks = append(toks, tok)
	}
	var ids []string
	for _, tok := range toks {
		c := checkDelivered(t, s, tok, Want{User: s.Alice, Sender: tok + "@example.com", Body: "failover " + tok + "\n"})
		if got := c.Delivery.Get("upstream"); got != s.Upstream.Addr() {
			t.Errorf("%s delivered through %q, want Postfix %s", tok, got, s.Upstream.Addr())
		}
		ids = append(ids, c.ID)
	}
	log := s.Relayd.Log()
	if !strings.Contains(log, "event=upstream-down upstream=127.0.0.1:"+fmt.Sprint(dead)+" name=dead") {
		t.Errorf("no upstream-down line for the dead upstream:\n%s", tail(log, 30))
	}
	for _, id := range ids {
		if strings.Contains(log, "event=deferred id="+id+" ") {
			t.Errorf("%s was deferred although Postfix was up:\n%s", id, tail(log, 30))
		}
	}
}
