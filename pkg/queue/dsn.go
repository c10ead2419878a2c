package queue

// Delivery status notifications (RFC 3464) for permanent failures and
// expired messages, and the one "delayed" notice for a message still
// being retried after [queue] delay_notice.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"

	"github.com/mailshim/mailshim/pkg/config"
	mailmsg "github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/pickup"
	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// maxDSNHeaders bounds the original headers copied into a DSN.
const maxDSNHeaders = 64 << 10

// bounce queues a DSN for the failed recipients of m and returns its ID.
func (q *Queue) bounce(m *spool.Meta, failed []spool.RcptFailure, upstream string, now time.Time) (string, error) {
	orig, err := q.originalHeaders(m.ID)
	if err != nil {
		orig = []byte(fmt.Sprintf("X-Mailshim-Note: the original headers could not be read: %v\n", err))
	}
	return q.queueDSN(m, failed, upstream, now, orig)
}

// Reject queues a DSN to m.Env.Sender for a message that was refused
// before it entered the queue (pickup.Pickup.Reject): every recipient
// failed with why's cause, fix and status; headers is the message's header
// section. It returns the DSN's queue ID, which is m.ID: the refused
// maildrop file's, so that the bounce is pickup's to hold until the
// file's removal is durable, and Recover drops it while the file is still
// there (pickup refuses the file again and queues its bounce anew): a
// power loss cannot make it two bounces.
func (q *Queue) Reject(m *spool.Meta, why *pickup.RejectError, headers []byte) (string, error) {
	rcpts := m.Env.Recipients
	if len(rcpts) == 0 {
		rcpts = []string{""}
	}
	var failed []spool.RcptFailure
	for _, r := range rcpts {
		failed = append(failed, spool.RcptFailure{Rcpt: r, Cause: why.Cause, Fix: why.Fix, Status: why.Status})
	}
	return q.queueNotice(m, DSN{ID: m.ID, Date: q.now(), Failed: failed, OriginalHeaders: headers})
}

func (q *Queue) queueDSN(m *spool.Meta, failed []spool.RcptFailure, upstream string, now time.Time, orig []byte) (string, error) {
	return q.queueNotice(m, DSN{Date: now, Failed: failed, Upstream: upstream, OriginalHeaders: orig})
}

// selfName is the user name of relayd's own UID ("" when it has none),
// which every notice it queues records: looked up once, not in the
// password database at every bounce.
var selfName = sync.OnceValue(func() string {
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		return u.Username
	}
	return ""
})

// queueNotice queues the DSN d about m (Hostname, To and Original filled
// in here, and its ID when not given) from the null sender to m's sender,
// through Settings.Aliases when that is a local name.
func (q *Queue) queueNotice(m *spool.Meta, n DSN) (string, error) {
	now := n.Date
	id := n.ID
	if id == "" {
		id = spool.NewID(now)
	}
	set := q.settings()
	n.ID, n.Hostname, n.To, n.Original = id, set.Hostname, m.Env.Sender, m
	body, err := BuildDSN(n)
	if err != nil {
		return "", err
	}
	rcpts := []string{m.Env.Sender}
	if set.Aliases != nil {
		if r := set.Aliases(rcpts); len(r) > 0 {
			rcpts = r
		}
	}
	dm := &spool.Meta{
		Version: spool.Version, ID: id, Time: now,
		Env:    spool.Envelope{Sender: "<>", Recipients: rcpts},
		Origin: spool.Origin{UID: os.Getuid(), GID: os.Getgid(), Via: "dsn"},
	}
	dm.Origin.User = selfName()
	dm.Extra = [][2]string{{"dsn-for", m.ID}}
	d, err := q.sp.NewMessage(dm)
	if err != nil {
		return "", err
	}
	if _, err := d.Write(body); err != nil {
		d.Abort()
		return "", err
	}
	if err := d.Commit(); err != nil {
		return "", err
	}
	// Durable before the message it is about changes state.
	if err := q.sp.SyncIDs(id); err != nil {
		q.sp.RemoveMessage(id)
		return "", err
	}
	q.Kick()
	return id, nil
}

