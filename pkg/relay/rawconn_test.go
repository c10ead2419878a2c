package relay

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/rawconn"
	"github.com/mailshim/mailshim/pkg/smtptest"
)

// The delivery connection's socket is read and written with raw system
// calls (package rawconn), under TLS (STARTTLS or implicit) or plain SMTP:
// messages much larger than the socket's buffers, one after another on
// the session, arrive whole and in order.
func TestDeliveryConnReadsAndWritesRaw(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    smtptest.Options
		tls  string
	}{
		{"starttls", smtptest.Options{Username: testUser, Password: testPass}, ""},
		{"tls", smtptest.Options{Username: testUser, Password: testPass, ImplicitTLS: true}, ""},
		{"none", smtptest.Options{NoTLS: true}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := smtptest.New(t, tc.o)
			up := srv.Upstream()
			if tc.tls != "" {
				up.TLS = tc.tls
			}
			s := dialOK(t, up, testOpts())
			if _, ok := s.raw.(*rawconn.Conn); !ok {
				t.Fatalf("the delivery connection is a %T, not read and written raw", s.raw)
			}
			var want []string
			for i, lines := range []int{10, 200000, 3, 100000} {
				var b strings.Builder
				fmt.Fprintf(&b, "From: sender@example.org\nSubject: message %d\n\n", i)
				for l := range lines {
					fmt.Fprintf(&b, "message %d line %d\n", i, l)
				}
				body := b.String()
				if res := s.Send(context.Background(), testMsg(body, "rcpt@example.net")); res.Err != nil {
					t.Fatalf("message %d (%d bytes): %v", i, len(body), res.Err)
				}
				want = append(want, strings.ReplaceAll(body, "\n", "\r\n"))
			}
			msgs, err := srv.WaitFor(len(want), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range msgs {
				if string(m.Data) != want[i] {
					t.Fatalf("message %d: %d bytes received, not the %d sent", i, len(m.Data), len(want[i]))
				}
			}
		})
	}
}
