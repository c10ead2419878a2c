package spool

import (
	"fmt"
	"maps"
)

// The policy's state in the journal. relayd's per-account policy
// (pkg/policy) keeps its counters here rather than in a file of its own:
// one "pol" line per account changed, appended just before the Sync that
// makes the messages it counted durable, so the counters survive
// whatever those messages survive (a kill, a power loss) at no cost of
// their own (no file created, no fsync). The queue keeps the last state
// of each account in memory, opaque, and writes it again when it
// rewrites the journal.

// PolicyRecords returns the policy's state of every account, as the
// journal had it at OpenQueue (or as appended since): account key to
// JSON.
func (q *Queue) PolicyRecords() map[string][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.pol)
}

// AppendPolicy appends one "pol" line per account of recs (JSON; nil or
// empty: the account has nothing left to remember) without a Sync: the
// caller's next Sync, or Maintain's, makes them durable. Keys must be
// short and plain (an account's UID). A line that is not critical (the
// counters) may not eat into the journal's floor kept for transitions;
// a critical one (an operator's freeze or thaw) may. On an error the
// lines appended before it stay appended (each is a whole state: the
// caller writes them all again).
func (q *Queue) AppendPolicy(recs map[string][]byte, critical bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, p := range recs {
		if !validAcct(k) {
			return fmt.Errorf("spool: policy account key %q not allowed", k)
		}
		if err := q.appendLocked(polLine(k, p), critical); err != nil {
			return err
		}
		q.pbytes -= int64(len(q.pol[k]))
		if len(p) == 0 {
			delete(q.pol, k)
			continue
		}
		q.pol[k] = append([]byte(nil), p...)
		q.pbytes += int64(len(p))
	}
	return nil
}
