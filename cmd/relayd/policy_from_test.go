package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
)

// from_domains looks at every From: field of a message, not the first
// only: a second From: naming a bank is refused like a single one
// (recipients' programs may show either).
func TestPolicyFromDomainsEveryFromField(t *testing.T) {
	up := newUpstream(t, smtptest.Options{})
	s := newSite(t, up, siteOpts{})
	s.writeConfig(`
[policy."*"]
from_domains = ["example.org"]
`)
	s.start()
	m := &spool.Meta{Env: spool.Envelope{Recipients: []string{"a@example.net"}}}
	body := "From: shop@example.org\nFrom: security@bank.example\nSubject: verify your account\n\nx\n"
	_, err := submitsock.Send(context.Background(), s.submitSock(), m, strings.NewReader(body))
	var se *submit.Error
	if !errors.As(err, &se) || se.Code != 77 || !strings.Contains(se.Msg, `"security@bank.example"`) {
		t.Errorf("two From: fields, the second outside from_domains: %v, want 77 naming it", err)
	}
}
