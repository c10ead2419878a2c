package config

import (
	"strings"
	"testing"
)

// A listener on an address that is not loopback is a configuration error,
// with the key's line.
func TestListenAddressesLoopbackOnly(t *testing.T) {
	for _, a := range []string{"0.0.0.0", "192.0.2.1", "::", "2001:db8::1", "localhost"} {
		_, err := Parse("l.conf", []byte("hostname = \"h.example\"\n[listen]\naddresses = [\""+a+"\"]\n"))
		if err == nil || !strings.Contains(err.Error(), "l.conf:3: listen.addresses:") {
			t.Errorf("addresses = [%q]: %v", a, err)
		}
	}
	for _, a := range []string{"127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"} {
		if _, err := Parse("l.conf", []byte("hostname = \"h.example\"\n[listen]\naddresses = [\""+a+"\"]\n")); err != nil {
			t.Errorf("addresses = [%q]: %v", a, err)
		}
	}
	for _, bad := range []string{"ports = [70000]", "ports = [\"25\"]", "max_connections = 0", "cert_file = \"\"", "command_timeout = \"0s\""} {
		if _, err := Parse("l.conf", []byte("hostname = \"h.example\"\n[listen]\n"+bad+"\n")); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// The system spool serves the listener by default; a private spool does
// not unless its file says so, and keeps its socket inside the spool.
func TestListenDefaults(t *testing.T) {
	c, err := Parse("l.conf", []byte("hostname = \"h.example\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Listen.Enabled || c.Listen.Socket != "/run/mailshim/smtp.sock" || len(c.Listen.Ports) != 2 || c.Listen.Ports[0] != 25 || c.Listen.Ports[1] != 587 {
		t.Errorf("system spool: %+v", c.Listen)
	}
	c, err = Parse("l.conf", []byte("hostname = \"h.example\"\nspool = \"/tmp/x/spool\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.Enabled || c.Listen.Socket != "/tmp/x/spool/smtp.sock" {
		t.Errorf("private spool: %+v", c.Listen)
	}
	c, err = Parse("l.conf", []byte("hostname = \"h.example\"\nspool = \"/tmp/x/spool\"\n[listen]\nenabled = true\nports = 2525\nsocket = \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Listen.Enabled || c.Listen.Socket != "" || len(c.Listen.Ports) != 1 || c.Listen.Ports[0] != 2525 {
		t.Errorf("private spool, enabled: %+v", c.Listen)
	}
}
