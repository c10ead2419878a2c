package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Policy is what local users may do: the [policy] section.
type Policy struct {
	// AllowedSenders maps a local user name, "uid:N" or "*" to the
	// envelope senders that user may give (sendmail -f/-r, MAIL FROM in
	// -bs, the submission socket). Patterns: an address
	// ("noreply@example.com"), a bare local name ("root"), "*@example.com"
	// (any address at that domain), "%u@example.com" or "%u" (the user's
	// own name), "<>" (the null sender) and "*" (anything). The entry for
	// the user name wins, then "uid:N", then "*"; a user no entry applies
	// to is not restricted, and an empty list allows no sender at all.
	// The user's own name, bare or @hostname (the default sender), is
	// always allowed. Empty (the default): no policy, any sender. Only the
	// envelope is checked, never the From: header.
	AllowedSenders map[string][]string `toml:"allowed_senders"`

	// NoticeTo is where relayd sends its notice when an account trips a
	// limit (one message per episode); "" sends none (the log line stays).
	// Default "root" (through [aliases] and /etc/aliases).
	NoticeTo string `toml:"notice_to"`

	// Accounts are the limit tables, by key: "*" (everyone's defaults), a
	// user name, "uid:N" or "group:NAME" ([policy."*"], [policy.www-data],
	// [policy."uid:33"], [policy."group:customers"]). Every key of
	// [policy] that is not one of the fields above is such a table.
	Accounts map[string]PolicyAccount `toml:"<account>" conf:"rest"`
}

// PolicyAccount is one table of [policy]: limits for the accounts its key
// names. A key the table does not set falls through to the next table
// that applies (user name, uid:N, group:NAME, "*") and then to relayd's
// built-in default (package policy); Set tells which keys are written.
// A limit of 0 means no limit.
type PolicyAccount struct {
	// AllowedSenders joins [policy.allowed_senders] for this key: the
	// envelope senders it may give (not for "group:NAME" keys).
	AllowedSenders []string `toml:"allowed_senders"`
	// FromDomains lists the domains a From: header address may be in
	// ("example.com", "*.example.com" for its subdomains, "*" any).
	FromDomains []string `toml:"from_domains"`
	// MaxRecipients bounds the recipients of one message.
	MaxRecipients int `toml:"max_recipients"`
	// MaxSize bounds one message ("10MB"); max_message_size applies too.
	MaxSize int64 `toml:"max_size" conf:"size"`
	// Rates: messages and recipients per minute, hour and day (leaky
	// buckets: the burst is the whole allowance, then an even rate).
	MessagesPerMinute   int `toml:"messages_per_minute"`
	MessagesPerHour     int `toml:"messages_per_hour"`
	MessagesPerDay      int `toml:"messages_per_day"`
	RecipientsPerMinute int `toml:"recipients_per_minute"`
	RecipientsPerHour   int `toml:"recipients_per_hour"`
	RecipientsPerDay    int `toml:"recipients_per_day"`
	// Action is what happens to a message over a rate: "defer" (queued,
	// sent later at the allowed rate), "hold" (queued as held for the
	// admin) or "refuse" (not queued; the caller is told, or the sender
	// gets a bounce).
	Action string `toml:"action"`
	// MaxHeld bounds the account's held messages (action "hold", a
	// frozen account): one more to hold is refused instead (sendmail
	// exits 73, SMTP 452 4.3.1; a maildrop file is bounced), so that one
	// account cannot fill the spool's disk. 0: no limit.
	MaxHeld int `toml:"max_held"`
	// MaxQuarantined bounds the account's files in queue/quarantine/
	// that a refused maildrop file whose sender gets no failure notice
	// (the null sender, NOTIFY without FAILURE) may add to: such a
	// file is quarantined up to it, and beyond it removed with an
	// event=rejected line saying so, so that one account cannot fill
	// the spool's disk through the quarantine. 0: no limit.
	MaxQuarantined int `toml:"max_quarantined"`

	// Set holds the keys written in this table.
	Set map[string]bool `toml:"-"`
}

