package main

import (
	"reflect"
	"testing"

	"github.com/mailshim/mailshim/pkg/config"
)

// The senders doctor tries are those relayd gives the mail of the users
// named in [senders], by config.SenderFor: an entry shadowed by a
// stronger one (root's "uid:0" under its name) is no one's sender and is
// not tried; "*" is tried as what a user without an entry of its own
// gets, which root is not when it has one.
func TestDoctorConfiguredSendersFollowSenderFor(t *testing.T) {
	cfg := config.Default()
	cfg.Hostname = "web1.example.com"
	cfg.Senders = map[string]string{
		"root":   "ops@example.com",
		"uid:0":  "never@example.com",
		"nobody": "@web.example",
		"*":      "all@example.org",
	}
	var got []string
	for _, o := range configuredOrigins(cfg) {
		got = append(got, o.Sender)
		if s, ok := cfg.SenderFor(o.User, o.UID); !ok || s != o.Sender {
			t.Errorf("%+v: relayd gives this user's mail %q (%v), not %q", o.RouteOrigin, s, ok, o.Sender)
		}
	}
	want := []string{"all@example.org", "nobody@web.example", "ops@example.com"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("senders tried %q, want %q", got, want)
	}
}
