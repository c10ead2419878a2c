package pickup

import (
	"bufio"
	"errors"
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

func TestVerifyOrigin(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	v := SignOrigin(key, "X-Mailshim-Origin", "uid=1003 user=shop script=/var/www/x.php id=0006270A1B2C3D4E5F60", " <abc@web1.example.com>")
	msg := "Received: from uid 1003 (shop) by web1 (mailshim) id 0006270A1B2C3D4E5F60; date\r\n" +
		"X-Mailshim-Origin: " + v + "\r\n" +
		"Message-ID: <abc@web1.example.com>\r\nSubject: hi\r\n\r\nbody\r\n"
	got, err := VerifyOrigin(key, "x-mailshim-origin", strings.NewReader(msg))
	if err != nil || got != "uid=1003 user=shop script=/var/www/x.php id=0006270A1B2C3D4E5F60" {
		t.Fatalf("genuine: %q %v", got, err)
	}
	// Folded by a later MTA: still genuine.
	folded := strings.Replace(msg, " user=shop", "\r\n user=shop", 1)
	if _, err := VerifyOrigin(key, "X-Mailshim-Origin", strings.NewReader(folded)); err != nil {
		t.Errorf("folded: %v", err)
	}
	for name, bad := range map[string]string{
		"altered uid":        strings.Replace(msg, "uid=1003 user", "uid=1004 user", 1),
		"other message":      strings.Replace(msg, "<abc@", "<abd@", 1),
		"no header":          strings.Replace(msg, "X-Mailshim-Origin", "X-Other", 1),
		"unsigned":           strings.Replace(msg, v, "uid=1003 user=shop", 1),
		"two headers":        strings.Replace(msg, "Subject:", "X-Mailshim-Origin: "+v+"\r\nSubject:", 1),
		"signature replaced": strings.Replace(msg, v[strings.LastIndex(v, "mac="):], "mac=AAAAAAAAAAAAAAAAAAAAAA", 1),
	} {
		if _, err := VerifyOrigin(key, "X-Mailshim-Origin", strings.NewReader(bad)); !errors.Is(err, ErrNotGenuine) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := VerifyOrigin([]byte("another key of 16+ bytes"), "X-Mailshim-Origin", strings.NewReader(msg)); !errors.Is(err, ErrNotGenuine) {
		t.Errorf("another key: %v", err)
	}
}
