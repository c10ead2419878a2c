package queue

import (
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/relay"
	"github.com/mailshim/mailshim/pkg/spool"
)

// TestLogFormat pins the exact mail log lines of a delivery with every
// outcome: sent, deferred, bounced (with the DSN), the DSN's own delivery,
// expiry, and removal. People grep these for years: change them only on
// purpose.
func TestLogFormat(t *testing.T) {
	e := newEnv(t, Settings{Retry: []time.Duration{time.Minute}, Lifetime: 90 * time.Second, Concurrency: 1})
	e.up.respond = func(from, rcpt string) *relay.Error {
		switch rcpt {
		case "nouser@example.net":
			return &relay.Error{Class: relay.Permanent, Stage: relay.StageRcpt, Code: 550, Enhanced: "5.1.1", Text: "<nouser@example.net>: Recipient address rejected: User unknown",
				Cause: "the upstream does not know this recipient", Fix: "check the address"}
		case "busy@example.net":
			return &relay.Error{Class: relay.Temporary, Stage: relay.StageRcpt, Code: 451, Enhanced: "4.3.0", Text: "try again later"}
		}
		return nil
	}
	id := e.enqueue(t, 1001, "app@example.org", "ok@example.net", "nouser@example.net", "busy@example.net")
	e.run() // the first attempt, and the first DSN it queued
	d, err := e.sp.ReadState(spool.Deferred, id)
	if err != nil || len(d.Bounces) != 1 {
		t.Fatalf("state %+v %v", d, err)
	}
	dsn1 := d.Bounces[0]
	e.clk.Set(t0.Add(time.Minute))
	e.run() // the second attempt (deferred again)
	e.clk.Set(t0.Add(2 * time.Minute))
	e.run() // expired: bounced, and the second DSN
	var dsn2 string
	for _, l := range strings.Split(e.log.String(), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == "event=bounced" && f[2] == "id="+id {
			dsn2 = strings.TrimPrefix(f[3], "dsn=")
		}
	}
	if dsn2 == "" || dsn2 == dsn1 {
		t.Fatalf("no second DSN:\n%s", e.log)
	}

	want := `ts=2026-11-23T14:40:00.000Z event=delivery id=ID to=ok@example.net upstream=fake.example:587 status=sent reply="250 2.0.0 Ok: queued as UP1" upstream_id=UP1
ts=2026-11-23T14:40:00.000Z event=delivery id=ID to=nouser@example.net upstream=fake.example:587 status=bounced reply="550 5.1.1 <nouser@example.net>: Recipient address rejected: User unknown" stage=rcpt cause="the upstream does not know this recipient" fix="check the address"
ts=2026-11-23T14:40:00.000Z event=delivery id=ID to=busy@example.net upstream=fake.example:587 status=deferred reply="451 4.3.0 try again later" stage=rcpt
ts=2026-11-23T14:40:00.000Z event=bounced id=ID dsn=DSN1 to=app@example.org nrcpt=1
ts=2026-11-23T14:40:00.000Z event=deferred id=ID attempts=1 next=2026-11-23T14:41:00Z nrcpt=1 reason="451 4.3.0 try again later"
ts=2026-11-23T14:40:00.000Z event=delivery id=DSN1 to=app@example.org upstream=fake.example:587 status=sent reply="250 2.0.0 Ok: queued as UP2" upstream_id=UP2
ts=2026-11-23T14:40:00.000Z event=removed id=DSN1 sent=1 bounced=0
ts=2026-11-23T14:41:00.000Z event=delivery id=ID to=busy@example.net upstream=fake.example:587 status=deferred reply="451 4.3.0 try again later" stage=rcpt
ts=2026-11-23T14:41:00.000Z event=deferred id=ID attempts=2 next=2026-11-23T14:42:00Z nrcpt=1 reason="451 4.3.0 try again later"
ts=2026-11-23T14:42:00.000Z event=delivery id=ID to=busy@example.net upstream=fake.example:587 status=bounced reply="451 4.3.0 try again later" reason="lifetime exceeded" stage=rcpt cause="the message could not be delivered within 1m30s (the queue lifetime); the last attempt failed: 451 4.3.0 try again later" fix="the upstream kept deferring this recipient or could not be reached: check its reply above and the upstream; raise [queue] lifetime if its outages last longer"
ts=2026-11-23T14:42:00.000Z event=bounced id=ID dsn=DSN2 to=app@example.org nrcpt=1
ts=2026-11-23T14:42:00.000Z event=removed id=ID sent=1 bounced=2
ts=2026-11-23T14:42:00.000Z event=delivery id=DSN2 to=app@example.org upstream=fake.example:587 status=sent reply="250 2.0.0 Ok: queued as UP3" upstream_id=UP3
ts=2026-11-23T14:42:00.000Z event=removed id=DSN2 sent=1 bounced=0
`
	want = strings.NewReplacer("DSN1", dsn1, "DSN2", dsn2, "ID", id).Replace(want)
	if got := e.log.String(); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}
