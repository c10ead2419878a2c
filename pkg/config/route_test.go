package config

import (
	"strings"
	"testing"
)

const routesConf = `
[[upstream]]
name = "main"
host = "smtp.example.com"

[[upstream]]
name = "alice-gmail"
routed_only = true
host = "smtp.gmail.com"
tls = "tls"

[[upstream]]
name = "shop"
routed_only = true
host = "mail.shop.example"

[[route]]
users = ["alice"]
upstream = ["alice-gmail"]

[[route]]
sender_domains = ["Shop.Example."]
users = ["group:shop", "uid:1042"]
upstream = ["shop", "main"]

[[route]]
sender_domains = ["partner.example"]
upstream = ["shop"]
`

func TestSelectRoute(t *testing.T) {
	c, err := Parse("routes", []byte(routesConf))
	if err != nil {
		t.Fatal(err)
	}
	names := func(ups []Upstream) string {
		var n []string
		for _, u := range ups {
			n = append(n, u.Name)
		}
		return strings.Join(n, ",")
	}
	inShop := func(g string) bool { return g == "shop" }
	for _, tc := range []struct {
		o     RouteOrigin
		route int
		want  string
	}{
		{RouteOrigin{Sender: "alice@example.com", UID: 1001, User: "alice"}, 0, "alice-gmail"},
		{RouteOrigin{Sender: "anything@elsewhere.example", UID: 1001, User: "alice"}, 0, "alice-gmail"},
		{RouteOrigin{Sender: "orders@shop.example", UID: 1042, User: "shopapp"}, 1, "shop,main"},
		{RouteOrigin{Sender: "orders@SHOP.example", UID: 2000, User: "bob", InGroup: inShop}, 1, "shop,main"},
		// The domain alone is not enough for route 1: the user must match too.
		{RouteOrigin{Sender: "orders@shop.example", UID: 2001, User: "carol"}, -1, "main"},
		{RouteOrigin{Sender: "x@partner.example", UID: 2001, User: "carol"}, 2, "shop"},
		// Bounces and everyone else: the upstreams that are not routed_only.
		{RouteOrigin{Sender: "", UID: 110, User: "mailshim"}, -1, "main"},
		{RouteOrigin{Sender: "bob@example.com", UID: 1000, User: "bob"}, -1, "main"},
	} {
		i, ups := SelectRoute(c.Upstreams, c.Routes, tc.o)
		if i != tc.route || names(ups) != tc.want {
			t.Errorf("%+v: route %d %s, want %d %s", tc.o, i, names(ups), tc.route, tc.want)
		}
	}
	if !HasGroupRoutes(c.Routes) || HasGroupRoutes(c.Routes[:1]) {
		t.Error("HasGroupRoutes")
	}
	if red := c.Redacted(); !strings.Contains(red, "[[route]]\nusers = [\"group:shop\", \"uid:1042\"]\nsender_domains = [\"shop.example\"]\nupstream = [\"shop\", \"main\"]\n") ||
		!strings.Contains(red, "name = \"alice-gmail\"\nrouted_only = true\n") {
		t.Errorf("Redacted:\n%s", red)
	}
}

func TestRouteErrors(t *testing.T) {
	for _, tc := range []struct{ name, conf, want string }{
		{"duplicate name", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[upstream]]\nname = \"a\"\nhost = \"y.example\"\n", `5: upstream.name: "a" names another [[upstream]] already`},
		{"bad name", "[[upstream]]\nname = \"a b\"\nhost = \"x.example\"\n", `2: upstream.name: "a b" is not a name`},
		{"routed_only unnamed", "[[upstream]]\nhost = \"x.example\"\n[[upstream]]\nhost = \"y.example\"\nrouted_only = true\n", `5: upstream.routed_only: a routed_only upstream needs a name`},
		{"all routed_only", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\nrouted_only = true\n", `4: upstream.routed_only: every [[upstream]] is routed_only`},
		{"empty route", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[route]]\nupstream = [\"a\"]\n", `route: a [[route]] needs users or sender_domains`},
		{"unknown upstream", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[route]]\nusers = [\"alice\"]\nupstream = [\"b\"]\n", `6: route.upstream: "b" is not the name of an [[upstream]]`},
		{"no upstream", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[route]]\nusers = [\"alice\"]\n", `route: upstream is required`},
		{"star", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[route]]\nusers = [\"*\"]\nupstream = [\"a\"]\n", `5: route.users: "*" would route everyone's mail`},
		{"bad uid", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[route]]\nusers = [\"uid:x\"]\nupstream = [\"a\"]\n", `5: route.users: "uid:x": want "uid:" and a number`},
		{"bad domain", "[[upstream]]\nname = \"a\"\nhost = \"x.example\"\n[[route]]\nsender_domains = [\"no domain\"]\nupstream = [\"a\"]\n", `5: route.sender_domains: "no domain" is not a domain`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f", []byte(tc.conf))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}
