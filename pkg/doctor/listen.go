package doctor

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// checkListen: every address, port and Unix socket of the loopback SMTP
// listener ([listen]) answers with a 220 greeting; where STARTTLS is
// offered, the certificate verifies against the system roots for the
// address the applications use (PHPMailer and Rails start TLS whenever it
// is offered, and then refuse a certificate they do not trust).
func checkListen(o LocalOptions) Check {
	c := Check{Name: CListen}
	l := o.Config.Listen
	if !l.Enabled {
		c.Status, c.Saw = Skipped, "no loopback SMTP listener ([listen] enabled = false)"
		return c
	}
	var seen, bad, fixes []string
	var untrusted, missing []string
	// The names applications use besides the address: localhost and the
	// host name (relayd tls-init's certificate names both).
	var names []string
	for _, h := range []string{"localhost", strings.TrimSuffix(o.Config.Hostname, ".")} {
		if h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	probe := func(network, addr, name string) {
		st, err := probeListener(network, addr, name, o.Timeout, o.Roots, names)
		for _, m := range st.missing {
			if !slices.Contains(missing, m) {
				missing = append(missing, m)
			}
		}
		switch {
		case err != nil:
			bad = append(bad, addr+": "+err.Error())
		case st.untrusted != "":
			untrusted = append(untrusted, addr+": "+st.untrusted)
			seen = append(seen, addr+" ("+st.summary+")")
		default:
			seen = append(seen, addr+" ("+st.summary+")")
		}
	}
	for _, a := range l.Addresses {
		for _, p := range l.Ports {
			if p == 0 {
				seen = append(seen, a+": port 0 (any free port): not checked")
				continue
			}
			probe("tcp", net.JoinHostPort(a, strconv.Itoa(p)), a)
		}
	}
	if l.Socket != "" {
		probe("unix", l.Socket, "")
	}
	switch {
	case len(bad) > 0:
		c.Status, c.Saw = Fail, strings.Join(bad, "; ")
		c.Cause = "the loopback SMTP listener does not answer there: applications that send through SMTP to this host fail"
		fixes = append(fixes, "read relayd's log (journalctl -u relayd, event=listen: a port in use, or under 1024 without relayd.socket); systemctl enable --now relayd.socket; or change [listen] addresses and ports")
		c.Fix = strings.Join(fixes, "; ")
	case len(untrusted) > 0:
		c.Status, c.Saw = Warn, strings.Join(untrusted, "; ")
		c.Cause = "the listener offers STARTTLS with a certificate the system does not trust: PHPMailer and Rails, which start TLS whenever it is offered, then refuse to send"
		c.Fix = "run relayd tls-init as root (it makes the certificate and has the system trust it), then systemctl restart relayd (a reload keeps the certificate it has)"
	case len(missing) > 0:
		c.Status = Warn
		c.Saw = strings.Join(seen, ", ") + "; the certificate does not name " + strings.Join(missing, " or ")
		c.Cause = "an application configured with " + strings.Join(missing, " or ") + " as its SMTP host verifies the certificate for that name and refuses to send"
		c.Fix = "run relayd tls-init as root (it makes a certificate for 127.0.0.1, ::1, localhost and the hostname of mailshim.conf), then systemctl restart relayd; or give [listen] cert_file a certificate that names " + strings.Join(missing, " and ")
	default:
		c.Status, c.Saw = OK, strings.Join(seen, ", ")
	}
	return c
}

type listenState struct {
	summary   string
	untrusted string
	missing   []string // names the (trusted) certificate does not name
}

// probeListener reads the greeting, says EHLO and, when STARTTLS is
// offered over TCP, verifies the certificate for name against roots (nil:
// the system's) and says which of also it does not name; then QUIT.
func probeListener(network, addr, name string, timeout time.Duration, roots *x509.CertPool, also []string) (listenState, error) {
	var st listenState
	conn, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return st, fmt.Errorf("%s", connErr(err))
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * timeout))
	r := textproto.NewReader(bufio.NewReader(conn))
	code, msg, err := r.ReadResponse(0)
	if err != nil {
		return st, fmt.Errorf("no greeting: %v", err)
	}
	if code != 220 {
		return st, fmt.Errorf("greeting %d %s", code, oneLine(msg))
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	fmt.Fprintf(conn, "EHLO %s\r\n", host)
	code, msg, err = r.ReadResponse(0)
	if err != nil || code != 250 {
		return st, fmt.Errorf("EHLO: %d %s %v", code, oneLine(msg), err)
	}
	starttls := strings.Contains(strings.ToUpper(msg), "\nSTARTTLS")
	st.summary = "220"
	if !starttls {
		st.summary += ", no STARTTLS"
		fmt.Fprintf(conn, "QUIT\r\n")
		return st, nil
	}
	if network != "tcp" {
		st.summary += ", STARTTLS"
		fmt.Fprintf(conn, "QUIT\r\n")
		return st, nil
	}
	fmt.Fprintf(conn, "STARTTLS\r\n")
	if code, msg, err = r.ReadResponse(0); err != nil || code != 220 {
		return st, fmt.Errorf("STARTTLS: %d %s %v", code, oneLine(msg), err)
	}
	// As PHP and Ruby do: the system roots, the name the application
	// connected to.
	tc := tls.Client(conn, &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		st.summary += ", STARTTLS"
		st.untrusted = "certificate not trusted for " + name + ": " + err.Error()
		return st, nil
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		for _, h := range also {
			if certs[0].VerifyHostname(h) != nil {
				st.missing = append(st.missing, h)
			}
		}
	}
	fmt.Fprintf(tc, "QUIT\r\n")
	st.summary += ", STARTTLS, certificate trusted for " + name
	return st, nil
}

func connErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
