package config

import "testing"

func TestSocketsPlacement(t *testing.T) {
	for _, tc := range []struct {
		conf, ctl, sub string
	}{
		{"", "/run/mailshim/control.sock", "/run/mailshim/submit.sock"},
		{`spool = "/var/spool/mailshim/"`, "/run/mailshim/control.sock", "/run/mailshim/submit.sock"},
		{`spool = "/srv/mail/spool"`, "/srv/mail/spool/control.sock", "/srv/mail/spool/submit.sock"},
		{"spool = \"/srv/s\"\ncontrol_socket = \"/run/x/c.sock\"", "/run/x/c.sock", "/srv/s/submit.sock"},
		{"spool = \"/srv/s\"\nsubmit_socket = \"/run/x/s.sock\"", "/srv/s/control.sock", "/run/x/s.sock"},
	} {
		c, err := Parse("t.conf", []byte("hostname = \"h.example\"\n"+tc.conf+"\n"))
		if err != nil {
			t.Fatalf("%q: %v", tc.conf, err)
		}
		if c.ControlSocket != tc.ctl || c.SubmitSocket != tc.sub {
			t.Errorf("%q: control %q submit %q, want %q %q", tc.conf, c.ControlSocket, c.SubmitSocket, tc.ctl, tc.sub)
		}
	}
}
