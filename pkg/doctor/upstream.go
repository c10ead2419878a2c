package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/relay"
)

// DefaultRcpt is the recipient of the relay test: an address in a domain
// reserved for examples (RFC 2606), outside every upstream's own domains,
// so that an upstream that does not let us relay says so at RCPT. Nothing
// is ever sent to it: the transaction is reset before DATA.
const DefaultRcpt = "doctor-relay-test@example.org"

// DefaultTimeout bounds each step (a DNS lookup, the TCP connect, the TLS
// handshake, each command's reply).
const DefaultTimeout = 10 * time.Second

// UpstreamOptions are the settings of the upstream checks.
type UpstreamOptions struct {
	// Hostname is the name doctor gives in EHLO (relayd's).
	Hostname string
	// MaxMessageSize is compared with the upstream's SIZE.
	MaxMessageSize int64
	// Senders are the envelope senders tried with MAIL FROM, in order.
	Senders []string
	// Rcpt is the relay test's recipient (DefaultRcpt if "").
	Rcpt string
	// Timeout bounds each step (DefaultTimeout if 0).
	Timeout time.Duration
	// Resolver looks names up (net.DefaultResolver if nil).
	Resolver *net.Resolver
	// DialContext replaces the TCP dialer (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs, when not nil, replaces the system roots and ca_file (tests).
	RootCAs *x509.CertPool
	// Now is the clock for certificate dates (time.Now if nil).
	Now func() time.Time
	// SASL is relayd's relay.Options.SASL (OAuth 2 bearer tokens), asked
	// first for each mechanism, as relayd's sessions do.
	SASL func(ctx context.Context, up config.Upstream, mech string) (sasl.Client, error)
}

// Check names of the upstream checks, in order.
const (
	CSettings  = "settings"
	CDNS       = "dns"
	CTCP       = "tcp"
	CGreeting  = "greeting"
	CEHLO      = "ehlo"
	CSTARTTLS  = "starttls"
	CTLSChain  = "tls-chain"
	CTLSName   = "tls-name"
	CTLSExpiry = "tls-expiry"
	CTLS       = "tls-handshake"
	CCaps      = "capabilities"
	CAuth      = "auth"
	CMail      = "mail"
	CRcpt      = "rcpt"
	CRset      = "rset"
	CQuit      = "quit"
)

// probe is one run of the upstream checks.
type probe struct {
	ctx     context.Context
	up      config.Upstream
	o       UpstreamOptions
	label   string
	mode    string
	port    int
	addr    string
	out     []Check
	stopped string // the check that failed hard; the rest are skipped

	raw    net.Conn
	tc     *tls.Conn
	c      *smtp.Client
	authed bool
}

