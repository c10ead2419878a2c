package pickup

import (
	"bytes"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
)

// Rewriter holds what pickup needs from the configuration to qualify
// addresses and add trace headers. It is immutable; a config reload builds
// a new one.
type Rewriter struct {
	Hostname    string
	TraceHeader string
	TraceFields []string
	// TraceKey signs the origin header when set ([trace] key_file).
	TraceKey []byte
	cfg      *config.Config
}

// NewRewriter builds a Rewriter from cfg and loads the aliases file into
// cfg (config.LoadAliases: [aliases] wins over /etc/aliases). The returned
// errors are the aliases file's complaints, worth a log line each.
func NewRewriter(cfg *config.Config) (*Rewriter, []error) {
	host := cfg.Hostname
	if host == "" {
		host = config.DefaultHostname()
	}
	errs := cfg.LoadAliases()
	rw := &Rewriter{Hostname: host, TraceHeader: cfg.Trace.Header, TraceFields: cfg.Trace.Fields, cfg: cfg}
	if cfg.Trace.Key != "" {
		rw.TraceKey = []byte(cfg.Trace.Key)
	}
	return rw, errs
}

// local returns the local part of addr when addr is local to this host (no
// domain, or one of this host's names: config.LocalDomain), and whether
// it is.
func (r *Rewriter) local(addr string) (string, bool) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr, addr != ""
	}
	if config.LocalDomain(r.Hostname, addr[at+1:]) {
		return addr[:at], true
	}
	return "", false
}

// Recipients expands aliases (config.Resolve: recursive, loops cut) and
// qualifies bare local names with the host name; duplicates are dropped,
// order kept.
func (r *Rewriter) Recipients(rcpts []string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if k := strings.ToLower(a); !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	for _, a := range rcpts {
		a = strings.TrimSpace(a)
		name, isLocal := r.local(a)
		if !isLocal {
			add(a)
			continue
		}
		for _, t := range r.cfg.Resolve(name) {
			if strings.Contains(t, "@") {
				add(t)
			} else {
				add(t + "@" + r.Hostname)
			}
		}
	}
	return out
}

// senderFor maps a local name to its address through [senders]
// (config.SenderFor; "uid:N" applies only to the caller's own user name),
// else name@hostname.
func (r *Rewriter) senderFor(name string, o *spool.Origin) string {
	if name == "" {
		name = o.User
	}
	uid := -1
	if name == o.User {
		uid = o.UID
	}
	if a, ok := r.cfg.SenderFor(name, uid); ok {
		return a
	}
	if name == "" {
		name = "uid" + strconv.Itoa(o.UID)
	}
	return name + "@" + r.Hostname
}

// Sender resolves the envelope sender: "<>" stays, none given becomes the
// caller's mapped address, and a bare local name or name@hostname goes
// through the sender map; anything else is kept.
func (r *Rewriter) Sender(sender string, o *spool.Origin) string {
	switch {
	case sender == "<>":
		return sender
	case sender == "":
		return r.senderFor("", o)
	}
	if name, ok := r.local(sender); ok {
		return r.senderFor(name, o)
	}
	return sender
}

// RewriteFrom rewrites a From: header value whose (single) address is a
// bare local name or name@hostname through the sender map, keeping the
// display name and comments. It returns the value unchanged otherwise.
func (r *Rewriter) RewriteFrom(value string, o *spool.Origin) string {
	start, end, ok := addrSpan(value)
	if !ok {
		return value
	}
	addr := value[start:end]
	name, isLocal := r.local(addr)
	if !isLocal || !localPartOK(name) {
		return value
	}
	return value[:start] + r.senderFor(name, o) + value[end:]
}

// addrSpan finds the address in a one-mailbox header value (the scanner
// of package message); it gives up (false) on groups and lists.
func addrSpan(v string) (int, int, bool) {
	spans, list, ok := message.AddressSpans([]byte(v))
	if !ok || list || len(spans) != 1 {
		return 0, 0, false
	}
	return spans[0].Start, spans[0].End, true
}

// localPartOK reports whether a bare name in a header field is one
// pickup qualifies or rewrites: a local name by the rule every door uses
// for recipients (message.IsLocalName), in ASCII (a raw 8-bit address in a
// header is left as its writer put it).
func localPartOK(s string) bool {
	return message.IsASCII(s) && message.IsLocalName(s)
}

// receivedField is the Received: field naming the UID that pickup puts
// first in every message.
func (r *Rewriter) receivedField(o *spool.Origin, id string, t time.Time) message.Field {
	b := make([]byte, 0, 100+len(r.Hostname)+len(id))
	b = append(b, "Received: "...)
	b = r.appendReceived(b, o, id, t)
	return message.Field{Name: "Received", Raw: append(b, '\n')}
}

