package spool

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// The journal's records are written without reflection when they can
// be: byte for byte what json.Marshal writes, for records of every shape
// (the fast way's and the others', which fall back to json.Marshal).
func TestEncodeDeliveryIsJSONMarshal(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	zones := []*time.Location{time.UTC, time.FixedZone("p", 5*3600+30*60), time.FixedZone("n", -7*3600), time.FixedZone("s", 3600+17), time.FixedZone("big", 25*3600)}
	strs := []string{"", "smtp.example.com:587", `450 4.2.0 <a@b> try "later" & \ again`, "421 4.7.0 ok", "héllo", "tab\there", "x\ny"}
	tm := func() time.Time {
		switch rnd.IntN(6) {
		case 0:
			return time.Time{}
		case 1:
			return time.Date(10000+rnd.IntN(5), 1, 1, 0, 0, 0, 0, time.UTC)
		case 2:
			return time.Unix(rnd.Int64N(4e9), 0).In(zones[rnd.IntN(len(zones))])
		}
		return time.Unix(rnd.Int64N(4e9), rnd.Int64N(1e9)).In(zones[rnd.IntN(len(zones))])
	}
	fast := 0
	for i := 0; i < 20000; i++ {
		d := &Delivery{Attempts: rnd.IntN(3) * rnd.IntN(1000), First: tm(), Last: tm(), Next: tm(),
			LastReply: strs[rnd.IntN(len(strs))], Upstream: strs[rnd.IntN(len(strs))], DelayNotice: strs[rnd.IntN(len(strs))], Reason: strs[rnd.IntN(len(strs))], Paced: rnd.IntN(2) == 0}
		switch rnd.IntN(8) {
		case 0:
			d.Sent = []string{"a@example.net"}
		case 1:
			d.Failed = []RcptFailure{{Rcpt: "b@example.net", Reply: "550 no"}}
		case 2:
			d.Bounces = []string{"X"}
		}
		want, werr := json.Marshal(d)
		if werr == nil && string(want) == emptyDelivery {
			want = nil
		}
		got, err := encodeDelivery(d)
		if (err != nil) != (werr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("record %+v:\n got %s (%v)\nwant %s (%v)", d, got, err, want, werr)
		}
		if _, ok := appendDelivery(nil, d); ok {
			fast++
		}
	}
	if fast < 100 {
		t.Errorf("only %d records of 20000 written the fast way", fast)
	}
}
