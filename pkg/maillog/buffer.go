package maillog

import (
	"io"
	"sync"
	"time"
)

// FlushDelay is how long a line written to a Buffer may wait before it
// is written out.
const FlushDelay = 5 * time.Millisecond

// bufferMax is how many bytes a Buffer collects before it writes them at
// once, without waiting for its delay.
const bufferMax = 64 << 10

// Buffer collects the lines written to it and writes them to the
// underlying writer in one write: at most delay after the first line it
// holds, as soon as it holds bufferMax bytes, and on Flush and Close. A
// busy daemon logs several lines per message; one write(2) each was a
// visible share of its CPU per message, and every one a system call. A
// clean stop loses nothing (Close); a crash loses at most the lines of
// the last delay. Each Write is kept whole (a line is never split
// between two writes unless it is longer than bufferMax). Safe for
// concurrent use.
type Buffer struct {
	mu    sync.Mutex
	w     io.Writer
	delay time.Duration
	buf   []byte
	timer *time.Timer
	armed bool   // the timer will flush
	done  bool   // closed: every write goes out at once
	err   error  // the last write error, returned by the next Write
	out   []byte // the buffer being written (swapped with buf)
}

// NewBuffer returns a Buffer writing to w at most delay after a line.
func NewBuffer(w io.Writer, delay time.Duration) *Buffer {
	b := &Buffer{w: w, delay: delay}
	b.timer = time.AfterFunc(time.Hour, b.timed)
	b.timer.Stop()
	return b
}

// Write appends p; it returns the error of the last failed write out, if
// any (p is kept all the same).
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > 0 && len(b.buf)+len(p) > bufferMax {
		b.flushLocked()
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= bufferMax || b.done {
		b.flushLocked()
	} else if !b.armed {
		b.armed = true
		b.timer.Reset(b.delay)
	}
	err := b.err
	b.err = nil
	return len(p), err
}

// timed is the timer's flush.
func (b *Buffer) timed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	b.flushLocked()
}

// flushLocked writes out what the buffer holds (b.mu held: lines written
// meanwhile wait, so that the order is kept).
func (b *Buffer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	b.buf, b.out = b.out[:0], b.buf
	if _, err := b.w.Write(b.out); err != nil {
		b.err = err
	}
	if cap(b.out) > 4*bufferMax {
		b.out = nil // one huge line must not stay allocated
	}
}

// Flush writes out every line written so far.
func (b *Buffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	err := b.err
	b.err = nil
	return err
}

// Close flushes and stops the timer; later writes go out at once.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer.Stop()
	b.armed, b.done = false, true
	b.flushLocked()
	err := b.err
	b.err = nil
	return err
}