// Upstream runs the checks against up (its Password filled by
// config.LoadSecrets), index being its position in the configuration (1 for
// the first), and returns one Check per step. It stops at the first hard
// failure and lists the remaining steps as skipped.
func Upstream(ctx context.Context, index int, up config.Upstream, o UpstreamOptions) []Check {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Rcpt == "" {
		o.Rcpt = DefaultRcpt
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &probe{ctx: ctx, up: up, o: o}
	p.mode, p.port = mode(up)
	p.addr = net.JoinHostPort(up.Host, strconv.Itoa(p.port))
	p.label = fmt.Sprintf("%d %s (tls = %q)", index, p.addr, p.mode)
	defer p.close()
	p.run()
	return p.out
}

func mode(up config.Upstream) (string, int) {
	up = up.WithDefaults()
	return strings.ToLower(up.TLS), up.Port
}

// steps lists the checks of this run in order, for the skipped ones.
func (p *probe) steps() []string {
	s := []string{CSettings, CDNS, CTCP}
	tlsSteps := []string{CTLSChain, CTLSName, CTLSExpiry, CTLS}
	switch p.mode {
	case "tls":
		s = append(s, tlsSteps...)
		s = append(s, CGreeting)
	case "none":
		s = append(s, CGreeting, CEHLO, CSTARTTLS)
	default:
		s = append(s, CGreeting, CEHLO, CSTARTTLS)
		s = append(s, tlsSteps...)
	}
	s = append(s, CCaps, CAuth)
	for range p.senders() {
		s = append(s, CMail)
	}
	return append(s, CRcpt, CRset, CQuit)
}

func (p *probe) senders() []string {
	if len(p.o.Senders) == 0 {
		return []string{"postmaster@" + p.o.Hostname}
	}
	return p.o.Senders
}

func (p *probe) add(c Check) {
	c.Upstream = p.label
	p.out = append(p.out, c)
}

func (p *probe) ok(name, saw string) { p.add(Check{Name: name, Status: OK, Saw: saw}) }

func (p *probe) skip(name, why string) { p.add(Check{Name: name, Status: Skipped, Saw: why}) }

// fail records a hard failure explained by e (relayd's words) and stops.
func (p *probe) fail(name, saw string, e *relay.Error) {
	p.add(failCheck(name, saw, e))
	p.stopped = name
}

func failCheck(name, saw string, e *relay.Error) Check {
	c := Check{Name: name, Status: Fail, Saw: saw}
	if e != nil {
		c.Reply, c.Cause, c.Fix = e.Reply(), e.Cause, e.Fix
		if c.Reply != "" && c.Cause == "" {
			c.Unknown = true
		}
		if c.Reply == "" && c.Cause == "" && e.Err != nil {
			c.Cause = e.Err.Error()
		}
	}
	return c
}

// finish lists every step after the last one recorded as skipped.
func (p *probe) finish() {
	steps := p.steps()
	done := map[string]int{}
	for _, c := range p.out {
		done[c.Name]++
	}
	why := "after the failure at " + p.stopped
	for _, s := range steps {
		if done[s] > 0 {
			done[s]--
			continue
		}
		p.skip(s, why)
	}
}

func (p *probe) close() {
	switch {
	case p.c != nil:
		p.c.Close()
	case p.tc != nil:
		p.tc.Close()
	case p.raw != nil:
		p.raw.Close()
	}
}

func (p *probe) run() {
	defer func() {
		if p.stopped != "" {
			p.finish()
		}
	}()
	if !p.settings() || !p.dns() || !p.connect() {
		return
	}
	// Cancelling ctx ends every blocking step at once.
	stop := context.AfterFunc(p.ctx, func() { p.raw.Close() })
	defer stop()
	switch p.mode {
	case "tls":
		if !p.handshake() {
			return
		}
		if _, ok := p.greeting(p.tc); !ok {
			return
		}
	default:
		r, ok := p.greeting(p.raw)
		if !ok {
			return
		}
		caps, ok := p.ehloClear(r)
		if !ok || !p.starttls(r, caps) {
			return
		}
		if p.mode == "starttls" && !p.handshake() {
			return
		}
	}
	if !p.capabilities() || !p.auth() {
		return
	}
	p.transactions()
}

// settings asks relay.Dial whether it would accept this upstream's
// settings (tls mode, credentials with tls = "none", ca_file, client
// certificate, the EHLO name), without connecting: the refusal is then
// exactly relayd's.
func (p *probe) settings() bool {
	errNoDial := errors.New("doctor: settings accepted")
	opts := relay.Options{Hostname: p.o.Hostname, RootCAs: p.o.RootCAs,
		DialContext: func(context.Context, string, string) (net.Conn, error) { return nil, errNoDial }}
	_, err := relay.Dial(p.ctx, p.up, opts)
	var re *relay.Error
	if err == nil || !errors.As(err, &re) || errors.Is(err, errNoDial) {
		saw := fmt.Sprintf("host %s, port %d, tls = %q", p.up.Host, p.port, p.mode)
		if p.up.Username != "" {
			saw += ", username " + p.up.Username + ", password from " + p.up.PasswordFile
		} else {
			saw += ", no username (relayd will not authenticate)"
		}
		p.ok(CSettings, saw)
		return true
	}
	p.fail(CSettings, "relayd would refuse these settings", re)
	return false
}

func (p *probe) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.ctx, p.o.Timeout)
}