// originalHeaders reads the header section of the queued message id
// (bounded).
func (q *Queue) originalHeaders(id string) ([]byte, error) {
	f, m, err := q.sp.OpenMessage(id)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(io.LimitReader(io.NewSectionReader(f, m.BodyOffset, m.Size), maxDSNHeaders))
	var b bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if line == "\n" || line == "\r\n" {
			break
		}
		b.WriteString(line)
		if err != nil {
			break
		}
	}
	return b.Bytes(), nil
}

// DSN describes one delivery status notification.
type DSN struct {
	ID              string // the DSN's own queue ID
	Hostname        string
	To              string // the original envelope sender
	Date            time.Time
	Original        *spool.Meta
	Failed          []spool.RcptFailure
	Upstream        string
	OriginalHeaders []byte // the original message's header section
	// Delayed makes it a delay notice (RFC 3464 Action: delayed): the
	// recipients in Failed are still being retried, until RetryUntil.
	Delayed    bool
	RetryUntil time.Time
}

// noteDelay is called when a message is deferred (recipients rcpts still
// to do, last the latest temporary error): once it has waited the
// configured delay_notice since its arrival, its sender gets one "delayed"
// DSN, recorded in d (DelayNotice, written with the deferral) so that it
// is never sent twice, restarts included. Never for a bounce (null
// sender) — a DSN is never answered with a DSN — nor when the sender
// asked for no delay notices (RFC 3461 NOTIFY without DELAY).
func (q *Queue) noteDelay(m *spool.Meta, d *spool.Delivery, rcpts []string, last *relay.Error, upstream string, now time.Time) {
	set := q.settings()
	if set.DelayNotice <= 0 || d.DelayNotice != "" || now.Sub(m.Time) < set.DelayNotice ||
		m.Env.Sender == "<>" || m.Env.Sender == "" || !mailmsg.NotifyAllows(m.Env.Notify, mailmsg.NotifyDelay) {
		return
	}
	var delayed []spool.RcptFailure
	for _, r := range rcpts {
		f := spool.RcptFailure{Rcpt: r}
		if last != nil {
			f.Reply, f.Cause, f.Fix = errReply(last), explain(last), last.Fix
		}
		delayed = append(delayed, f)
	}
	orig, err := q.originalHeaders(m.ID)
	if err != nil {
		orig = []byte(fmt.Sprintf("X-Mailshim-Note: the original headers could not be read: %v\n", err))
	}
	until := time.Time{}
	if set.Lifetime > 0 {
		until = m.Time.Add(set.Lifetime)
	}
	id, err := q.queueNotice(m, DSN{Failed: delayed, Upstream: upstream, Date: now, OriginalHeaders: orig, Delayed: true, RetryUntil: until})
	if err != nil {
		q.log.MessageError(m.ID, "cannot queue the delay notice; will try at the next deferral", err)
		return
	}
	d.DelayNotice = id
	q.log.DelayNotice(m.ID, id, m.Env.Sender, len(rcpts), config.FormatDuration(now.Sub(m.Time).Round(time.Second)))
}

