package config

import (
	"strconv"
	"strings"
)

// SenderFor returns the envelope sender configured in [senders] for a local
// user: the entry for the user name wins, then "uid:N", then "*". A value
// "@example.com" means the user name at that domain (for "*" and uid
// entries too; it needs a user name, else that entry is skipped). ok is
// false when nothing applies: the caller keeps user@hostname.
func (c *Config) SenderFor(user string, uid int) (string, bool) {
	keys := make([]string, 0, 3)
	if user != "" {
		keys = append(keys, user)
	}
	if uid >= 0 {
		keys = append(keys, "uid:"+strconv.Itoa(uid))
	}
	keys = append(keys, "*")
	for _, k := range keys {
		v, ok := c.Senders[k]
		if !ok {
			continue
		}
		if strings.HasPrefix(v, "@") {
			if user == "" || checkLocalPart(user) != nil {
				continue
			}
			return user + v, true
		}
		return v, true
	}
	return "", false
}

// UpstreamsFor returns, in configuration order, the upstreams that may
// carry mail from sender (SelectUpstreams on c.Upstreams).
func (c *Config) UpstreamsFor(sender string) []Upstream {
	return SelectUpstreams(c.Upstreams, sender)
}

// SelectUpstreams returns, in their order, the upstreams of ups that may
// carry mail from sender: those whose sender_domains contains the sender's
// domain (case-insensitive; subdomains are not included) and those without
// sender_domains. For the empty sender of a bounce, the upstreams without
// sender_domains, or all of them when every upstream has some.
func SelectUpstreams(ups []Upstream, sender string) []Upstream {
	var out []Upstream
	domain := ""
	if at := strings.LastIndexByte(sender, '@'); at >= 0 {
		domain = strings.TrimSuffix(sender[at+1:], ".")
	}
	for _, u := range ups {
		if len(u.SenderDomains) == 0 {
			out = append(out, u)
			continue
		}
		for _, d := range u.SenderDomains {
			if domain != "" && strings.EqualFold(d, domain) {
				out = append(out, u)
				break
			}
		}
	}
	if sender == "" && len(out) == 0 {
		return append(out, ups...)
	}
	return out
}
