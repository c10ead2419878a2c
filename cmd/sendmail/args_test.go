package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		argv    string // space-separated; argv[0] first
		want    args
		refused bool // usage error, refused for safety
		usage   bool // other usage error
	}{
		// Real callers (see testdata/callers).
		{argv: "sendmail -t -i", want: args{mode: modeDeliver, extract: true, ignoreDots: true}},
		{argv: "sendmail -t -i -fbounce@example.org", want: args{mode: modeDeliver, extract: true, ignoreDots: true, sender: "bounce@example.org", senderSet: true}},
		{argv: "sendmail -t -i -oi -fwebapp@example.org -t", want: args{mode: modeDeliver, extract: true, ignoreDots: true, sender: "webapp@example.org", senderSet: true}},
		{argv: "sendmail -oi -f webapp@example.org -t", want: args{mode: modeDeliver, extract: true, ignoreDots: true, sender: "webapp@example.org", senderSet: true}},
		{argv: "sendmail -bs", want: args{mode: modeSMTP}},
		{argv: "sendmail -bs -i", want: args{mode: modeSMTP, ignoreDots: true}},
		{argv: "sendmail -FCronDaemon -odi -oem -oi -t", want: args{mode: modeDeliver, extract: true, ignoreDots: true, fullName: "CronDaemon", fullSet: true}},
		{argv: "sendmail -FCronDaemon -i -B8BITMIME -oem smtest", want: args{mode: modeDeliver, ignoreDots: true, fullName: "CronDaemon", fullSet: true, bodyType: "8BITMIME", recipients: []string{"smtest"}}},
		{argv: "sendmail -i maint@example.org list@example.org", want: args{mode: modeDeliver, ignoreDots: true, recipients: []string{"maint@example.org", "list@example.org"}}},
		{argv: "sendmail -f dev@example.org -i maint@example.org", want: args{mode: modeDeliver, ignoreDots: true, sender: "dev@example.org", senderSet: true, recipients: []string{"maint@example.org"}}},
		{argv: "sendmail -i -- rcpt1@example.org -X", want: args{mode: modeDeliver, ignoreDots: true, recipients: []string{"rcpt1@example.org", "-X"}}},
		{argv: "sendmail -fwebapp@example.org -- a@example.org", want: args{mode: modeDeliver, sender: "webapp@example.org", senderSet: true, recipients: []string{"a@example.org"}}},
		{argv: "sendmail -t", want: args{mode: modeDeliver, extract: true}},
		{argv: "sendmail -f fail2ban root", want: args{mode: modeDeliver, sender: "fail2ban", senderSet: true, recipients: []string{"root"}}},
		{argv: "sendmail -r a@b -t", want: args{mode: modeDeliver, extract: true, sender: "a@b", senderSet: true}},
		// Modes.
		{argv: "mailq", want: args{mode: modeQueue}},
		{argv: "/usr/bin/newaliases", want: args{mode: modeAliases}},
		{argv: "sendmail -bp", want: args{mode: modeQueue}},
		{argv: "sendmail -bi", want: args{mode: modeAliases}},
		{argv: "sendmail -bv root", want: args{mode: modeVerify, recipients: []string{"root"}}},
		{argv: "sendmail -bm a@b", want: args{mode: modeDeliver, recipients: []string{"a@b"}}},
		{argv: "sendmail -q", want: args{mode: modeFlush}},
		{argv: "sendmail -q30m", want: args{mode: modeFlush}},
		// DSN and the rest.
		{argv: "sendmail -N success,failure -R hdrs -V abc -v -n -G -U -h 5 -L tag a@b", want: args{mode: modeDeliver, notify: "success,failure", ret: "hdrs", envID: "abc", verbose: true, recipients: []string{"a@b"}}},
		{argv: "sendmail -odb -oem -oep -oeq -oew -oee -odq -om -oi a@b", want: args{mode: modeDeliver, ignoreDots: true, recipients: []string{"a@b"}}},
		{argv: "sendmail -oL9 -Z -OMaxHopCount=5 a@b", want: args{mode: modeDeliver, recipients: []string{"a@b"}, ignored: []string{"-oL9", "-Z", "-OMaxHopCount=5"}}},
		{argv: "sendmail -ti a@b", want: args{mode: modeDeliver, extract: true, ignoreDots: true, recipients: []string{"a@b"}}},
		{argv: "sendmail -f", usage: true},
		{argv: "sendmail -F", usage: true},
		{argv: "sendmail -bz", usage: true},
		// Refused: argument injection (CVE-2016-10033 and kin).
		{argv: "sendmail -X/var/www/x.php -t", refused: true},
		{argv: "sendmail -X /var/www/x.php", refused: true},
		{argv: "sendmail -C/tmp/x", refused: true},
		{argv: "sendmail -O QueueDirectory=/tmp", refused: true},
		{argv: "sendmail -OQueueDirectory=/tmp", refused: true},
		{argv: "sendmail -oQ/tmp", refused: true},
		{argv: "sendmail -oA/tmp/aliases", refused: true},
		{argv: "sendmail -be", refused: true},
		{argv: "sendmail -bt", refused: true},
		{argv: "sendmail -bd", refused: true},
		{argv: "sendmail -bD", refused: true},
		{argv: "sendmail -d0.1", refused: true},
		{argv: "sendmail -D/tmp/log", refused: true},
		{argv: "sendmail -fa@b -X/tmp/x", refused: true},
		{argv: "sendmail -Y/tmp/x", refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.argv, func(t *testing.T) {
			w := strings.Fields(tt.argv)
			got, err := parseArgs(w[0], w[1:])
			var ue *usageError
			if tt.refused || tt.usage {
				if !errors.As(err, &ue) || ue.refused != tt.refused {
					t.Fatalf("got %v (%+v), want usage error refused=%v", err, got, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if got.ignored != nil && tt.want.ignored == nil {
				got.ignored = nil
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

// FuzzParseArgs checks that argv parsing never panics, that a word after
// "--" or the first recipient is never taken as an option, and that a
// refused option is refused wherever it appears among the options.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-t -i", "-FCronDaemon -odi -oem -oi -t", "-f a@b -- c@d", "-bs", "-X/tmp/x",
		"-O QueueDirectory=/tmp", "-oQ/tmp", "-be", "-N never -R full -V x a", "-q1h", "-",
		"--", "-f", "a -X /tmp/x", "-ti -fa@b x@y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		w := strings.Split(line, " ")
		a, err := parseArgs("sendmail", w)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("non-usage error %v", err)
			}
			return
		}
		// Recipients are a suffix of argv.
		if n := len(a.recipients); n > 0 && !reflect.DeepEqual(a.recipients, w[len(w)-n:]) {
			t.Fatalf("recipients %q are not a suffix of %q", a.recipients, w)
		}
		for _, o := range a.ignored {
			if strings.Contains(o, "/") {
				t.Fatalf("option with a path accepted: %q", o)
			}
		}
	})
}

// The DSN options are read by package message's rules, the ones every
// door uses: NOTIFY in any case with blanks, -V taken as it is ('+' and
// '=' included; the SMTP client encodes it as xtext), a value the rules
// refuse ignored and recorded.
func TestEnvelopeDSNOptions(t *testing.T) {
	a, err := parseArgs("sendmail", []string{"-N", "success, Delay", "-R", "hdrs", "-V", "order+42=x", "-B", "8bitmime", "root"})
	if err != nil {
		t.Fatal(err)
	}
	env, e := envelope(a)
	if e != nil {
		t.Fatal(e)
	}
	if env.Notify != "SUCCESS,DELAY" || env.Ret != "HDRS" || env.EnvID != "order+42=x" || env.BodyType != "8BITMIME" || len(a.ignored) != 0 {
		t.Errorf("envelope %+v, ignored %q", env, a.ignored)
	}
	a, err = parseArgs("sendmail", []string{"-N", "never,success", "-V", "a b", "root"})
	if err != nil {
		t.Fatal(err)
	}
	if env, e = envelope(a); e != nil || env.Notify != "" || env.EnvID != "" || strings.Join(a.ignored, " ") != "-Nnever,success -Va b" {
		t.Errorf("envelope %+v, ignored %q, %v", env, a.ignored, e)
	}
}
