package smtpd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// LOGIN: "Username:", "Password:", done; the username is the claim, with
// or without an initial response.
func TestLoginServer(t *testing.T) {
	for _, ir := range []bool{false, true} {
		var got string
		l := &loginServer{done: func(u string) { got = u }}
		var steps []string
		resp := []byte(nil)
		if ir {
			resp = []byte("alice")
		}
		for i := 0; i < 4; i++ {
			ch, done, err := l.Next(resp)
			if err != nil {
				t.Fatal(err)
			}
			if done {
				break
			}
			steps = append(steps, string(ch))
			switch string(ch) {
			case "Username:":
				resp = []byte("alice")
			case "Password:":
				resp = []byte("secret")
			}
		}
		want := "Username: Password:"
		if ir {
			want = "Password:"
		}
		if strings.Join(steps, " ") != want || got != "alice" {
			t.Errorf("initial response %v: steps %q, claim %q", ir, steps, got)
		}
	}
}

// Every refusal is an SMTP reply of mailshim's own words, with the code
// that tells the client whether to try again; nothing of a Go error's
// text that could name a path or another user's data.
func TestReply(t *testing.T) {
	for _, c := range []struct {
		err     error
		readErr error
		want    string
	}{
		{spool.ErrTooLarge, nil, "552 5.3.4"},
		{smtp.ErrDataTooLarge, nil, "552 5.3.4 message too large: the limit is 50MB"},
		{&submit.SizeError{Limit: 50 << 20}, nil, "552 5.3.4 message too large: the limit is 50MB"},
		{message.ErrHeaderTooLarge, nil, "552 5.3.4"},
		{&submit.Error{Code: sysexits.NoPerm, Msg: "sender not allowed"}, nil, "553 5.7.1 sender not allowed"},
		{&submit.Error{Code: sysexits.NoPerm, Msg: "over messages_per_minute", Temporary: true}, nil, "451 4.7.1 over messages_per_minute"},
		{&message.EnvelopeError{Code: sysexits.NoUser, Msg: "bad recipient"}, nil, "553 5.1.3 bad recipient"},
		{&os.PathError{Op: "open", Path: "/var/spool/mailshim/queue/msg/X", Err: errors.New("disk")}, nil, "451 4.3.0 could not store the message"},
		{errors.New("x"), &net.OpError{Op: "read", Err: timeoutErr{}}, "451 4.4.2"},
		{errors.New("x"), smtp.ErrTooLongLine, "500 5.5.2"},
	} {
		e := reply(c.err, c.readErr, 50<<20)
		got := fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("reply(%v, %v) = %q, want %q...", c.err, c.readErr, got, c.want)
		}
		if strings.Contains(got, "/var/spool") {
			t.Errorf("reply leaks a path: %q", got)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// A UID's scan budget: scanBurst shared by its scans, refilled at
// scanRefill a second, unused time given back; other UIDs untouched.
func TestScanBudget(t *testing.T) {
	var b scanBudget
	now := time.Unix(1000, 0)
	if d := b.take(1, now); d != scanLimit {
		t.Fatalf("first scan: %v", d)
	}
	if d := b.take(1, now); d != scanBurst-scanLimit {
		t.Fatalf("second scan: %v", d)
	}
	if d := b.take(1, now); d != 0 {
		t.Fatalf("budget spent: %v", d)
	}
	if d := b.take(2, now); d != scanLimit {
		t.Fatalf("another UID: %v", d)
	}
	if d := b.take(1, now.Add(5*time.Second)); d != 5*scanRefill {
		t.Fatalf("after 5 s: %v, want %v", d, 5*scanRefill)
	}
	b.refund(1, 300*time.Millisecond)
	if d := b.take(1, now.Add(5*time.Second)); d != 300*time.Millisecond {
		t.Fatalf("after a refund: %v", d)
	}
}

// A user's name is read once while the passwd file is unchanged, and
// again as soon as it changes (rewritten in place or replaced).
func TestUserNames(t *testing.T) {
	path := t.TempDir() + "/passwd"
	os.WriteFile(path, []byte("alice\n"), 0o644)
	reads := 0
	u := &userNames{path: path, lookup: func(uid int) string {
		reads++
		b, _ := os.ReadFile(path)
		return strings.TrimSpace(string(b))
	}}
	for range 3 {
		if n := u.name(1000); n != "alice" {
			t.Fatalf("name %q", n)
		}
	}
	if reads != 1 {
		t.Errorf("%d reads of an unchanged file, want 1", reads)
	}
	os.WriteFile(path, []byte("bob\n"), 0o644) // in place: size and times change
	if n := u.name(1000); n != "bob" {
		t.Errorf("after a rewrite: %q", n)
	}
	os.WriteFile(path+".new", []byte("carl\n"), 0o644)
	os.Rename(path+".new", path) // replaced: another inode, same size
	if n := u.name(1000); n != "carl" {
		t.Errorf("after a replacement: %q", n)
	}
	if n := (&userNames{}).name(0); n != "root" {
		t.Errorf("uid 0 from /etc/passwd: %q", n)
	}
}
