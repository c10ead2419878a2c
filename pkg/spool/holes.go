package spool

// Space inside segments. A segment is unlinked only when its last message
// is gone, and holds up to 64 MiB: tens of thousands of small messages.
// On a full file system that is too late: each delivery's transitions
// need journal space, and the journal's reserve lasts a few thousand of
// them. So the bytes of messages that have left the queue are given back
// to the file system as they go: once a Sync has made the lines that
// removed them durable (before that, a power loss could bring back entries
// pointing at them), the file system blocks that only such messages
// filled are punched out of the segment (fallocate PUNCH_HOLE, the file's
// size kept), and the journal takes its reserve back from the space freed
// before anything else can. A full disk then slows intake (new messages
// are refused while the reserve is low) but never stops the deliveries
// that free it.
//
// Each segment keeps the ranges known dead (gone for good) as sorted,
// merged spans; a message's range joins them after the Sync that covers
// its removal (q.gone holds it until then), and the blocks that this
// makes wholly dead are punched. A range still open by a reader
// (OpenMessage, a quarantine copy) waits: its bytes are never zeroed
// under it. At start, the gaps between the live messages of each segment
// are dead too once Recover has made the journal durable (not when replay
// skipped damaged lines: a gap may then hold a message only a lost line
// named; nor, when the journal could not be rewritten, the range of a
// message Recover dropped in memory only, which its line still names).

import (
	"errors"
	"sort"

	"golang.org/x/sys/unix"
)

// span is a byte range [off, end) of a segment.
type span struct{ off, end int64 }

// goneSpan is the range of a message that left segment s with the append
// numbered seq (its del or loc line): dead once a Sync covers seq.
type goneSpan struct {
	s *segment
	span
	seq uint64
}

// punchBlock is the unit of what is punched: ranges are cut to whole
// blocks of it (a partial block frees nothing). The file system's block
// size (statfs) when larger.
const punchBlock = 4096

// noteGoneLocked records that the message at [off, off+n) of s has left
// the queue with the last append (q.mu held).
func (q *Queue) noteGoneLocked(s *segment, off, n int64) {
	if s == nil || n <= 0 || q.noPunch {
		return
	}
	q.gone = append(q.gone, goneSpan{s: s, span: span{off, off + n}, seq: q.seq})
}

// markDead adds x to the dead spans of s and returns the part of it, cut
// to whole blocks of blk, that the dead spans now cover wholly and did not
// before (empty when none).
func (s *segment) markDead(x span, blk int64) span {
	d := s.deadSpans
	i := sort.Search(len(d), func(i int) bool { return d[i].end >= x.off })
	m := x
	j := i
	for ; j < len(d) && d[j].off <= x.end; j++ {
		m.off = min(m.off, d[j].off)
		m.end = max(m.end, d[j].end)
	}
	switch {
	case j == i:
		d = append(d, span{})
		copy(d[i+1:], d[i:])
		d[i] = m
	default:
		d[i] = m
		d = append(d[:i+1], d[j:]...)
	}
	s.deadSpans = d
	// A block is wholly dead now, and was not before, only if x touches
	// it and the merged span covers it.
	lo := max(roundUp(m.off, blk), x.off/blk*blk)
	hi := min(m.end/blk*blk, roundUp(x.end, blk))
	if lo >= hi {
		return span{}
	}
	return span{lo, hi}
}

func roundUp(n, blk int64) int64 { return (n + blk - 1) / blk * blk }

// punchIfShort is punchDead for the end of a Sync: only when the
// journal's reserve is short (it could not be renewed: the file system is
// full), so that the space of the messages just delivered comes back
// before the next transitions need it. Otherwise Maintain punches, every
// few seconds, off the path of the Sync's callers.
func (q *Queue) punchIfShort(upTo uint64) {
	q.mu.Lock()
	short := q.journalShortLocked()
	q.mu.Unlock()
	if short {
		q.punchDead(upTo)
	}
}

// punchDead punches out of their segments the ranges of messages whose
// removal the appends before upTo covered (a Sync made them durable: upTo
// is no later than q.synced), then lets the journal renew its reserve from the space freed.
func (q *Queue) punchDead(upTo uint64) {
	type work struct {
		s      *segment
		ranges []span
	}
	q.mu.Lock()
	if len(q.gone) == 0 {
		q.mu.Unlock()
		return
	}
	by := map[*segment][]span{}
	keep := q.gone[:0]
	for _, g := range q.gone {
		switch {
		case g.s.gone || g.s.dead || q.noPunch:
			// The whole file goes (or punching is not supported).
		case g.seq > upTo || g.s.readers[g.off] > 0:
			keep = append(keep, g)
		default:
			by[g.s] = append(by[g.s], g.span)
		}
	}
	clear(q.gone[len(keep):])
	q.gone = keep
	var ws []work
	for s, xs := range by {
		sort.Slice(xs, func(i, j int) bool { return xs[i].off < xs[j].off })
		var rs []span
		for _, x := range xs {
			r := s.markDead(x, q.blk)
			if r.off >= r.end {
				continue
			}
			if n := len(rs); n > 0 && rs[n-1].end >= r.off {
				rs[n-1].end = max(rs[n-1].end, r.end)
			} else {
				rs = append(rs, r)
			}
		}
		if len(rs) > 0 {
			s.refs++ // the file stays open while it is punched
			ws = append(ws, work{s, rs})
		}
	}
	q.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	var freed int64
	unsupported := false
	for _, w := range ws {
		for _, r := range w.ranges {
			err := unix.Fallocate(int(w.s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r.off, r.end-r.off)
			switch {
			case err == nil:
				freed += r.end - r.off
			case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
				unsupported = true
			}
			// Any other failure leaves the bytes where they are: they
			// go with the segment, as they did before punching.
		}
	}
	q.mu.Lock()
	for _, w := range ws {
		w.s.refs--
		if w.s.gone && w.s.refs == 0 {
			w.s.f.Close()
		}
	}
	if unsupported {
		q.noPunch = true
		q.gone = nil
	}
	q.punched += freed
	if freed > 0 {
		q.reserveLocked()
	}
	q.mu.Unlock()
}

// seedDeadLocked marks the bytes of every segment that neither a queued
// message nor a range of kept occupies as gone with the last append
// (Recover, q.mu held, the journal made durable): kept holds the messages
// Recover dropped in memory only while the journal, not rewritten, still
// names them. Not after a replay that skipped damaged lines.
func (q *Queue) seedDeadLocked(kept []goneSpan) {
	if q.damaged || q.noPunch {
		return
	}
	by := map[uint64][]span{}
	for _, e := range q.entries {
		by[e.seg] = append(by[e.seg], span{e.off, e.off + e.len})
	}
	for _, g := range kept {
		by[g.s.n] = append(by[g.s.n], g.span)
	}
	for n, xs := range by {
		s := q.segs[n]
		if s == nil {
			continue
		}
		sort.Slice(xs, func(i, j int) bool { return xs[i].off < xs[j].off })
		at := int64(0)
		for _, x := range append(xs, span{s.size, s.size}) {
			if x.off > at {
				q.noteGoneLocked(s, at, x.off-at)
			}
			at = max(at, x.end)
		}
	}
}

// Punched returns how many bytes were punched out of segments since the
// queue was opened (tests, metrics).
func (q *Queue) Punched() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.punched
}
