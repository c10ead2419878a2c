package pickup

import (
	"slices"
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
// A Sync (two fdatasyncs, each an inode and a data block and a cache
// flush) costs about as much CPU for one message as for ten, and sessions
// in step reach the end of their data in bursts: the first of a burst
// would get a Sync of its own, the others the next one. So before it
// syncs a group, the goroutine waits for the members the group may
// expect: the Store calls under way (their data is being read), and as
// many members as the largest of the last recentGroups groups had; at
// most siblingWait after the group's first member joined. A lone session
// (no Store under way, recent groups of one) is synced at once. A Store
// still under way when a wait ends did not come in step (a client sending
// a large message, or one that sends slowly or holds its DATA section
// open): later groups do not wait for it, or one such client would make
// every message wait the whole bound.
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
	created time.Time // when its first member joined
}

// siblingWait bounds how long the Sync of a group waits for the members
// it expects (see syncGroups).
const siblingWait = time.Millisecond

// recentGroups is how many of the last groups' sizes tell how many
// members a group may expect.
const recentGroups = 4

// committer forms the groups (the zero value is ready).
type committer struct {
	mu      sync.Mutex
	open    *group // accepting members; its Sync has not started
	running bool   // the goroutine that syncs the groups is running
	// storing counts the Store calls between their start and their
	// commit (or their failure): members the open group is sure to get
	// unless they fail.
	storing int
	// fresh counts those of them that began in the current epoch: the
	// ones the open group waits for. A wait that ends with some left
	// starts a new epoch (the Stores of earlier ones are not waited for).
	fresh int
	epoch uint64
	// recent holds the sizes of the last groups (a ring, next at
	// recentAt).
	recent   [recentGroups]int
	recentAt int
	// want is what the open group waits for (waiting: syncGroups waits
	// on joined until it has that many members).
	want    int
	waiting bool
	joined  chan struct{} // buffered
	timer   *time.Timer
	groups  uint64 // groups synced (benchmarks, tests)
	// maxWait, when not zero, replaces siblingWait, and sync, when not
	// nil, Queue.SyncIDs (tests).
	maxWait time.Duration
	sync    func(ids ...string) error
}

// begin counts a Store that has started; it returns its epoch, for end
// or commit.
func (c *committer) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.storing++
	c.fresh++
	return c.epoch
}

// end uncounts a Store of epoch that failed before its commit.
func (c *committer) end(epoch uint64) {
	c.mu.Lock()
	c.uncount(epoch)
	c.wake()
	c.mu.Unlock()
}

// uncount takes a Store of epoch off the ones under way (c.mu held).
func (c *committer) uncount(epoch uint64) {
	c.storing--
	if epoch == c.epoch {
		c.fresh--
	}
}

// wake tells the waiting syncGroups (c.mu held) once the open group is
// as large as the recent ones were and no Store is left that would join
// it.
func (c *committer) wake() {
	if !c.waiting || c.fresh > 0 || c.open == nil || len(c.open.members) < c.want {
		return
	}
	c.waiting = false
	select {
	case c.joined <- struct{}{}:
	default:
	}
}

// expected is how many members a group may expect: as many as the
// largest of the recent groups had.
func (c *committer) expected() int {
	return slices.Max(c.recent[:])
}

// commit waits until the message id, written in mode inGroup, is durable
// (nil), or its group's Sync failed: then the message is removed (its
// client is told it was not stored), what the gate counted for it taken
// back (undo: the client's retry must not use up the account's
// allowance), and the error returned. at is when a message the policy
// deferred may be sent (zero: not deferred); epoch is its Store's (begin).
func (p *Pickup) commit(id string, at time.Time, undo func(), epoch uint64) error {
	c := &p.committer
	c.mu.Lock()
	c.uncount(epoch)
	if c.open == nil {
		c.open = &group{done: make(chan struct{}), created: time.Now()}
	}
	g := c.open
	g.members = append(g.members, groupMember{id: id, at: at, undo: undo})
	c.wake()
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
		if c.open != nil {
			c.want = c.expected()
			if c.fresh > 0 || len(c.open.members) < c.want {
				wait := siblingWait
				if c.maxWait != 0 {
					wait = c.maxWait
				}
				c.waitSiblings(c.open.created.Add(wait))
				if c.fresh > 0 {
					// Not in step: not waited for again.
					c.epoch++
					c.fresh = 0
				}
			}
		}
		g := c.open
		c.open = nil
		if g == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.recent[c.recentAt] = len(g.members)
		c.recentAt = (c.recentAt + 1) % recentGroups
		c.groups++
		c.mu.Unlock()
		p.savePolicy()
		ids := make([]string, len(g.members))
		for i, m := range g.members {
			ids[i] = m.id
		}
		// A member that another caller's failed Sync dropped fails the
		// group: its client must not be told it is stored.
		if c.sync != nil {
			g.err = c.sync(ids...)
		} else {
			g.err = p.Queue.SyncIDs(ids...)
		}
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

// waitSiblings waits (c.mu held, released meanwhile) until the open
// group has the members it expects (wake), or siblingWait has passed: a
// Sync costs about as much CPU for one message as for ten, so it waits
// for the members that are about to join rather than leave them to a
// Sync of their own.
func (c *committer) waitSiblings(deadline time.Time) {
	d := time.Until(deadline)
	if d <= 0 {
		return
	}
	if c.joined == nil {
		c.joined = make(chan struct{}, 1)
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d)
	}
	c.waiting = true
	c.mu.Unlock()
	select {
	case <-c.joined:
	case <-c.timer.C:
	}
	c.timer.Stop()
	c.mu.Lock()
	c.waiting = false
	// A signal sent after the timer fired is stale for the next wait.
	select {
	case <-c.joined:
	default:
	}
}

// unqueue removes a message whose store failed after it was queued,
// wherever the policy put it. The queue was not told of it yet. No Sync:
// should a power loss bring it back, it is a duplicate of what the
// client sends again, never a loss.
func (p *Pickup) unqueue(id string) {
	p.Queue.RemoveMessage(id)
}
