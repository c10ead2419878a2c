package smtpbs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
)

type stored struct {
	env  spool.Envelope
	data string
}

func session(t *testing.T, in string, deliver func(spool.Envelope, io.Reader) (string, error)) (string, []stored) {
	t.Helper()
	var got []stored
	s := &Server{Hostname: "host.example", MaxSize: 1000, Deliver: func(env spool.Envelope, data io.Reader) (string, error) {
		if deliver != nil {
			return deliver(env, data)
		}
		b, err := io.ReadAll(data)
		if err != nil {
			return "", err
		}
		got = append(got, stored{env, string(b)})
		return "0006270A1B2C3D4E5F60", nil
	}}
	var out bytes.Buffer
	if _, _, err := s.Serve(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	return out.String(), got
}

// The dialogue Symfony Mailer has (testdata in cmd/sendmail has the real
// recording): HELO, several RCPT, DATA with a leading dot, QUIT.
func TestSMTPSymfony(t *testing.T) {
	in := "HELO [127.0.0.1]\r\nMAIL FROM:<webapp@example.org>\r\nRCPT TO:<rcpt1@example.org>\r\nRCPT TO:<hidden@example.org>\r\n" +
		"DATA\r\nSubject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n"
	out, got := session(t, in, nil)
	want := "220 host.example ESMTP mailshim\r\n250 host.example\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n" +
		"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 0006270A1B2C3D4E5F60\r\n221 2.0.0 Bye\r\n"
	if out != want {
		t.Errorf("dialogue:\n%q\nwant\n%q", out, want)
	}
	if len(got) != 1 || got[0].data != "Subject: x\n\n.leading dot\nbody\n" || got[0].env.Sender != "webapp@example.org" ||
		strings.Join(got[0].env.Recipients, " ") != "rcpt1@example.org hidden@example.org" {
		t.Errorf("stored %+v", got)
	}
}

func TestSMTPSessionRules(t *testing.T) {
	in := "EHLO c\r\nRCPT TO:<a@b.org>\r\nDATA\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=e1\r\nMAIL FROM:<x@y.org>\r\n" +
		"RCPT TO:<bad address>\r\nRCPT TO:<root> NOTIFY=NEVER\r\nDATA\r\nm1\r\n.\r\nMAIL FROM:<a@b.org> SIZE=5000\r\n" +
		"MAIL FROM:<a@b.org> FOO=1\r\nRSET\r\nNOOP\r\nVRFY x\r\nSTARTTLS\r\nBLAH\r\n" + strings.Repeat("x", 5000) + "\r\n" +
		"MAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nm2\r\n.\r\nQUIT\r\n"
	out, got := session(t, in, nil)
	codes := []string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\r\n") {
		if len(l) >= 4 && l[3] == '-' {
			continue
		}
		codes = append(codes, l[:3])
	}
	want := "220 250 503 503 250 503 553 250 354 250 552 555 250 250 252 502 500 500 250 250 354 250 221"
	if strings.Join(codes, " ") != want {
		t.Errorf("codes\n%s\nwant\n%s\n%s", strings.Join(codes, " "), want, out)
	}
	if !strings.Contains(out, "250-8BITMIME\r\n") || !strings.Contains(out, "250-SMTPUTF8\r\n") || !strings.Contains(out, "SIZE 1000") {
		t.Errorf("EHLO reply %q", out)
	}
	if len(got) != 2 || got[0].env.Sender != "<>" || got[0].env.BodyType != "8BITMIME" || !got[0].env.SMTPUTF8 ||
		got[0].env.Ret != "HDRS" || got[0].env.EnvID != "e1" || got[0].env.Notify != "NEVER" || got[0].data != "m1\n" || got[1].data != "m2\n" {
		t.Errorf("stored %+v", got)
	}
}

func TestSMTPDeliverError(t *testing.T) {
	in := "HELO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
	out, _ := session(t, in, func(spool.Envelope, io.Reader) (string, error) {
		return "", errors.New("disk on fire") // returns without reading: the server drains
	})
	if !strings.Contains(out, "451 4.3.0 could not store the message\r\n221 ") {
		t.Errorf("dialogue %q", out)
	}
}

// A bare LF or CR next to a "." in DATA refuses the message and ends the
// session: the smuggled second transaction after it is never read as
// commands, so nothing is stored.
func TestSMTPSmuggling(t *testing.T) {
	for _, end := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r"} {
		in := "EHLO c\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nSubject: x\r\n\r\nhello" + end +
			"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@e.org>\r\nDATA\r\nforged\r\n.\r\n\r\n.\r\nQUIT\r\n"
		out, got := session(t, in, nil)
		if len(got) != 0 || !strings.Contains(out, "\r\n521 5.5.2 ") || strings.Contains(out, "221 ") {
			t.Errorf("%q: stored %d, dialogue:\n%s", end, len(got), out)
		}
	}
}

