package config

import (
	"strconv"
	"strings"
)

// Route is one [[route]]: the mail of some local users, or from some
// sender domains, goes through upstreams of its own (a user's own
// smarthost account, a customer's domain through that customer's
// provider). Routes are tried in the order written; the first whose every
// criterion matches decides. Mail that no route matches goes through the
// upstreams that are not routed_only (SelectUpstreams).
type Route struct {
	// Users are local senders, identified by the UID the kernel gave
	// relayd: a user name, "uid:N", or "group:NAME" (the user's primary
	// group or a group it is a member of). Empty: any user.
	Users []string `toml:"users"`
	// SenderDomains are envelope sender domains (exact,
	// case-insensitive). Empty: any sender.
	SenderDomains []string `toml:"sender_domains"`
	// Upstream names the [[upstream]]s (their name) this mail goes
	// through, in order: the first that works takes it (failover).
	Upstream []string `toml:"upstream"`
}

// RouteOrigin is what routing knows of a message.
type RouteOrigin struct {
	Sender string // envelope sender, "" for a bounce
	UID    int
	User   string // the UID's user name ("" if it has none)
	// InGroup reports whether the user is in the named group; nil when
	// no route names a group.
	InGroup func(group string) bool
}

// HasGroupRoutes reports whether a route names a group, so that looking up
// the sender's groups is worth it.
func HasGroupRoutes(routes []Route) bool {
	for _, r := range routes {
		for _, u := range r.Users {
			if strings.HasPrefix(u, "group:") {
				return true
			}
		}
	}
	return false
}

// matches reports whether r applies to o.
func (r *Route) matches(o RouteOrigin) bool {
	if len(r.SenderDomains) > 0 {
		at := strings.LastIndexByte(o.Sender, '@')
		if at < 0 {
			return false
		}
		domain := strings.TrimSuffix(o.Sender[at+1:], ".")
		found := false
		for _, d := range r.SenderDomains {
			if strings.EqualFold(d, domain) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if len(r.Users) == 0 {
		return true
	}
	for _, u := range r.Users {
		switch {
		case strings.HasPrefix(u, "uid:"):
			if u[4:] == strconv.Itoa(o.UID) {
				return true
			}
		case strings.HasPrefix(u, "group:"):
			if o.InGroup != nil && o.InGroup(u[6:]) {
				return true
			}
		case u == o.User && o.User != "":
			return true
		}
	}
	return false
}

// SelectRoute returns the upstreams for a message: those of the first of
// routes that matches o, in the route's order (and the route's index), or
// else SelectUpstreams over the upstreams that are not routed_only (index
// -1).
func SelectRoute(ups []Upstream, routes []Route, o RouteOrigin) (int, []Upstream) {
	for i := range routes {
		if !routes[i].matches(o) {
			continue
		}
		var out []Upstream
		for _, name := range routes[i].Upstream {
			for _, u := range ups {
				if u.Name == name {
					out = append(out, u)
					break
				}
			}
		}
		return i, out
	}
	var open []Upstream
	for _, u := range ups {
		if !u.RoutedOnly {
			open = append(open, u)
		}
	}
	return -1, SelectUpstreams(open, o.Sender)
}

// validateRoutes checks the upstreams' names and the [[route]]s.
func (c *Config) validateRoutes(v validator) {
	names := map[string]bool{}
	open := 0
	for i, u := range c.Upstreams {
		p := []string{"upstream", index(i)}
		if u.Name != "" {
			if err := checkUserName(u.Name); err != nil {
				v.errf(sub(p, "name"), "%q is not a name (letters, digits, '.', '_' and '-')", u.Name)
			} else if names[u.Name] {
				v.errf(sub(p, "name"), "%q names another [[upstream]] already", u.Name)
			}
			names[u.Name] = true
		}
		if u.RoutedOnly && u.Name == "" {
			v.errf(sub(p, "routed_only"), "a routed_only upstream needs a name, for a [[route]] to use it")
		}
		if !u.RoutedOnly {
			open++
		}
	}
	if len(c.Upstreams) > 0 && open == 0 {
		v.errf([]string{"upstream", index(len(c.Upstreams) - 1), "routed_only"}, "every [[upstream]] is routed_only: mail that no [[route]] matches (bounces, cron's) would have no upstream")
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		p := []string{"route", index(i)}
		if len(r.Users) == 0 && len(r.SenderDomains) == 0 {
			v.errf(p, "a [[route]] needs users or sender_domains (or both)")
		}
		for _, u := range r.Users {
			if u == "*" {
				v.errf(sub(p, "users"), "\"*\" would route everyone's mail: leave the upstreams without routed_only instead")
				continue
			}
			if err := checkAccountKey(u); err != nil {
				v.errf(sub(p, "users"), "%v", err)
			}
		}
		var domains []string
		for _, d := range r.SenderDomains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			if !validDomain(d) {
				v.errf(sub(p, "sender_domains"), "%q is not a domain", d)
				continue
			}
			domains = append(domains, d)
		}
		r.SenderDomains = domains
		if len(r.Upstream) == 0 {
			v.errf(p, "upstream is required: the names of the [[upstream]]s for this mail, in order")
		}
		for _, name := range r.Upstream {
			if !names[name] {
				v.errf(sub(p, "upstream"), "%q is not the name of an [[upstream]]", name)
			}
		}
	}
}
