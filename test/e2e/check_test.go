//go:build e2e

package e2e

import (
	"io"
	"mime/quotedprintable"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// What every delivered message must show, whoever sent it.

const deliveryLimit = 90 * time.Second

var (
	// Received: from uid 1001 (alice) by web1.e2e.test (mailshim) id ID; date
	receivedMailshim = regexp.MustCompile(`from uid (\d+) \(([^)]*)\) by ([^ ]+) \(mailshim\) id ([^;\s]+)`)
	// Received: ... by upstream.e2e.test (Postfix) with ESMTPSA id 4Hxyz ...
	receivedPostfix = regexp.MustCompile(`by upstream\.e2e\.test \(Postfix\) with ESMTPSA id ([0-9A-Za-z]+)`)
)

// Want describes what a caller's message must look like on arrival.
type Want struct {
	User       *user.User
	Script     string   // the origin header's script= must contain this ("" = not checked)
	Sender     string   // envelope sender (Return-Path), "" = not checked
	Recipients []string // every one gets a copy (default: one copy)
	Body       string   // the exact body bytes as delivered ("" = not checked)
	BodyHas    []string // substrings of the body
	Via        string   // pickup's via= ("" = not checked)
	Repeats    bool     // the caller may send it again (cron, every minute)
}

// Checked is a delivered message with its identifiers.
type Checked struct {
	Msg        *Delivered
	ID         string // mailshim's queue id
	PostfixID  string // the upstream's queue id
	Pickup     Event
	Delivery   Event
	OriginLine string
}

// checkDelivered waits for the message carrying tok and checks it against
// want: intact, traced to the right UID and script, and logged by relayd
// with Postfix's queue id.
func checkDelivered(t *testing.T, s *System, tok string, want Want) *Checked {
	t.Helper()
	n := len(want.Recipients)
	if n == 0 {
		n = 1
	}
	msgs := s.Upstream.WaitMessages(t, n, deliveryLimit, "message "+tok, func(d *Delivered) bool {
		return strings.Contains(string(d.Raw), tok) && !isDSN(d)
	})
	if len(msgs) != n && !want.Repeats {
		t.Errorf("%d copies of %s delivered, want %d", len(msgs), tok, n)
	}
	if want.Recipients != nil {
		got := map[string]bool{}
		for _, m := range msgs {
			got[strings.ToLower(m.Header.Get("Delivered-To"))] = true
		}
		for _, r := range want.Recipients {
			if !got[strings.ToLower(r)] {
				t.Errorf("no copy delivered to %s (Delivered-To seen: %v)", r, got)
			}
		}
	}
	m := msgs[0]
	c := &Checked{Msg: m}
	h := m.Header
	for _, d := range msgs {
		if v, ok := d.Header["Bcc"]; ok {
			t.Errorf("Bcc header delivered (%v) to %s:\n%s", v, d.Header.Get("Delivered-To"), d.Raw)
		}
	}
	for _, k := range []string{"Date", "Message-Id", "From"} {
		if h.Get(k) == "" {
			t.Errorf("no %s: header:\n%s", k, m.Raw)
		}
	}
	if _, err := h.Date(); err != nil {
		t.Errorf("Date: %q: %v", h.Get("Date"), err)
	}
	uid := strconv.Itoa(uidOf(want.User))
	for _, r := range h["Received"] {
		r = strings.Join(strings.Fields(r), " ")
		if mm := receivedMailshim.FindStringSubmatch(r); mm != nil {
			if mm[1] != uid || mm[2] != want.User.Username || mm[3] != hostname {
				t.Errorf("Received: %q: want uid %s (%s) by %s", r, uid, want.User.Username, hostname)
			}
			c.ID = mm[4]
		}
		if mm := receivedPostfix.FindStringSubmatch(r); mm != nil {
			c.PostfixID = mm[1]
		}
	}
	if c.ID == "" {
		t.Fatalf("no mailshim Received: header naming the UID:\n%s", m.Raw)
	}
	if c.PostfixID == "" {
		t.Fatalf("no Postfix Received: header (ESMTPSA id):\n%s", m.Raw)
	}
	origin := h.Get("X-Mailshim-Origin")
	c.OriginLine = origin
	if !regexp.MustCompile(`(^|\s)uid=` + uid + `(\s|$)`).MatchString(origin) {
		t.Errorf("X-Mailshim-Origin: %q does not name uid=%s", origin, uid)
	}
	if !strings.Contains(origin, "user="+want.User.Username) {
		t.Errorf("X-Mailshim-Origin: %q does not name user=%s", origin, want.User.Username)
	}
	if want.Script != "" && !strings.Contains(origin, "script=") {
		t.Errorf("X-Mailshim-Origin: %q names no script (want %q)", origin, want.Script)
	} else if want.Script != "" && !strings.Contains(origin, want.Script) {
		t.Errorf("X-Mailshim-Origin: %q: script should contain %q", origin, want.Script)
	}
	if want.Sender != "" {
		if rp := strings.Trim(h.Get("Return-Path"), "<>"); !strings.EqualFold(rp, want.Sender) {
			t.Errorf("envelope sender (Return-Path) %q, want %q", rp, want.Sender)
		}
	}
	if want.Body != "" && string(m.Body) != want.Body {
		t.Errorf("body changed:\n got %q\nwant %q", m.Body, want.Body)
	}
	text := string(m.Body)
	if strings.EqualFold(h.Get("Content-Transfer-Encoding"), "quoted-printable") {
		// Symfony Mailer encodes its text parts so: compare decoded text.
		if b, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(text))); err == nil {
			text = string(b)
		}
	}
	for _, b := range want.BodyHas {
		if !strings.Contains(text, b) {
			t.Errorf("body lacks %q:\n%s", b, m.Body)
		}
	}

	// relayd's log: one pickup line and a delivery line with Postfix's id.
	c.Pickup = s.Relayd.WaitEvent(t, 10*time.Second, "pickup of "+c.ID, func(e Event) bool {
		return e.Get("event") == "pickup" && e.Get("id") == c.ID
	})
	if c.Pickup.Get("uid") != uid || c.Pickup.Get("user") != want.User.Username {
		t.Errorf("pickup line names uid=%s user=%s, want %s %s: %s", c.Pickup.Get("uid"), c.Pickup.Get("user"), uid, want.User.Username, c.Pickup.Line)
	}
	if want.Script != "" && !strings.Contains(c.Pickup.Get("script"), want.Script) {
		t.Errorf("pickup line's script=%q should contain %q", c.Pickup.Get("script"), want.Script)
	}
	if want.Via != "" && c.Pickup.Get("via") != want.Via {
		t.Errorf("pickup line's via=%q, want %q: %s", c.Pickup.Get("via"), want.Via, c.Pickup.Line)
	}
	c.Delivery = s.Relayd.WaitEvent(t, 10*time.Second, "delivery of "+c.ID+" with Postfix id "+c.PostfixID, func(e Event) bool {
		return e.Get("id") == c.ID && e.Get("event") != "pickup" && strings.Contains(e.Line, c.PostfixID)
	})
	t.Logf("delivered %s (postfix %s): %s", c.ID, c.PostfixID, origin)
	return c
}

// isDSN tells a delivery status notification.
func isDSN(d *Delivered) bool {
	ct := strings.ToLower(d.Header.Get("Content-Type"))
	return strings.Contains(ct, "multipart/report") && strings.Contains(ct, "delivery-status")
}