func TestSMTPEOFInData(t *testing.T) {
	s := &Server{Hostname: "h", Deliver: func(_ spool.Envelope, data io.Reader) (string, error) {
		_, err := io.ReadAll(data)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("data error %v", err)
		}
		return "", err
	}}
	var out bytes.Buffer
	stored, failed, err := s.Serve(strings.NewReader("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@b.org>\r\nDATA\r\nhalf a mess"), &out)
	if err != nil || stored != 0 || failed != 1 {
		t.Errorf("stored %d failed %d err %v", stored, failed, err)
	}
}

// FuzzSMTP runs arbitrary client input through the -bs session: it never
// panics, never stores a message whose DATA did not end with ".", and
// every message it stores had a sender and at least one recipient.
func FuzzSMTP(f *testing.F) {
	f.Add("HELO x\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
	f.Add("EHLO x\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<root> NOTIFY=NEVER\r\nDATA\r\n..\r\n.\r\n")
	f.Add("DATA\r\nRSET\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<>\r\n")
	f.Add("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nunterminated")
	f.Fuzz(func(t *testing.T, in string) {
		s := &Server{Hostname: "h", MaxSize: 1 << 20, MaxRecipients: 50, Deliver: func(env spool.Envelope, data io.Reader) (string, error) {
			if _, err := io.ReadAll(data); err != nil {
				return "", err
			}
			if env.Sender == "" || len(env.Recipients) == 0 || len(env.Recipients) > 50 {
				t.Fatalf("stored with envelope %+v", env)
			}
			return "0006270A1B2C3D4E5F60", nil
		}}
		var out bytes.Buffer
		s.Serve(strings.NewReader(in), &out)
		if !strings.HasPrefix(out.String(), "220 ") {
			t.Fatalf("no greeting: %q", out.String())
		}
	})
}

// The DSN parameters are stored in the one form every door stores them
// in (package message): ENVID decoded from its xtext (the SMTP client
// encodes it again when relaying), RET and NOTIFY in upper case.
func TestSMTPDSNParameters(t *testing.T) {
	in := "EHLO c\r\nMAIL FROM:<a@b.org> RET=full ENVID=order+2B42+3Dx\r\nRCPT TO:<c@d.org> NOTIFY=success,Delay\r\n" +
		"DATA\r\nm1\r\n.\r\nMAIL FROM:<a@b.org> ENVID=bad+2\r\nMAIL FROM:<a@b.org> ENVID=a=b\r\nQUIT\r\n"
	out, got := session(t, in, nil)
	if len(got) != 1 || got[0].env.EnvID != "order+42=x" || got[0].env.Ret != "FULL" || got[0].env.Notify != "SUCCESS,DELAY" {
		t.Errorf("stored %+v", got)
	}
	if n := strings.Count(out, "501 5.5.4 Bad ENVID parameter"); n != 2 {
		t.Errorf("malformed xtext refused %d times, want 2:\n%s", n, out)
	}
}

// RCPT is bounded by the envelope limits every door shares
// (message.MaxRecipients addresses, message.MaxRecipientBytes of them):
// the recipients accepted are exactly what the stored envelope may hold,
// and one more is answered 452 4.5.3.
func TestSMTPRecipientLimits(t *testing.T) {
	for _, tt := range []struct {
		name string
		addr func(i int) string
		want int
	}{
		{"count", func(i int) string { return fmt.Sprintf("u%d@example.org", i) }, message.MaxRecipients},
		{"bytes", func(i int) string { return fmt.Sprintf("%0120d@example.org", i) }, message.MaxRecipientBytes / len(fmt.Sprintf("%0120d@example.org", 0)+" ")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var in strings.Builder
			in.WriteString("EHLO c\r\nMAIL FROM:<a@b.org>\r\n")
			for i := 0; i <= tt.want; i++ {
				fmt.Fprintf(&in, "RCPT TO:<%s>\r\n", tt.addr(i))
			}
			in.WriteString("DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
			out, got := session(t, in.String(), nil)
			if n := strings.Count(out, "250 2.1.5 Ok\r\n"); n != tt.want {
				t.Errorf("%d recipients accepted, want %d", n, tt.want)
			}
			if n := strings.Count(out, "452 4.5.3 Too many recipients\r\n"); n != 1 {
				t.Errorf("%d RCPT answered 452 4.5.3, want 1", n)
			}
			if len(got) != 1 || len(got[0].env.Recipients) != tt.want {
				t.Fatalf("stored %d messages (the first with the recipients accepted, %d wanted)", len(got), tt.want)
			}
			if err := message.ValidateEnvelope(&got[0].env); err != nil {
				t.Errorf("the envelope accepted is not valid: %v", err)
			}
		})
	}
}
