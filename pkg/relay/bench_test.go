package relay

import (
	"context"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// BenchmarkSend measures one session sending 2 KB messages to a loopback
// STARTTLS+AUTH upstream (FACTS.md: a bare go-smtp client does ~2,000/s).
func BenchmarkSend(b *testing.B) {
	srv := smtptest.New(b, smtptest.Options{Username: testUser, Password: testPass, NoStore: true})
	s, err := Dial(context.Background(), srv.Upstream(), testOpts())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m := testMsg("From: sender@example.org\nSubject: bench\n\n"+strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 32), "a@example.net")
	b.SetBytes(m.Size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := s.Send(context.Background(), m); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkWire measures the transformer alone on a 2 KB message.
func BenchmarkWire(b *testing.B) {
	in := []byte("From: sender@example.org\nSubject: bench\n\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", 32))
	b.SetBytes(int64(len(in)))
	for i := 0; i < b.N; i++ {
		if _, err := wire(b, in, WireMode{EightBit: true}); err != nil {
			b.Fatal(err)
		}
	}
}
