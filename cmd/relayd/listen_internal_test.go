package main

import (
	"net"
	"testing"
)

type fakeListener struct{ addr net.Addr }

func (f fakeListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (f fakeListener) Close() error              { return nil }
func (f fakeListener) Addr() net.Addr            { return f.addr }

// A socket systemd passes is served only when it is a loopback TCP socket
// or a Unix socket: relayd.socket edited to listen on the network does
// not make relayd serve the network.
func TestCheckPassed(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		ok   bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 587}, true},
		{&net.UnixAddr{Name: "/run/mailshim/smtp.sock", Net: "unix"}, true},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 25}, false},
		{&net.TCPAddr{IP: net.IPv6zero, Port: 25}, false},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 25}, false},
		{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}, false},
	} {
		err := checkPassed(fakeListener{c.addr})
		if (err == nil) != c.ok {
			t.Errorf("%v: %v", c.addr, err)
		}
	}
}
