package pickup

import (
	"bufio"
	"strings"
	"testing"
)

func TestDisarmTrace(t *testing.T) {
	cfg := testConfig()
	cfg.Trace.Header = "X-Origin"
	rw, _ := NewRewriter(cfg)
	in := "x-mailshim-origin : uid=0\n" +
		"X-ORIGIN: uid=0\n\tuser=root\n" +
		"received: from uid 0 (root) by h (MailShim) id 1; date\n" +
		"Received: from a by b (Postfix); date\n" +
		"X-Mailshim-Forged-Origin: already renamed\n" +
		"Subject: keep\n\nbody\n"
	h, err := readHeader(bufio.NewReader(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	names := rw.disarmTrace(h)
	if got := strings.Join(names, ","); got != "x-mailshim-origin,X-ORIGIN,received" {
		t.Errorf("renamed %q", got)
	}
	var b strings.Builder
	h.write(&b, nil)
	want := "X-Mailshim-Forged-Origin : uid=0\n" +
		"X-Mailshim-Forged-Origin: uid=0\n\tuser=root\n" +
		"X-Mailshim-Forged-Received: from uid 0 (root) by h (MailShim) id 1; date\n" +
		"Received: from a by b (Postfix); date\n" +
		"X-Mailshim-Forged-Origin: already renamed\n" +
		"Subject: keep\n\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
