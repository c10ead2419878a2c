package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The policy's per-account lines: replayed at open (the last line of an
// account wins, a line without state forgets it), written again by a
// journal rewrite (compaction at Recover and by Maintain) after the
// older lines are gone, and bad keys refused.
func TestPolicyRecordsReplayAndCompaction(t *testing.T) {
	q := newTestQueue(t)
	id := putMessage(t, q, Incoming)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(q.AppendPolicy(map[string][]byte{"1000": []byte(`{"n":1}`), "33": []byte(`{"n":1}`)}, false))
	must(q.AppendPolicy(map[string][]byte{"1000": []byte(`{"n":2}`)}, false))
	must(q.AppendPolicy(map[string][]byte{"33": nil}, true))
	must(q.AppendPolicy(map[string][]byte{"7": []byte(`{"frozen":true}`)}, true))
	if err := q.AppendPolicy(map[string][]byte{`1"}`: []byte(`{}`)}, false); err == nil {
		t.Error("a key that would break the line was appended")
	}
	must(q.Sync())
	want := map[string]string{"1000": `{"n":2}`, "7": `{"frozen":true}`}
	check := func(q *Queue, when string) {
		t.Helper()
		got := q.PolicyRecords()
		if len(got) != len(want) {
			t.Errorf("%s: %d accounts %q, want %v", when, len(got), got, want)
		}
		for k, v := range want {
			if string(got[k]) != v {
				t.Errorf("%s: account %s: %q, want %s", when, k, got[k], v)
			}
		}
	}
	check(q, "in memory")
	// A restart: replay, then Recover's rewrite of the journal.
	n, _ := reopen(t, q, func(string) bool { return false })
	check(n, "after a restart")
	mustState(t, n, id, Incoming)
	b, err := os.ReadFile(filepath.Join(n.Root, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	if c := bytes.Count(b, []byte(`"op":"pol"`)); c != 2 {
		t.Errorf("the rewritten journal has %d pol lines, want 2 (one per account):\n%s", c, b)
	}
	// The journal grows past its due size with appends of one account;
	// Maintain rewrites it and the latest state is kept.
	big := []byte(`{"pad":"` + strings.Repeat("x", 4000) + `"}`)
	for n.jsize <= 4<<20 {
		must(n.AppendPolicy(map[string][]byte{"1000": big}, false))
	}
	must(n.AppendPolicy(map[string][]byte{"1000": []byte(`{"n":3}`)}, false))
	want["1000"] = `{"n":3}`
	must(n.Maintain())
	if n.jsize > 1<<20 {
		t.Errorf("the journal is %d bytes after Maintain: not compacted", n.jsize)
	}
	n.Close()
	m := openTestQueue(t, n.Root)
	check(m, "after compaction and a restart")
	mustState(t, m, id, Incoming)
	// A read-only Snapshot ignores the lines.
	if s, err := Snapshot(m.Root); err != nil || len(s) != 1 {
		t.Errorf("snapshot: %v %v", s, err)
	}
}