func (p *probe) dns() bool {
	host := p.up.Host
	if ip := net.ParseIP(host); ip != nil {
		p.ok(CDNS, host+" is an IP address, no lookup")
		return true
	}
	ctx, cancel := p.step()
	defer cancel()
	addrs, err := p.o.Resolver.LookupIPAddr(ctx, host)
	if err != nil || len(addrs) == 0 {
		if err == nil {
			err = &net.DNSError{Err: "no A or AAAA record", Name: host, IsNotFound: true}
		}
		e := relay.Classify(relay.StageConnect, err)
		saw := fmt.Sprintf("%s: no address (%v)", host, err)
		if hint := p.mxHint(host); hint != "" {
			saw += "; " + hint
		}
		p.fail(CDNS, saw, e)
		return false
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.IP.String())
	}
	saw := host + " has address " + strings.Join(s, ", ")
	if hint := p.mxHint(host); hint != "" {
		saw += "; " + hint
	}
	p.ok(CDNS, saw)
	return true
}

// mxHint: the host is a mail domain (it has MX records) — a hint when the
// name looks like a domain rather than a server, since the MX host
// receives the domain's mail and is not necessarily a submission server.
func (p *probe) mxHint(host string) string {
	if strings.Count(strings.TrimSuffix(host, "."), ".") != 1 {
		return ""
	}
	ctx, cancel := p.step()
	defer cancel()
	mxs, err := p.o.Resolver.LookupMX(ctx, host)
	if err != nil || len(mxs) == 0 {
		return ""
	}
	var names []string
	for _, mx := range mxs {
		names = append(names, strings.TrimSuffix(mx.Host, "."))
	}
	return fmt.Sprintf("hint: %s is a mail domain (MX %s); host must name the provider's submission server, often smtp.%s", host, strings.Join(names, ", "), host)
}

func (p *probe) connect() bool {
	ctx, cancel := p.step()
	defer cancel()
	dial := p.o.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	start := time.Now()
	conn, err := dial(ctx, "tcp", p.addr)
	if err != nil {
		e := relay.Classify(relay.StageConnect, err)
		var saw string
		switch {
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			saw = fmt.Sprintf("timed out after %v: no answer from %s (packets dropped)", p.o.Timeout, p.addr)
		case strings.Contains(e.Cause, "refused"):
			saw = "refused: nothing listens on " + p.addr
		case strings.Contains(e.Cause, "unreachable"):
			saw = p.addr + " is unreachable: " + err.Error()
		default:
			saw = err.Error()
		}
		p.fail(CTCP, saw, e)
		return false
	}
	p.raw = conn
	p.ok(CTCP, fmt.Sprintf("connected to %s in %v", conn.RemoteAddr(), time.Since(start).Round(time.Millisecond)))
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reply reads one SMTP reply with the step timeout.
func (p *probe) reply(conn net.Conn, r *textproto.Reader) (int, string, error) {
	conn.SetDeadline(time.Now().Add(p.o.Timeout))
	defer conn.SetDeadline(time.Time{})
	code, msg, err := r.ReadResponse(0)
	if err != nil {
		return 0, "", err
	}
	return code, msg, nil
}

// command sends one command on the connection before TLS and reads its
// reply, each with the step timeout.
func (p *probe) command(r *textproto.Reader, cmd string) (int, string, error) {
	p.raw.SetDeadline(time.Now().Add(p.o.Timeout))
	_, err := io.WriteString(p.raw, cmd+"\r\n")
	p.raw.SetDeadline(time.Time{})
	if err != nil {
		return 0, "", err
	}
	return p.reply(p.raw, r)
}

// replyErr turns a reply into go-smtp's error type (enhanced code parsed),
// which relay.Classify explains.
func replyErr(code int, msg string) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: msg}
	if f := strings.Fields(msg); len(f) > 0 {
		parts := strings.Split(f[0], ".")
		if len(parts) == 3 {
			var ec smtp.EnhancedCode
			okc := true
			for i, s := range parts {
				n, err := strconv.Atoi(s)
				if err != nil {
					okc = false
					break
				}
				ec[i] = n
			}
			if okc && ec[0] == code/100 {
				se.EnhancedCode = ec
				se.Message = strings.TrimSpace(strings.TrimPrefix(msg, f[0]))
			}
		}
	}
	return se
}