// BuildDSN returns the DSN message (LF line ends, as stored in the spool):
// a multipart/report (RFC 3464) with a human explanation, a
// message/delivery-status part and a text/rfc822-headers part.
func BuildDSN(d DSN) ([]byte, error) {
	// go-message writes the fields last set first: set them bottom-up.
	var h message.Header
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	h.Set("MIME-Version", "1.0")
	h.Set("Auto-Submitted", "auto-replied")
	h.Set("Message-ID", "<"+d.ID+"@"+d.Hostname+">")
	h.Set("Date", d.Date.Format(time.RFC1123Z))
	if d.Delayed {
		h.Set("Subject", "Delayed Mail (still being retried)")
	} else {
		h.Set("Subject", "Undelivered Mail Returned to Sender")
	}
	h.Set("To", d.To)
	h.Set("From", fmt.Sprintf("Mail Delivery System <MAILER-DAEMON@%s>", d.Hostname))
	var buf bytes.Buffer
	w, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, err
	}

	// 1. The explanation, in plain words.
	var ph message.Header
	ph.Set("Content-Description", "Notification")
	ph.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	pw, err := w.CreatePart(ph)
	if err != nil {
		return nil, err
	}
	var t strings.Builder
	fmt.Fprintf(&t, "This is the mail system at host %s.\n\n", d.Hostname)
	if d.Delayed {
		fmt.Fprintf(&t, "Your message has not yet been delivered to %s. It is still\n", plural(len(d.Failed), "one recipient", "some recipients"))
		t.WriteString("in the queue and will be retried")
		if !d.RetryUntil.IsZero() {
			fmt.Fprintf(&t, " until %s", d.RetryUntil.Format(time.RFC1123Z))
		}
		t.WriteString(";\nyou do not need to send it again. This is the only such notice;\n")
		t.WriteString("you will hear again only if it fails for good.\n")
		t.WriteString("The recipients and the last reasons are below.\n\n")
	} else {
		fmt.Fprintf(&t, "Your message could not be delivered to %s. It was not\n", plural(len(d.Failed), "one recipient", "some recipients"))
		t.WriteString("retried further. The recipients and the reasons are below.\n\n")
	}
	if d.Original != nil {
		fmt.Fprintf(&t, "Queue ID:  %s\nArrived:   %s\n", d.Original.ID, d.Original.Time.Format(time.RFC1123Z))
		if d.Upstream != "" {
			fmt.Fprintf(&t, "Upstream:  %s\n", d.Upstream)
		}
		t.WriteString("\n")
	}
	if d.Upstream == "" && refusedHere(d.Failed) {
		t.Write([]byte("It was refused on this host before it was sent on; no copy was kept.\n\n"))
	}
	for _, f := range d.Failed {
		if f.Rcpt == "" {
			t.WriteString("(no recipients):\n")
		} else {
			fmt.Fprintf(&t, "<%s>:\n", f.Rcpt)
		}
		if f.Reply != "" {
			fmt.Fprintf(&t, "    The upstream said: %s\n", oneLine(f.Reply))
		}
		if f.Cause != "" && f.Cause != f.Reply {
			fmt.Fprintf(&t, "    What it means: %s\n", oneLine(f.Cause))
		}
		if f.Fix != "" {
			fmt.Fprintf(&t, "    What to do: %s\n", oneLine(f.Fix))
		}
		t.WriteString("\n")
	}
	if _, err := io.WriteString(pw, t.String()); err != nil {
		return nil, err
	}
	pw.Close()

	// 2. message/delivery-status (RFC 3464 2.2 and 2.3).
	var sh message.Header
	sh.SetContentType("message/delivery-status", nil)
	sw, err := w.CreatePart(sh)
	if err != nil {
		return nil, err
	}
	var s strings.Builder
	fmt.Fprintf(&s, "Reporting-MTA: dns; %s\n", d.Hostname)
	if d.Original != nil {
		fmt.Fprintf(&s, "X-Mailshim-Queue-ID: %s\n", d.Original.ID)
		if d.Original.Env.EnvID != "" {
			fmt.Fprintf(&s, "Original-Envelope-Id: %s\n", d.Original.Env.EnvID)
		}
		fmt.Fprintf(&s, "Arrival-Date: %s\n", d.Original.Time.Format(time.RFC1123Z))
	}
	for _, f := range d.Failed {
		s.WriteString("\n")
		if f.Rcpt != "" {
			fmt.Fprintf(&s, "Final-Recipient: %s\n", dsnAddress(f.Rcpt))
		} else {
			s.WriteString("Final-Recipient: rfc822; unknown\n")
		}
		status := f.Status
		if status == "" {
			status = statusCode(f.Reply)
		}
		if d.Delayed {
			s.WriteString("Action: delayed\n")
			if status == "4.4.7" || status[0] != '4' {
				// No reply, or none that says more: a temporary failure
				// (4.4.7 would say the delivery time expired).
				status = "4.0.0"
			}
		} else {
			s.WriteString("Action: failed\n")
		}
		fmt.Fprintf(&s, "Status: %s\n", status)
		if d.Upstream != "" {
			host := d.Upstream
			if i := strings.LastIndexByte(host, ':'); i > 0 {
				host = host[:i]
			}
			fmt.Fprintf(&s, "Remote-MTA: dns; %s\n", host)
		}
		if isSMTPReply(f.Reply) {
			fmt.Fprintf(&s, "Diagnostic-Code: smtp; %s\n", oneLine(f.Reply))
		} else if f.Reply != "" {
			fmt.Fprintf(&s, "Diagnostic-Code: X-mailshim; %s\n", oneLine(f.Reply))
		}
		fmt.Fprintf(&s, "Last-Attempt-Date: %s\n", d.Date.Format(time.RFC1123Z))
		if d.Delayed && !d.RetryUntil.IsZero() {
			fmt.Fprintf(&s, "Will-Retry-Until: %s\n", d.RetryUntil.Format(time.RFC1123Z))
		}
	}
	if _, err := io.WriteString(sw, s.String()); err != nil {
		return nil, err
	}
	sw.Close()

	// 3. The original headers.
	var oh message.Header
	if d.Delayed {
		oh.Set("Content-Description", "Delayed Message Headers")
	} else {
		oh.Set("Content-Description", "Undelivered Message Headers")
	}
	oh.SetContentType("text/rfc822-headers", nil)
	ow, err := w.CreatePart(oh)
	if err != nil {
		return nil, err
	}
	if _, err := ow.Write(d.OriginalHeaders); err != nil {
		return nil, err
	}
	ow.Close()
	if err := w.Close(); err != nil {
		return nil, err
	}
	return bytes.ReplaceAll(buf.Bytes(), []byte("\r\n"), []byte("\n")), nil
}

