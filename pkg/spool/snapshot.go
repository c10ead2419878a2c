package spool

// Read-only inspection of relayd's queue, for tests in other processes and
// for administrators' tools: what is queued, in which state, for whom,
// with which delivery record. It never changes the spool and is safe to
// call while relayd runs. Callers depend on this API only, never on how
// the queue is laid out on disk.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// SnapshotEntry is one message of the queue as Snapshot found it.
type SnapshotEntry struct {
	// State is one of States, or "" for a message stored without a
	// state (only in a queue of the old layout that relayd has not
	// migrated yet: an enqueue or a delivery's end cut short by a crash).
	State string
	// UID is the caller's UID recorded with the message, -1 when it is
	// not known (a message of the old layout that is missing or
	// unreadable).
	UID int
	// Delivery is the delivery record; nil when it is empty (never
	// attempted, nothing recorded).
	Delivery *Delivery
	// Attempts is Delivery.Attempts (0 without a record).
	Attempts int
}

// Snapshot returns every message in the queue of the spool at root, by
// queue ID: not maildrop/ (not yet picked up) and not queue/quarantine/
// (never delivered). It replays the journal as it is on disk (a line
// relayd is appending is left out), so it sees every change relayd made
// before the call; a queue of the old layout (before relayd migrated it)
// is read too.
func Snapshot(root string) (map[string]SnapshotEntry, error) {
	es, _, err := readJournal(root)
	if err != nil {
		return nil, err
	}
	out := make(map[string]SnapshotEntry, len(es))
	for id, e := range es {
		se := SnapshotEntry{State: States[e.st], UID: int(e.uid)}
		if len(e.d) > 0 {
			if d, err := decodeDelivery(e.d); err == nil {
				se.Delivery, se.Attempts = d, d.Attempts
			}
		}
		out[id] = se
	}
	if err := legacySnapshot(root, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Counts returns the number of messages in each state, as Snapshot would
// report them ("" included when there are any).
func Counts(root string) (map[string]int, error) {
	s, err := Snapshot(root)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, e := range s {
		out[e.State]++
	}
	return out, nil
}

// listIDs returns the queue IDs named in dir, sorted; none when dir does
// not exist.
func listIDs(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	ids := names[:0]
	for _, n := range names {
		if ValidID(n) {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// legacySnapshot adds the messages of a queue of the old layout (a
// directory per state, queue/msg/<id>) that out does not have.
func legacySnapshot(root string, out map[string]SnapshotEntry) error {
	msgs, err := listIDs(filepath.Join(root, DirMsg))
	if err != nil {
		return err
	}
	for _, s := range States {
		ids, err := listIDs(filepath.Join(root, DirQueue, s))
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, ok := out[id]; ok {
				continue
			}
			e := SnapshotEntry{State: s, UID: legacyUID(root, id)}
			if b, err := os.ReadFile(filepath.Join(root, DirQueue, s, id)); err == nil {
				if b = bytes.TrimSpace(b); len(b) > 0 && string(b) != emptyDelivery {
					d := new(Delivery)
					if json.Unmarshal(b, d) == nil {
						e.Delivery, e.Attempts = d, d.Attempts
					}
				}
			}
			out[id] = e
		}
	}
	for _, id := range msgs {
		if _, ok := out[id]; !ok {
			out[id] = SnapshotEntry{UID: legacyUID(root, id)}
		}
	}
	return nil
}

func legacyUID(root, id string) int {
	f, err := os.Open(filepath.Join(root, DirMsg, id))
	if err != nil {
		return -1
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return -1
	}
	m, err := Decode(io.NewSectionReader(f, 0, fi.Size()), fi.Size())
	if err != nil {
		return -1
	}
	return m.Origin.UID
}
