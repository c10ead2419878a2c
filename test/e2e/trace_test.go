//go:build e2e

package e2e

import (
	"strings"
	"testing"
)

// The origin header is configurable down to none ([trace] in
// mailshim.conf); the Received: line naming the UID always stays.
func TestTraceConfig(t *testing.T) {
	s := setup(t)
	defer s.Relayd.Restart(t, s.Relayd.DefaultConfig())

	for _, tc := range []struct {
		name, extra, header, want string
	}{
		{"uid-only", "\n[trace]\nheader = \"X-Sent-By\"\nfields = [\"uid\"]\n", "X-Sent-By", "uid=" + s.Bob.Uid},
		{"none", "\n[trace]\nfields = []\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.Relayd.DefaultConfig()
			cfg.Extra = tc.extra
			s.Relayd.Restart(t, cfg)
			tok := token(t)
			sendAs(t, s.Bob, "Subject: "+tok+"\n\ntrace "+tok+"\n", "x@example.org")
			m := s.Upstream.WaitMessage(t, tok, deliveryLimit)
			if v := m.Header.Get("X-Mailshim-Origin"); v != "" {
				t.Errorf("X-Mailshim-Origin: %q present with %q", v, strings.TrimSpace(tc.extra))
			}
			if tc.header != "" {
				if v := m.Header.Get(tc.header); v != tc.want {
					t.Errorf("%s: %q, want %q", tc.header, v, tc.want)
				}
			}
			found := false
			for _, r := range m.Header["Received"] {
				if mm := receivedMailshim.FindStringSubmatch(strings.Join(strings.Fields(r), " ")); mm != nil && mm[1] == s.Bob.Uid {
					found = true
				}
			}
			if !found {
				t.Errorf("no Received: naming uid %s:\n%s", s.Bob.Uid, m.Raw)
			}
		})
	}
}