func (p *probe) greeting(conn net.Conn) (*textproto.Reader, bool) {
	r := textproto.NewReader(bufio.NewReader(conn))
	code, msg, err := p.reply(conn, r)
	if err != nil {
		saw := "no greeting: " + err.Error()
		if isTimeout(err) {
			saw = fmt.Sprintf("connected, but no greeting within %v (not an SMTP server, or one that waits for TLS first: port 465 needs tls = \"tls\")", p.o.Timeout)
		}
		p.fail(CGreeting, saw, relay.GreetingError(p.mode, err))
		return nil, false
	}
	if code != 220 {
		e := relay.Classify(relay.StageConnect, replyErr(code, msg))
		if e.Cause == "" && code == 421 {
			e.Cause = "the upstream is refusing connections for now (421: overloaded, shutting down, or limiting this client)"
		}
		p.fail(CGreeting, fmt.Sprintf("the upstream refused the session at its greeting (%d)", code), e)
		return nil, false
	}
	p.ok(CGreeting, strconv.Itoa(code)+" "+oneLine(strings.SplitN(msg, "\n", 2)[0]))
	if p.mode == "tls" {
		// From here go-smtp talks over the TLS connection; the greeting
		// is read, so it gets a synthetic one (see greeted).
		p.c = p.newClient(p.tc, r)
		if !p.ehloGoSMTP() {
			return nil, false
		}
	}
	return r, true
}

// ehloClear says EHLO before TLS and returns the capabilities offered in
// clear (relayd's own client uses them only to find STARTTLS).
func (p *probe) ehloClear(r *textproto.Reader) (map[string]string, bool) {
	code, msg, err := p.command(r, "EHLO "+p.o.Hostname)
	if err != nil {
		p.fail(CEHLO, "no answer to EHLO: "+err.Error(), relay.Classify(relay.StageEHLO, err))
		return nil, false
	}
	if code != 250 {
		p.fail(CEHLO, fmt.Sprintf("EHLO %s refused", p.o.Hostname), relay.Classify(relay.StageEHLO, replyErr(code, msg)))
		return nil, false
	}
	caps := map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		caps[strings.ToUpper(k)] = v
	}
	saw := "before TLS: " + capList(caps)
	if a, ok := caps["AUTH"]; ok {
		saw += "; AUTH " + a + " offered in clear (relayd never authenticates without TLS)"
	} else {
		saw += "; no AUTH in clear"
	}
	p.ok(CEHLO, saw)
	return caps, true
}

func capList(caps map[string]string) string {
	var ks []string
	for k := range caps {
		if k == "AUTH" {
			continue
		}
		ks = append(ks, k)
	}
	sort.Strings(ks)
	if len(ks) == 0 {
		return "no extensions"
	}
	return strings.Join(ks, " ")
}

func (p *probe) starttls(r *textproto.Reader, caps map[string]string) bool {
	_, offered := caps["STARTTLS"]
	if p.mode == "none" {
		if offered {
			p.add(Check{Name: CSTARTTLS, Status: Warn, Saw: `offered, but tls = "none": mail and credentials would go in clear`,
				Fix: `set tls = "starttls" for this upstream`})
		} else {
			p.ok(CSTARTTLS, `not offered; tls = "none" (a loopback upstream)`)
		}
		p.c = p.newClient(p.raw, r)
		return p.ehloGoSMTP()
	}
	if !offered {
		p.fail(CSTARTTLS, "STARTTLS not offered in the EHLO reply", &relay.Error{Stage: relay.StageTLS, Cause: relay.CauseNoSTARTTLS, Fix: relay.FixNoSTARTTLS})
		return false
	}
	code, msg, err := p.command(r, "STARTTLS")
	if err != nil {
		p.fail(CSTARTTLS, "no answer to STARTTLS: "+err.Error(), relay.Classify(relay.StageTLS, err))
		return false
	}
	if code != 220 {
		p.fail(CSTARTTLS, "STARTTLS refused", relay.Classify(relay.StageTLS, replyErr(code, msg)))
		return false
	}
	if r.R.Buffered() > 0 {
		// RFC 3207: nothing may follow the reply before the handshake; a
		// server (or a man in the middle) that sends more is injecting
		// responses into the TLS session.
		p.fail(CSTARTTLS, "the upstream sent data after its 220 reply to STARTTLS", &relay.Error{Stage: relay.StageTLS,
			Cause: "the upstream sent data after its STARTTLS reply (a broken server, or response injection between here and the upstream)",
			Fix:   "report it to the upstream's administrator; relayd does not use this connection"})
		return false
	}
	p.ok(CSTARTTLS, "offered; 220 "+oneLine(msg))
	return true
}

