package pickup

import (
	"sync"
	"time"
)

// Group commit of the messages stored by relayd's own doors (Store: the
// submission socket and the SMTP listener). Each session streams its
// message into the queue without fsync, then joins the open group and
// waits; one goroutine makes a group durable with one Queue.Sync
// (fdatasync of the segments written and of the journal) and wakes its
// members, which only then answer their clients. Messages that reach the
// end of their data while a Sync runs form the next group, so under load
// every Sync covers the messages of all the sessions that were waiting,
// and a lone session costs one Sync.
//
// Until its Sync has returned, no member of a group has answered its
// client: whatever a crash or a power loss leaves of the group's messages
// is mail whose client still has it. relayd killed leaves them whole (the
// page cache survives), possibly queued, then delivered: a duplicate at
// worst. After a power loss a message whose data did not reach the disk
// is dropped at start (its segment too short) or found corrupt (its size
// and checksum) when it is read.

// groupMember is a message waiting for its group's Sync.
type groupMember struct {
	id   string
	at   time.Time // deferred by the policy until at (zero: not deferred)
	undo func()    // takes back what the gate counted for it
}

// group is the messages made durable by one Sync.
type group struct {
	members []groupMember
	done    chan struct{} // closed once err is set
	err     error
}

// committer forms the groups (the zero value is ready).
type committer struct {
	mu      sync.Mutex
	open    *group // accepting members; its Sync has not started
	running bool   // the goroutine that syncs the groups is running
}

// commit waits until the message id, written in mode inGroup, is durable
// (nil), or its group's Sync failed: then the message is removed (its
// client is told it was not stored), what the gate counted for it taken
// back (undo: the client's retry must not use up the account's
// allowance), and the error returned. at is when a message the policy
// deferred may be sent (zero: not deferred).
func (p *Pickup) commit(id string, at time.Time, undo func()) error {
	c := &p.committer
	c.mu.Lock()
	if c.open == nil {
		c.open = &group{done: make(chan struct{})}
	}
	g := c.open
	g.members = append(g.members, groupMember{id: id, at: at, undo: undo})
	if !c.running {
		c.running = true
		go p.syncGroups()
	}
	c.mu.Unlock()
	<-g.done
	return g.err
}

// syncGroups makes the open group durable, then the one that formed
// meanwhile, until none is left; then it ends (a later commit starts it
// again).
func (p *Pickup) syncGroups() {
	c := &p.committer
	for {
		c.mu.Lock()
		g := c.open
		c.open = nil
		if g == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		p.savePolicy()
		ids := make([]string, len(g.members))
		for i, m := range g.members {
			ids[i] = m.id
		}
		// A member that another caller's failed Sync dropped fails the
		// group: its client must not be told it is stored.
		g.err = p.Queue.SyncIDs(ids...)
		if g.err != nil {
			// One line per message, naming it: each had its pickup
			// line, and its log must not end there as if it were queued.
			for _, m := range g.members {
				p.unqueue(m.id)
				m.undo()
				p.Log.MessageError(m.id, "cannot make the received message durable; removed, its client is told to retry", g.err)
			}
			close(g.done)
			continue
		}
		// The queue is told before the sessions answer, as a synced
		// enqueue tells it before it returns.
		for _, m := range g.members {
			if !m.at.IsZero() && p.Deferred != nil {
				p.Deferred(m.id, m.at)
			}
			if p.Enqueued != nil {
				p.Enqueued(m.id)
			}
		}
		close(g.done)
	}
}

// unqueue removes a message whose store failed after it was queued,
// wherever the policy put it. The queue was not told of it yet. No Sync:
// should a power loss bring it back, it is a duplicate of what the
// client sends again, never a loss.
func (p *Pickup) unqueue(id string) {
	p.Queue.RemoveMessage(id)
}
