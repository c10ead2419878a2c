package relay

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
)

// tracer writes the protocol trace, one line per protocol line:
//
//	smtp upstream=host:port C: MAIL FROM:<a@example.org> BODY=8BITMIME
//	smtp upstream=host:port S: 250 2.0.0 Ok
//
// The session's connection copies what it reads (the server's lines) and
// what it writes (the client's) here, in clear text. What the client's
// lines are is the client's to say, never inferred from the replies (which
// the upstream controls, and which are read ahead of the client's next
// write): while the client runs a SASL exchange (sasl), every line it
// writes becomes "[redacted]", and the AUTH command keeps only its
// mechanism; from the start of message data (data) to its end of data,
// its lines are summarised ("[message data: N lines]"), never written.
type tracer struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    [2][]byte // the unfinished line, of the client and of the server
	secret bool
	data   bool
	lines  int
}

func newTracer(w io.Writer, addr string) *tracer {
	return &tracer{w: w, prefix: "smtp upstream=" + addr + " "}
}

const maxTraceLine = 4096

// Directions of the protocol lines, for buf.
const (
	fromClient = 0
	fromServer = 1
)

// sasl marks the start and the end of a SASL exchange. The client's lines
// are written out as they are sent, so that the end is marked after the
// exchange's last write.
func (t *tracer) sasl(on bool) {
	t.mu.Lock()
	t.secret = on
	t.mu.Unlock()
}

// startData marks the start of message data: the client's lines up to
// its end of data (a line "."; dot-stuffing leaves no other) are counted.
func (t *tracer) startData() {
	t.mu.Lock()
	t.data, t.lines = true, 0
	t.mu.Unlock()
}

// write takes bytes the client (dir fromClient) or the server sent.
func (t *tracer) write(dir int, b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(b) > 0 {
		buf := t.buf[dir]
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(buf) < maxTraceLine {
				t.buf[dir] = append(buf, b[:min(len(b), maxTraceLine-len(buf))]...)
			}
			break
		}
		if len(buf) < maxTraceLine {
			buf = append(buf, b[:min(i, maxTraceLine-len(buf))]...)
		}
		l := string(bytes.TrimSuffix(buf, []byte("\r")))
		t.buf[dir] = buf[:0]
		if dir == fromServer {
			t.out("S", l)
		} else {
			t.clientLine(l)
		}
		b = b[i+1:]
	}
}

func (t *tracer) out(dir, l string) {
	fmt.Fprintf(t.w, "%s%s: %s\n", t.prefix, dir, strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, l), "?"))
}

func (t *tracer) clientLine(l string) {
	if t.data {
		if l == "." {
			t.out("C", fmt.Sprintf("[message data: %d lines]", t.lines))
			t.out("C", ".")
			t.data, t.lines = false, 0
			return
		}
		t.lines++
		return
	}
	if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "AUTH") {
		s := "AUTH"
		if len(f) > 1 {
			s += " " + f[1]
		}
		if len(f) > 2 {
			s += " [redacted]"
		}
		t.out("C", s)
		return
	}
	if t.secret {
		t.out("C", "[redacted]")
		return
	}
	t.out("C", l)
}