// certs is what the certificate verification found, step by step.
type certs struct {
	got               bool
	leaf              *x509.Certificate
	faults            map[string]relay.CertFault // by relay.CertChain, CertName, CertDates
	roots, serverName string
	expiresSoon       bool
	left              time.Duration // until the leaf's notAfter, when valid now
}

// tlsConfig is relayd's TLS configuration for the upstream
// (relay.TLSConfig), with the verification done here, step by step.
func (p *probe) tlsConfig() (*tls.Config, *certs, error) {
	up := p.up.WithDefaults()
	cfg, err := relay.TLSConfig(up, relay.Options{RootCAs: p.o.RootCAs})
	if err != nil {
		return nil, nil, err
	}
	v := &certs{serverName: cfg.ServerName, roots: "the system roots", faults: map[string]relay.CertFault{}}
	switch {
	case p.o.RootCAs != nil:
		v.roots = "the test roots"
	case up.CAFile != "":
		v.roots = "ca_file " + up.CAFile
	}
	roots := cfg.RootCAs // nil: the system roots, as for crypto/tls
	// crypto/tls would verify too, but stop at the first problem; doctor
	// has the chain, the name and the dates judged separately
	// (relay.CertFaults, which relayd's log uses too), to say which is
	// wrong. A failure still aborts the handshake.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the upstream sent no certificate")
		}
		v.got = true
		v.leaf = cs.PeerCertificates[0]
		now := p.o.Now()
		faults := relay.CertFaults(cs.PeerCertificates, roots, v.serverName, now)
		for _, f := range faults {
			v.faults[f.Check] = f
		}
		if _, expired := v.faults[relay.CertDates]; !expired {
			v.left = v.leaf.NotAfter.Sub(now)
			v.expiresSoon = v.left < 14*24*time.Hour
		}
		if len(faults) > 0 {
			return faults[0].Err
		}
		return nil
	}
	return cfg, v, nil
}

// certCheck is the failed check name for fault f, in relayd's words.
func certCheck(name, saw string, f relay.CertFault) Check {
	return failCheck(name, saw, &relay.Error{Stage: relay.StageTLS, Err: f.Err, Cause: f.Cause, Fix: f.Fix})
}

