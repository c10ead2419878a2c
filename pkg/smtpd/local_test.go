package smtpd

import (
	"net"
	"net/netip"
	"testing"
)

// Only addresses of this host are local peers: loopback, or an address
// of one of its interfaces; a documentation address (192.0.2.1,
// 2001:db8::1) is not.
func TestIsLocalAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"} {
		if !isLocalAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s: not local", a)
		}
	}
	for _, a := range []string{"192.0.2.1", "2001:db8::1", "198.51.100.7"} {
		if isLocalAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s: local", a)
		}
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && !ip.IsLinkLocalUnicast() {
				if !isLocalAddr(ip) {
					t.Errorf("%s (an interface's address): not local", ip)
				}
			}
		}
	}
}