// PolicyError is a sender the policy refuses (sendmail exits 77,
// EX_NOPERM).
type PolicyError struct {
	User   string
	UID    int
	Sender string
	Key    string // the allowed_senders entry that applied
}

func (e *PolicyError) Error() string {
	who := "uid " + strconv.Itoa(e.UID)
	if e.User != "" {
		who = "user " + e.User + " (" + who + ")"
	}
	return fmt.Sprintf("sender address %q is not allowed for %s by [policy] allowed_senders %q", e.Sender, who, e.Key)
}

// CheckSender returns a *PolicyError when [policy] allowed_senders does
// not let user (uid) give sender as the envelope sender, nil otherwise.
// sender is in the bare form package message returns; "" (no sender
// given: the system chooses it) and the user's own name, bare or at one
// of this host's names (LocalDomain), are always allowed.
func (c *Config) CheckSender(user string, uid int, sender string) error {
	p := c.Policy.AllowedSenders
	if len(p) == 0 || sender == "" {
		return nil
	}
	// The user's own name, bare or at one of this host's names
	// (LocalDomain), is the sender used without -f anyway.
	if user != "" && sender == user {
		return nil
	}
	if at := strings.LastIndexByte(sender, '@'); user != "" && at > 0 &&
		strings.EqualFold(sender[:at], user) && LocalDomain(c.Hostname, sender[at+1:]) {
		return nil
	}
	var keys []string
	if user != "" {
		keys = append(keys, user)
	}
	keys = append(keys, "uid:"+strconv.Itoa(uid), "*")
	for _, k := range keys {
		patterns, ok := p[k]
		if !ok {
			continue
		}
		for _, pat := range patterns {
			if senderMatches(pat, user, sender) {
				return nil
			}
		}
		return &PolicyError{User: user, UID: uid, Sender: sender, Key: k}
	}
	return nil
}

func senderMatches(pat, user, sender string) bool {
	switch {
	case pat == "*":
		return true
	case pat == "<>" || sender == "<>":
		return pat == sender
	case strings.HasPrefix(pat, "*@"):
		at := strings.LastIndexByte(sender, '@')
		return at >= 0 && strings.EqualFold(sender[at+1:], pat[2:])
	case strings.HasPrefix(pat, "%u"):
		if user == "" {
			return false
		}
		pat = user + pat[2:]
	}
	return strings.EqualFold(pat, sender)
}

// checkSenderPattern validates one allowed_senders pattern.
func checkSenderPattern(s string) error {
	switch {
	case s == "*", s == "<>", s == "%u":
		return nil
	case strings.HasPrefix(s, "*@") || strings.HasPrefix(s, "%u@"):
		if d := s[strings.IndexByte(s, '@')+1:]; !validDomain(d) {
			return fmt.Errorf("%q: bad domain %q", s, d)
		}
		return nil
	case strings.ContainsAny(s, "*%"):
		return fmt.Errorf("%q: \"*\" and \"%%u\" stand only for a whole local part (\"*@example.com\", \"%%u@example.com\") or alone", s)
	case !strings.Contains(s, "@"):
		if err := checkLocalPart(s); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
		return nil
	}
	return checkAddress(s)
}

func checkPolicyKey(k string) error {
	switch {
	case k == "*":
		return nil
	case strings.HasPrefix(k, "uid:"):
		if n, err := strconv.ParseUint(k[4:], 10, 32); err != nil || strconv.FormatUint(n, 10) != k[4:] {
			return fmt.Errorf("%q: want \"uid:\" and a number", k)
		}
		return nil
	}
	if err := checkUserName(k); err != nil {
		return errors.New(strings.Replace(err.Error(), "is not a user name", "is not a user name, \"uid:N\" or \"*\"", 1))
	}
	return nil
}