func (p *probe) handshake() bool {
	cfg, v, err := p.tlsConfig()
	if err != nil {
		// settings (relay.Dial) reads the same files: not reached.
		var re *relay.Error
		errors.As(err, &re)
		p.fail(CTLS, err.Error(), re)
		return false
	}
	p.tc = tls.Client(p.raw, cfg)
	ctx, cancel := p.step()
	defer cancel()
	err = p.tc.HandshakeContext(ctx)
	if !v.got {
		why := "no certificate received"
		for _, n := range []string{CTLSChain, CTLSName, CTLSExpiry} {
			p.skip(n, why)
		}
		saw := "handshake failed: " + errText(err)
		if isTimeout(err) || errors.Is(err, context.DeadlineExceeded) {
			saw = fmt.Sprintf("no TLS handshake within %v", p.o.Timeout)
		}
		p.fail(CTLS, saw, relay.Classify(relay.StageTLS, err))
		return false
	}
	leaf := v.leaf
	bad := len(v.faults) > 0
	if f, ok := v.faults[relay.CertChain]; ok {
		p.add(certCheck(CTLSChain, fmt.Sprintf("%s, issued by %s: not verified against %s", leaf.Subject, leaf.Issuer, v.roots), f))
	} else {
		p.ok(CTLSChain, fmt.Sprintf("%s, issued by %s, verified against %s", leaf.Subject, leaf.Issuer, v.roots))
	}
	if f, ok := v.faults[relay.CertName]; ok {
		p.add(certCheck(CTLSName, fmt.Sprintf("we connect as %s; the certificate is for %s", v.serverName, names(leaf)), f))
	} else {
		p.ok(CTLSName, fmt.Sprintf("%s is among %s", v.serverName, names(leaf)))
	}
	if f, ok := v.faults[relay.CertDates]; ok {
		now := p.o.Now()
		when := "expired " + span(now.Sub(leaf.NotAfter)) + " ago"
		if now.Before(leaf.NotBefore) {
			when = "not valid for another " + span(leaf.NotBefore.Sub(now))
		}
		p.add(certCheck(CTLSExpiry, fmt.Sprintf("%s: valid from %s to %s; now is %s", when, minute(leaf.NotBefore), minute(leaf.NotAfter), minute(now)), f))
	} else if v.expiresSoon {
		at := day(leaf.NotAfter)
		if v.left < 24*time.Hour {
			at = minute(leaf.NotAfter)
		}
		p.add(Check{Name: CTLSExpiry, Status: Warn, Saw: fmt.Sprintf("expires %s, in %s", at, span(v.left)),
			Cause: "the upstream's TLS certificate expires in less than 14 days; relayd stops sending when it has expired",
			Fix:   "tell the upstream's administrator to renew it"})
	} else {
		p.ok(CTLSExpiry, fmt.Sprintf("valid until %s (%s)", day(leaf.NotAfter), span(v.left)))
	}
	if bad {
		p.skip(CTLS, "aborted by doctor: the certificate did not verify (relayd does the same)")
		for _, c := range p.out {
			if c.Status == Fail {
				p.stopped = c.Name
				break
			}
		}
		return false
	}
	if err != nil {
		p.fail(CTLS, "handshake failed: "+errText(err), relay.Classify(relay.StageTLS, err))
		return false
	}
	st := p.tc.ConnectionState()
	p.ok(CTLS, fmt.Sprintf("%s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)))
	return true
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// span says how long d is in the unit that fits it: whole days from a
// day up, else hours (to the nearest, 1 to 23), else minutes.
func span(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day")
	case d >= time.Hour:
		return plural(min(int((d+30*time.Minute)/time.Hour), 23), "hour")
	case d >= time.Minute:
		return plural(int(d/time.Minute), "minute")
	}
	return "less than a minute"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func minute(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func names(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 {
		return "CN=" + c.Subject.CommonName + " (no subjectAltName)"
	}
	return strings.Join(n, ", ")
}

func errText(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// greeted hands go-smtp a connection whose greeting doctor has already
// read (or that has none, after STARTTLS): go-smtp's client reads a
// greeting before its first command, so it gets a synthetic one, followed
// by whatever doctor's reader had buffered.
type greeted struct {
	net.Conn
	pre []byte
}

func (g *greeted) Read(b []byte) (int, error) {
	if len(g.pre) > 0 {
		n := copy(b, g.pre)
		g.pre = g.pre[n:]
		return n, nil
	}
	return g.Conn.Read(b)
}

func (p *probe) newClient(conn net.Conn, r *textproto.Reader) *smtp.Client {
	pre := []byte("220 greeting already read by relayd doctor\r\n")
	if r != nil && r.R.Buffered() > 0 {
		b, _ := r.R.Peek(r.R.Buffered())
		pre = append(pre, b...)
	}
	c := smtp.NewClient(&greeted{Conn: conn, pre: pre})
	c.CommandTimeout = p.o.Timeout
	c.SubmissionTimeout = p.o.Timeout
	return c
}

// ehloGoSMTP says EHLO through go-smtp (after TLS; or again, for
// tls = "none"), which then knows the capabilities.
func (p *probe) ehloGoSMTP() bool {
	if p.c == nil {
		p.c = p.newClient(p.tc, nil)
	}
	if err := p.c.Hello(p.o.Hostname); err != nil {
		p.fail(CCaps, "EHLO "+p.o.Hostname+" failed: "+err.Error(), relay.Classify(relay.StageEHLO, err))
		return false
	}
	return true
}

func (p *probe) capabilities() bool {
	if p.c == nil {
		// STARTTLS: go-smtp starts over the TLS connection.
		if !p.ehloGoSMTP() {
			return false
		}
	}
	var saw []string
	st := OK
	var cause, fix string
	if ok, v := p.c.Extension("SIZE"); ok {
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch {
		case n > 0 && p.o.MaxMessageSize > n:
			saw = append(saw, fmt.Sprintf("SIZE %d (smaller than max_message_size %d)", n, p.o.MaxMessageSize))
			st, cause = Warn, "the upstream takes messages up to "+strconv.FormatInt(n, 10)+" bytes, less than max_message_size: larger ones are accepted locally and then bounced"
			fix = fmt.Sprintf("set max_message_size = %d (or less) so that sendmail refuses them at once", n)
		case n > 0:
			saw = append(saw, fmt.Sprintf("SIZE %d (max_message_size %d fits)", n, p.o.MaxMessageSize))
		default:
			saw = append(saw, "SIZE (no limit given)")
		}
	} else {
		saw = append(saw, "no SIZE")
	}
	for _, ext := range []struct{ name, without string }{
		{"8BITMIME", "8-bit messages are converted to quoted-printable"},
		{"SMTPUTF8", "IDN domains go as A-labels, and an address with non-ASCII before the @ fails with 5.6.7: a recipient alone, a sender its message"},
		{"PIPELINING", ""},
		{"DSN", ""},
	} {
		if ok, _ := p.c.Extension(ext.name); ok {
			saw = append(saw, ext.name)
		} else if ext.without != "" {
			saw = append(saw, "no "+ext.name+" ("+ext.without+")")
		} else {
			saw = append(saw, "no "+ext.name)
		}
	}
	if ok, mechs := p.c.Extension("AUTH"); ok {
		saw = append(saw, "AUTH "+mechs+" after TLS")
	} else {
		saw = append(saw, "no AUTH")
	}
	c := Check{Name: CCaps, Status: st, Saw: strings.Join(saw, "; "), Cause: cause, Fix: fix}
	p.add(c)
	return true
}

func (p *probe) tlsDone() bool {
	return p.tc != nil && p.tc.ConnectionState().HandshakeComplete
}

func (p *probe) auth() bool {
	if p.up.Username == "" {
		why := "no username configured for this upstream: relayd does not authenticate"
		if ok, mechs := p.c.Extension("AUTH"); ok {
			why += " (the upstream offers AUTH " + mechs + ": it may expect a login)"
		}
		p.skip(CAuth, why)
		return true
	}
	// Never in clear, whatever the configuration says (settings refuses
	// credentials with tls = "none" already).
	if !p.tlsDone() {
		p.fail(CAuth, "no TLS", &relay.Error{Stage: relay.StageAuth, Cause: "refusing to send credentials over a connection without TLS", Fix: `set tls = "starttls" or "tls"`})
		return false
	}
	offered, list := p.c.Extension("AUTH")
	if !offered {
		p.fail(CAuth, "AUTH not offered after TLS", &relay.Error{Stage: relay.StageAuth, Cause: relay.CauseNoAUTH, Fix: relay.FixNoAUTH})
		return false
	}
	up := p.up.WithDefaults()
	mechs := up.Auth
	client, mech, err := relay.SASLClient(p.ctx, p.c, up, p.o.SASL)
	if err != nil {
		e, ok := err.(*relay.Error)
		if !ok {
			e = &relay.Error{Stage: relay.StageAuth, Err: err, Cause: err.Error()}
		}
		p.fail(CAuth, "no OAuth 2 token", e)
		return false
	}
	if client == nil {
		p.fail(CAuth, "offered: "+list, &relay.Error{Stage: relay.StageAuth,
			Cause: fmt.Sprintf("no common SASL mechanism (we allow %s, the upstream offers %s)", strings.Join(mechs, " "), list),
			Fix:   "set auth in [[upstream]] to a mechanism the upstream offers (PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER)"})
		return false
	}
	if err := p.c.Auth(client); err != nil {
		e := relay.ClassifyAuth(mech, err)
		p.fail(CAuth, fmt.Sprintf("AUTH %s as %s refused", mech, p.up.Username), e)
		return false
	}
	p.authed = true
	from := "password from " + p.up.PasswordFile
	if p.up.OAuthFlow != "" {
		from = "token from " + p.up.OAuthTokenURL
	}
	p.ok(CAuth, fmt.Sprintf("AUTH %s as %s accepted (%s, not shown)", mech, p.up.Username, from))
	return true
}

// transactions runs MAIL FROM for each sender, each followed by RCPT TO
// the relay test address (Postfix checks the sender at RCPT by default,
// smtpd_delay_reject) and RSET; then QUIT. A refusal at RCPT that is about
// the sender is the sender's; one about relaying is the recipient's.
func (p *probe) transactions() {
	var rcpt *Check
	for _, s := range p.senders() {
		err := p.c.Mail(s, nil)
		if err != nil {
			e := relay.Refine(relay.Classify(relay.StageMail, err), p.up)
			p.add(failCheck(CMail, "MAIL FROM:<"+s+"> refused", e))
			if !p.reset() {
				return
			}
			continue
		}
		err = p.c.Rcpt(p.o.Rcpt, nil)
		switch {
		case err != nil && senderRefusal(err):
			e := relay.Refine(relay.Classify(relay.StageMail, err), p.up)
			p.add(failCheck(CMail, "MAIL FROM:<"+s+"> accepted, but the sender refused at RCPT TO:<"+p.o.Rcpt+">", e))
		case err != nil:
			p.ok(CMail, "MAIL FROM:<"+s+"> accepted")
			if rcpt == nil {
				saw := "RCPT TO:<" + p.o.Rcpt + "> (from <" + s + ">) refused"
				e := relay.Refine(relay.Classify(relay.StageRcpt, err), p.up)
				if p.authed && strings.Contains(strings.ToLower(e.Text), "relay") {
					// Only doctor knows the login was accepted on this
					// very connection: the credentials are right, the
					// upstream's relay rules refuse this login.
					saw += " after a successful AUTH as " + p.up.Username + ": the credentials are right, the upstream's relay rules refuse this login"
				}
				c := failCheck(CRcpt, saw, e)
				rcpt = &c
			}
		default:
			p.ok(CMail, "MAIL FROM:<"+s+"> accepted")
			if rcpt == nil || rcpt.Status != OK {
				rcpt = &Check{Name: CRcpt, Status: OK, Saw: "RCPT TO:<" + p.o.Rcpt + "> (from <" + s + ">) accepted: the upstream relays for us (nothing is sent: RSET follows)"}
			}
		}
		if !p.reset() {
			return
		}
	}
	if rcpt == nil {
		p.skip(CRcpt, "no sender was accepted")
	} else {
		p.add(*rcpt)
	}
	p.ok(CRset, "each transaction reset before DATA: nothing was sent")
	if err := p.c.Quit(); err != nil {
		p.add(Check{Name: CQuit, Status: Warn, Saw: "QUIT: " + err.Error()})
	} else {
		p.ok(CQuit, "221, connection closed")
	}
	p.c = nil
}

// reset sends RSET after a transaction; a failure ends the run.
func (p *probe) reset() bool {
	if err := p.c.Reset(); err != nil {
		p.fail(CRset, "RSET failed: "+err.Error(), relay.Classify(relay.StageMail, err))
		return false
	}
	return true
}

// senderRefusal reports a refusal at RCPT that is about the envelope
// sender (Postfix's "Sender address rejected").
func senderRefusal(err error) bool {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return false
	}
	t := strings.ToLower(se.Message)
	return strings.Contains(t, "sender address rejected") || strings.Contains(t, "not owned by") || strings.Contains(t, "sender verify failed")
}
