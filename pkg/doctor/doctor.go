// Package doctor is `relayd doctor`: the checklist an administrator runs by
// hand when an upstream refuses mail ("Relay access denied", "Must issue a
// STARTTLS command first", "Authentication failed", "Sender address
// rejected: not owned by user"), turned into checks that each return a
// typed result.
//
// Local checks (Local) look at this machine: the configuration, the
// package's files and modes (packaging/layout.txt), the setgid sendmail or
// its submission socket fallback, the spool, relayd's control socket, the
// secrets and the host name. Upstream checks (Upstream) talk to one
// upstream stage by stage — DNS, TCP, greeting, EHLO, STARTTLS, the TLS
// certificate (chain, name, expiry) and handshake, capabilities, AUTH,
// MAIL FROM for each sender, RCPT TO an address outside the upstream's
// domains, RSET, QUIT — and stop at the first hard failure, listing the
// rest as skipped. Nothing is sent: the transaction is reset before DATA.
//
// Every failure carries the upstream's reply (whole), the cause and the fix
// in the same words as relayd's log: they come from pkg/relay's
// explanations (relay.Classify, relay.Refine), not from a table of doctor's
// own. Every step has its own timeout.
//
// Its Go API is not stable.
package doctor

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Status is the outcome of one check.
type Status string

const (
	OK      Status = "ok"
	Fail    Status = "fail"
	Warn    Status = "warn"
	Skipped Status = "skipped"
)

// Check is one check's result.
type Check struct {
	// Name says what was checked ("config", "tcp", "auth", "mail", ...).
	Name string `json:"name"`
	// Upstream is "N host:port" for an upstream check, "" for a local one.
	Upstream string `json:"upstream,omitempty"`
	Status   Status `json:"status"`
	// Saw is what the check saw, in one line.
	Saw string `json:"saw"`
	// Reply is the upstream's reply, whole, when a reply is the finding.
	Reply string `json:"reply,omitempty"`
	// Cause and Fix explain a failure or warning (relayd's words).
	Cause string `json:"cause,omitempty"`
	Fix   string `json:"fix,omitempty"`
	// Unknown: the reply is not one relayd knows how to explain.
	Unknown bool `json:"unknown_reply,omitempty"`
}

// Report is everything doctor found.
type Report struct {
	Checks []Check `json:"checks"`
	// Sent is the outcome of the test message (--send-to), if any.
	Sent *Sent `json:"sent,omitempty"`
}

// Sent is the outcome of a test message sent through the queue.
type Sent struct {
	ID       string `json:"id"`
	To       string `json:"to"`
	Status   string `json:"status"` // "delivered", "deferred", "failed", "timeout"
	QueueID  string `json:"upstream_queue_id,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	Reply    string `json:"reply,omitempty"`
}

// Add appends checks.
func (r *Report) Add(cs ...Check) { r.Checks = append(r.Checks, cs...) }

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return r.Sent != nil && r.Sent.Status != "delivered"
}

// FirstFailure returns the first failed check, or nil.
func (r *Report) FirstFailure() *Check {
	for i := range r.Checks {
		if r.Checks[i].Status == Fail {
			return &r.Checks[i]
		}
	}
	return nil
}

// Redact replaces every secret (as given, and in the base64 forms SASL
// PLAIN and LOGIN put on the wire) in every field with "[redacted]". Doctor
// never prints a secret; this is the last line of that defence, for a
// server that would echo one back.
func (r *Report) Redact(secrets ...string) {
	var forms []string
	for _, s := range secrets {
		if len(s) < 3 {
			continue
		}
		forms = append(forms, s, base64.StdEncoding.EncodeToString([]byte(s)))
	}
	if len(forms) == 0 {
		return
	}
	red := func(s string) string {
		for _, f := range forms {
			s = strings.ReplaceAll(s, f, "[redacted]")
		}
		return s
	}
	for i := range r.Checks {
		c := &r.Checks[i]
		c.Saw, c.Reply, c.Cause, c.Fix = red(c.Saw), red(c.Reply), red(c.Cause), red(c.Fix)
	}
	if r.Sent != nil {
		r.Sent.Reply = red(r.Sent.Reply)
	}
}

var marks = map[Status]string{OK: "✔", Fail: "✘", Warn: "!", Skipped: "-"}

// WriteText writes one line per check — the mark (✔ ✘ ! -), the check's
// name, what it saw — and, under every failure and warning, the
// upstream's reply, the cause and the fix.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	last := "\x00"
	for _, c := range r.Checks {
		if c.Upstream != last {
			if c.Upstream == "" {
				b.WriteString("local\n")
			} else {
				fmt.Fprintf(&b, "upstream %s\n", c.Upstream)
			}
			last = c.Upstream
		}
		saw := c.Saw
		if c.Status == Skipped {
			saw = "skipped: " + saw
		}
		fmt.Fprintf(&b, "  %s %-13s %s\n", marks[c.Status], c.Name, oneLine(saw))
		if c.Status == Fail || c.Status == Warn {
			if c.Reply != "" {
				fmt.Fprintf(&b, "      reply: %s\n", oneLine(c.Reply))
			}
			switch {
			case c.Unknown:
				fmt.Fprintf(&b, "      cause: an unknown reply: relayd has no explanation for it; the reply above is the upstream's, whole\n")
			case c.Cause != "":
				fmt.Fprintf(&b, "      cause: %s\n", oneLine(c.Cause))
			}
			if c.Fix != "" {
				fmt.Fprintf(&b, "      fix:   %s\n", oneLine(c.Fix))
			}
		}
	}
	if s := r.Sent; s != nil {
		fmt.Fprintf(&b, "test message %s to %s: %s", s.ID, s.To, s.Status)
		if s.QueueID != "" {
			fmt.Fprintf(&b, ", upstream queue id %s", s.QueueID)
		}
		if s.Upstream != "" {
			fmt.Fprintf(&b, " (%s)", s.Upstream)
		}
		if s.Reply != "" {
			fmt.Fprintf(&b, ": %s", oneLine(s.Reply))
		}
		b.WriteString("\n")
	}
	n, first := 0, r.FirstFailure()
	for _, c := range r.Checks {
		if c.Status == Fail {
			n++
		}
	}
	switch {
	case first != nil:
		where := first.Name
		if first.Upstream != "" {
			where = "upstream " + first.Upstream + ": " + first.Name
		}
		fmt.Fprintf(&b, "%d check(s) failed; the first at %s\n", n, where)
	case r.Failed():
		b.WriteString("the test message was not delivered\n")
	default:
		b.WriteString("all checks passed\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	out := struct {
		OK bool `json:"ok"`
		*Report
	}{!r.Failed(), r}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
