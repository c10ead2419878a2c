package smtpd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submit/submittest"
)

// The listener answers each refusal of the pipeline at DATA with the
// reply of the table every SMTP door shares (sendmail -bs is held to the
// same table in cmd/sendmail): a real session, the store refusing.
func TestRefusalReplies(t *testing.T) {
	var refuse *submit.Error
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Hostname: "test.example", Intake: &submit.Intake{Store: func(m *spool.Meta, body io.Reader) (string, error) {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return "", err
		}
		return "", refuse
	}}})
	s.selfPID = -1 // the client is this process
	go s.Serve(ln)
	defer s.Shutdown(t.Context())
	for _, r := range submittest.Refusals {
		refuse = r.Err
		err := sendOne(ln.Addr().String(), []byte("From: a@test.example\r\nSubject: x\r\n\r\nbody\r\n"))
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			t.Errorf("%s: %v, want a reply to DATA", r.Name, err)
			continue
		}
		got := fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		if !strings.HasPrefix(got, r.Want+" ") || !strings.Contains(got, r.Err.Msg) {
			t.Errorf("%s: %q, want %s %s", r.Name, got, r.Want, r.Err.Msg)
		}
	}
}