// statusCode extracts the enhanced status code of a reply ("550 5.1.1
// ..."), else derives one from the basic code.
// isSMTPReply reports whether reply is an SMTP reply ("550 ..."), not a
// failure of ours ("5.6.7 SMTPUTF8 is required ...", a network error).
func isSMTPReply(reply string) bool {
	return len(reply) >= 3 && reply[0] >= '2' && reply[0] <= '5' && reply[1] >= '0' && reply[1] <= '9' && reply[2] >= '0' && reply[2] <= '9' &&
		(len(reply) == 3 || reply[3] == ' ' || reply[3] == '-')
}

func statusCode(reply string) string {
	f := strings.Fields(reply)
	if len(f) >= 2 && len(f[1]) >= 5 && (f[1][0] == '4' || f[1][0] == '5') && f[1][1] == '.' {
		if f[1][0] == '4' {
			// A temporary error that outlived the queue lifetime.
			return "4" + f[1][1:]
		}
		return f[1]
	}
	if len(f) >= 1 && len(f[0]) == 3 {
		switch f[0][0] {
		case '5':
			return "5.0.0"
		case '4':
			return "4.0.0"
		}
	}
	return "4.4.7" // delivery time expired, or no reply
}

// refusedHere reports whether no failure carries an upstream reply: the
// message was refused by mailshim itself.
func refusedHere(fs []spool.RcptFailure) bool {
	for _, f := range fs {
		if f.Reply != "" {
			return false
		}
	}
	return len(fs) > 0
}

// oneLine makes an upstream's text (or a reason built from it) fit one
// line of a bounce or of mailq's output, and safe to show: line breaks and
// tabs become spaces; other control characters (C0, DEL, C1), Unicode
// line separators and bidirectional controls become "?", so that a
// hostile upstream can neither add lines to a bounce nor drive the
// reader's terminal or reorder the text; invalid UTF-8 becomes U+FFFD (the
// bounce's text part is declared UTF-8); over 900 bytes it is cut at a
// character boundary.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\r' || r == '\n' || r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0,
			r == '\u2028' || r == '\u2029', r == '\u061c' || r == '\u200e' || r == '\u200f',
			r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > 900 {
		cut := 900
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// dsnAddress is addr as a DSN's address field gives it: "rfc822; addr",
// or for an address that is not ASCII "utf-8; " and its utf-8-addr-xtext
// form (RFC 6533 3), where every character outside printable ASCII, and
// "+", "=" and "\", is \x{HEX}: the delivery-status part stays ASCII.
func dsnAddress(addr string) string {
	if mailmsg.IsASCII(addr) {
		return "rfc822; " + addr
	}
	var b strings.Builder
	b.WriteString("utf-8; ")
	for _, r := range addr {
		if r > 0x20 && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, "\\x{%02X}", r)
	}
	return b.String()
}
