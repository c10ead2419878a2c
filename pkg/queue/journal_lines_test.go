package queue

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mailshim/mailshim/pkg/smtptest"
	"github.com/mailshim/mailshim/pkg/spool"
)

// A delivery writes one journal line before the message goes out — the
// claim and the attempt's record together, a "set" line in state active —
// and one when it is done (del): two lines per delivered message, after
// the message's own add line. What the journal on disk says when the
// upstream is given MAIL (as a restarted relayd, or an older one, would
// read it) is the message active with its attempt recorded.
func TestDeliveryJournalLines(t *testing.T) {
	const n = 12
	root := filepath.Join(t.TempDir(), "spool")
	var mu sync.Mutex
	var bad []string
	opts := smtptest.Options{NoTLS: true}
	opts.Hook = func(_ context.Context, stage, _ string) error {
		if stage != smtptest.StageMail {
			return nil
		}
		snap, err := spool.Snapshot(root)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad = append(bad, err.Error())
			return nil
		}
		active := 0
		for id, e := range snap {
			if e.State == spool.Active {
				active++
				if e.Attempts != 1 {
					bad = append(bad, fmt.Sprintf("%s is active with %d attempts recorded, want 1", id, e.Attempts))
				}
			}
		}
		if active == 0 {
			bad = append(bad, "MAIL with no message active in the journal")
		}
		return nil
	}
	srv := smtptest.New(t, opts)
	deliverAll(t, root, srv, n)
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("journal at MAIL: %v", bad)
	}
	b, err := os.ReadFile(filepath.Join(root, spool.JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\x00\n"), []byte("\n"))
	ops := map[string]int{}
	for _, l := range lines {
		for _, op := range []string{"add", "set", "mv", "del"} {
			if bytes.Contains(l, []byte(`{"op":"`+op+`"`)) {
				ops[op]++
			}
		}
	}
	if want := map[string]int{"add": n, "set": n, "del": n}; fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("journal lines by op: %v, want %v (one line before the send, one after, per message)", ops, want)
	}
}