// appendReceived appends the Received: value to b:
// "from uid UID (USER) by HOST (mailshim) id ID; DATE".
func (r *Rewriter) appendReceived(b []byte, o *spool.Origin, id string, t time.Time) []byte {
	user := o.User
	if user == "" {
		user = "unknown"
	}
	b = append(b, "from uid "...)
	b = strconv.AppendInt(b, int64(o.UID), 10)
	b = append(b, " ("...)
	b = appendHeaderSafe(b, user)
	b = append(b, ") by "...)
	b = append(b, r.Hostname...)
	b = append(b, " (mailshim) id "...)
	b = append(b, id...)
	b = append(b, "; "...)
	return t.AppendFormat(b, time.RFC1123Z)
}

// Origin returns the origin header's value ("" when no fields are
// configured): its parts, separated by a space.
func (r *Rewriter) Origin(o *spool.Origin) string {
	b := make([]byte, 0, 128)
	part := func(k, v string) {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, v...)
	}
	for _, f := range r.TraceFields {
		switch f {
		case "uid":
			part("uid", strconv.Itoa(o.UID))
		case "user":
			if o.User != "" {
				part("user", traceValue(o.User))
			}
		case "script":
			if o.Script != "" {
				part("script", traceValue(o.Script))
			}
		}
	}
	return string(b)
}

// maxTraceValue bounds a value in the origin header as written: the
// quoted form of a path in a legacy encoding is four times its length.
const maxTraceValue = 300

// traceValue writes a value bare when it is plain printable ASCII without
// spaces or quotes, else Go-quoted in ASCII; a value longer than
// maxTraceValue as written is cut (and ends in "...") so that the header
// stays short and has no word that a line limit would have to break.
func traceValue(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == ';' {
			plain = false
			break
		}
	}
	if plain {
		if len(s) > maxTraceValue {
			return s[:maxTraceValue] + "..."
		}
		return s
	}
	q := strconv.QuoteToASCII(s)
	if len(q) <= maxTraceValue {
		return q
	}
	// Quoted rune by rune (an invalid byte is one "rune" of its own, as
	// QuoteToASCII writes it) until the limit.
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		_, n := utf8.DecodeRuneInString(s[i:])
		e := strconv.QuoteToASCII(s[i : i+n])
		e = e[1 : len(e)-1]
		if b.Len()+len(e) > maxTraceValue-len(`..."`) {
			b.WriteString("...")
			break
		}
		b.WriteString(e)
		i += n
	}
	b.WriteByte('"')
	return b.String()
}

// appendHeaderSafe appends the first 100 bytes of s with every byte
// that is not printable ASCII, or is '(', ')' or '\\', as '?'.
func appendHeaderSafe(b []byte, s string) []byte {
	for i := 0; i < len(s) && i < 100; i++ {
		if c := s[i]; c > ' ' && c < 0x7f && c != '(' && c != ')' && c != '\\' {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	return b
}

// addressFields are the header fields whose bare local addresses are
// qualified, as Postfix's append_at_myorigin does for local submissions.
var addressFields = []string{"From", "To", "Cc", "Reply-To", "Sender", "Resent-From", "Resent-To", "Resent-Cc", "Resent-Sender"}

// isAddressField reports whether name is one of addressFields.
func isAddressField(name string) bool {
	for _, n := range addressFields {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// QualifyField returns raw — a whole address header field, "Name: value"
// with its folded lines and line end — with "@" and the host name
// appended to every bare local address in it ("To: root, Ops <ops>"
// becomes "To: root@host, Ops <ops@host>"). Nothing else changes: not
// the display names, comments, groups or folding; aliases are not
// expanded (they are for the envelope). An address the scanner cannot
// place is left as it is.
func (r *Rewriter) QualifyField(raw []byte) []byte {
	colon := bytes.IndexByte(raw, ':')
	if colon < 0 {
		return raw
	}
	spans, _, ok := message.AddressSpans(raw[colon+1:])
	if !ok {
		return raw
	}
	var at []int // insertion points
	for _, sp := range spans {
		if a := raw[colon+1+sp.Start : colon+1+sp.End]; bytes.IndexByte(a, '@') < 0 && localPartOK(string(a)) {
			at = append(at, colon+1+sp.End)
		}
	}
	if len(at) == 0 {
		return raw
	}
	suffix := "@" + r.Hostname
	out := make([]byte, 0, len(raw)+len(at)*len(suffix))
	prev := 0
	for _, p := range at {
		out = append(out, raw[prev:p]...)
		out = append(out, suffix...)
		prev = p
	}
	return append(out, raw[prev:]...)
}
