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
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// SnapshotEntry is one message of the queue as Snapshot found it.
type SnapshotEntry struct {
	// State is one of States, or "" for a message stored without a
	// state: an enqueue or a delivery's end cut short by a crash (relayd's
	// Recover resolves it at its next start).
	State string
	// UID is the caller's UID recorded with the message, -1 when the
	// message itself is missing (a state left without its message) or
	// unreadable (relayd quarantines it when it tries to send it).
	UID int
	// Delivery is the delivery record; nil when it is empty (never
	// attempted, nothing recorded).
	Delivery *Delivery
}

// Attempts is the number of delivery attempts recorded (0 without a record).
func (e SnapshotEntry) Attempts() int {
	if e.Delivery == nil {
		return 0
	}
	return e.Delivery.Attempts
}

// Snapshot returns every message in the queue of the spool at root, by
// queue ID: the states of States, not maildrop/ (not yet picked up) and
// not queue/quarantine/ (never delivered). A message that changes state
// while Snapshot reads is reported once, in one of its states.
func Snapshot(root string) (map[string]SnapshotEntry, error) {
	msgDir := filepath.Join(root, DirMsg)
	// The message file exists for a message's whole life in the queue
	// (written before its first state, removed after its last), so the
	// IDs listed in msg/ first, plus any state left without a message,
	// are every message; each one's state is then looked up by ID, again
	// when a transition moved it between two look-ups.
	ids, err := listIDs(msgDir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	for _, s := range States {
		sids, err := listIDs(filepath.Join(root, DirQueue, s))
		if err != nil {
			return nil, err
		}
		for _, id := range sids {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	out := make(map[string]SnapshotEntry, len(ids))
	for _, id := range ids {
		e, ok, err := snapshotOne(root, id)
		if err != nil {
			return nil, err
		}
		if ok {
			out[id] = e
		}
	}
	return out, nil
}

// Counts returns the number of messages in each state, as Snapshot would
// report them ("" included when there are any), without reading records.
// A message changing state while Counts reads may be counted in either
// state, but a message queued all along is always counted.
func Counts(root string) (map[string]int, error) {
	msgs, err := listIDs(filepath.Join(root, DirMsg))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	inState := map[string]bool{}
	for _, s := range States {
		ids, err := listIDs(filepath.Join(root, DirQueue, s))
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if !inState[id] {
				inState[id] = true
				out[s]++
			}
		}
	}
	for _, id := range msgs {
		if !inState[id] {
			out[""]++
		}
	}
	return out, nil
}

// Queued returns the number of messages in the queue (every state).
func Queued(root string) (int, error) {
	c, err := Counts(root)
	n := 0
	for _, v := range c {
		n += v
	}
	return n, err
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

// snapshotOne finds the state and record of id; ok is false when id is no
// longer in the queue at all (delivered meanwhile).
func snapshotOne(root, id string) (SnapshotEntry, bool, error) {
	e := SnapshotEntry{UID: -1}
	msg := filepath.Join(root, DirMsg, id)
	// A transition is one rename, so each pass either finds the state
	// file or saw it move between two look-ups: three passes settle it.
	found, hasMsg := false, false
	for pass := 0; pass < 3 && !found; pass++ {
		for _, s := range States {
			d, ok, err := readRecord(filepath.Join(root, DirQueue, s, id))
			if err != nil {
				return e, false, err
			}
			if ok {
				e.State, e.Delivery, found = s, d, true
				break
			}
		}
		hasMsg = exists(msg)
	}
	if f, err := os.Open(msg); err == nil {
		hasMsg = true
		if fi, err := f.Stat(); err == nil {
			if m, err := Decode(f, fi.Size()); err == nil {
				e.UID = m.Origin.UID
			}
		}
		f.Close()
	}
	return e, found || hasMsg, nil
}

// readRecord reads a state file; ok is false when it does not exist.
func readRecord(path string) (*Delivery, bool, error) {
	var b []byte
	for try := 0; ; try++ {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		b, err = io.ReadAll(io.LimitReader(f, 16<<20))
		f.Close()
		if err != nil {
			return nil, false, err
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, true, nil
		}
		d := new(Delivery)
		err = json.Unmarshal(b, d)
		if err == nil {
			if empty, _ := json.Marshal(Delivery{}); bytes.Equal(b, empty) {
				return nil, true, nil
			}
			return d, true, nil
		}
		// A first record is written in place into an empty file: a
		// reader may catch it half written. Read it again.
		if try >= 10 {
			return nil, false, fmt.Errorf("%s: %w: state file: %v", path, ErrCorrupt, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
