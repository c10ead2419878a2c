package policy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Subject is the notice's Subject: line.
func (n *Notice) Subject() string {
	limit := "frozen"
	if n.Violation != nil {
		limit = n.Violation.Limit
	}
	return fmt.Sprintf("mailshim: account %s tripped %s (%s)", n.Account.Name(), limit, n.Action)
}

// Text is the notice's body: which account, which limit, what was done,
// the account's limits, its recent messages (script, Subject, To), and
// what the admin can do.
func (n *Notice) Text() string {
	var b strings.Builder
	name := n.Account.Name()
	fmt.Fprintf(&b, "Account %s (uid %d) tripped a sending limit at %s.\n\n", name, n.Account.UID, n.Time.UTC().Format(time.RFC3339))
	if v := n.Violation; v != nil {
		fmt.Fprintf(&b, "Limit:    %s\n", v.Error())
		fmt.Fprintf(&b, "Counts:   %d against a limit of %d\n", v.Got, v.Max)
	}
	fmt.Fprintf(&b, "Action:   %s", n.Action)
	switch n.Action {
	case Hold:
		fmt.Fprintf(&b, " (messages over the limit wait in the held queue)")
	case Defer:
		fmt.Fprintf(&b, " (messages over the limit are queued and sent at the allowed rate)")
	case Refuse:
		fmt.Fprintf(&b, " (messages over the limit are refused; the caller or the sender is told)")
	}
	b.WriteString("\n\nLimits of this account (and the [policy] table each comes from):\n")
	var keys []string
	for k := range n.Limits.Source {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-22s %-12s %s\n", k, n.Limits.value(k), n.Limits.Source[k])
	}
	b.WriteString("\nIts last messages (scripts are as the caller claimed them):\n")
	scripts := map[string]int{}
	for _, s := range n.Recent {
		script := s.Script
		if script == "" {
			script = "(none recorded)"
		}
		scripts[script]++
		fmt.Fprintf(&b, "  %s %s %-7s script=%s\n      Subject: %s\n      To: %s\n      Envelope recipients: %s\n", s.Time.UTC().Format(time.RFC3339), s.ID, s.Action,
			strconv.QuoteToASCII(script), strconv.QuoteToASCII(s.Subject), s.toText(), s.rcptText())
	}
	b.WriteString("\nScripts among them:\n")
	type sc struct {
		s string
		n int
	}
	var sl []sc
	for s, c := range scripts {
		sl = append(sl, sc{s, c})
	}
	sort.Slice(sl, func(i, j int) bool { return sl[i].n > sl[j].n || sl[i].n == sl[j].n && sl[i].s < sl[j].s })
	for _, x := range sl {
		fmt.Fprintf(&b, "  %4d  %s\n", x.n, strconv.QuoteToASCII(x.s))
	}
	fmt.Fprintf(&b, `
What to do:
  relayd queue list --held --user %[1]s      what is held
  relayd queue freeze --user %[1]s           hold everything it sends until you thaw it
  relayd queue delete --user %[1]s           delete its held mail (spam)
  relayd queue release --user %[1]s          send its held mail (a false alarm)
  relayd stats                                what each account sent

This notice is sent once; the next one comes only after the account has
gone %s without tripping a limit.
`, name, NoticeQuiet)
	return b.String()
}

// value is the resolved value of key k, as text.
func (l *Limits) value(k string) string {
	switch k {
	case "from_domains":
		if l.FromDomains == nil {
			return "any"
		}
		return strings.Join(l.FromDomains, ",")
	case "max_recipients":
		return limitText(int64(l.MaxRecipients))
	case "max_size":
		return limitText(l.MaxSize)
	case "max_held":
		return limitText(int64(l.MaxHeld))
	case "max_quarantined":
		return limitText(int64(l.MaxQuarantined))
	case "action":
		return string(l.Action)
	}
	if r, ok := RateByName(k); ok {
		return limitText(int64(l.Rates[r]))
	}
	return ""
}

func limitText(n int64) string {
	if n <= 0 {
		return "no limit"
	}
	return strconv.FormatInt(n, 10)
}

// LogKV is the notice as the key/value pairs of its log line.
func (n *Notice) LogKV() []any {
	kv := []any{"account", n.Account.Name(), "uid", n.Account.UID, "action", string(n.Action)}
	if v := n.Violation; v != nil {
		kv = append(kv, "limit", v.Limit, "max", v.Max, "got", v.Got, "source", v.Source)
	} else {
		kv = append(kv, "limit", "frozen")
	}
	var scripts, subjects, tos []string
	seen := map[string]bool{}
	for i := len(n.Recent) - 1; i >= 0 && len(subjects) < 3; i-- {
		s := n.Recent[i]
		if !seen[s.Script] {
			seen[s.Script] = true
			scripts = append(scripts, s.Script)
		}
		subjects = append(subjects, s.Subject)
		to := s.To
		if to == "" {
			to = "(no To: header) " + strings.Join(s.Rcpts, ",")
		}
		tos = append(tos, to)
	}
	return append(kv, "scripts", strings.Join(scripts, ","), "subjects", strings.Join(subjects, " | "), "to", strings.Join(tos, " | "))
}

// toText is the sample's To: header, quoted, or says it had none.
func (s *Sample) toText() string {
	if s.To == "" {
		return "(no To: header)"
	}
	return strconv.QuoteToASCII(s.To)
}

// rcptText lists the sample's envelope recipients (each quoted when it
// is not plain ASCII) and how many more there were.
func (s *Sample) rcptText() string {
	if s.NRcpts == 0 {
		return "(none recorded)"
	}
	var l []string
	for _, r := range s.Rcpts {
		q := strconv.QuoteToASCII(r)
		if q[1:len(q)-1] == r && !strings.ContainsAny(r, " ,") {
			q = r
		}
		l = append(l, q)
	}
	t := strings.Join(l, ", ")
	if more := s.NRcpts - len(s.Rcpts); more > 0 {
		t += fmt.Sprintf(" and %d more", more)
	}
	return t
}
