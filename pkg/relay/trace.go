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
//	smtp upstream=host:port S: 250 2.1.0 Ok
//
// It sees both directions of the clear text in one stream (the session's
// connection copies its reads and writes here), so the direction is
// inferred: a line starting with three digits and a space or
// dash is the server's. It redacts SASL: the AUTH command keeps only its
// mechanism, and every client line until the final reply of the exchange
// (the initial response, LOGIN's user name and password, PLAIN's response
// after "334") becomes "[redacted]". Message data is summarised ("[message
// data: N lines]"), never written.
type tracer struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
	auth   bool
	data   bool
	lines  int
}

func newTracer(w io.Writer, addr string) *tracer {
	return &tracer{w: w, prefix: "smtp upstream=" + addr + " "}
}

const maxTraceLine = 4096

func (t *tracer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(t.buf) < maxTraceLine {
				t.buf = append(t.buf, b[:min(len(b), maxTraceLine-len(t.buf))]...)
			}
			break
		}
		if len(t.buf) < maxTraceLine {
			t.buf = append(t.buf, b[:min(i, maxTraceLine-len(t.buf))]...)
		}
		t.line(string(bytes.TrimSuffix(t.buf, []byte("\r"))))
		t.buf = t.buf[:0]
		b = b[i+1:]
	}
	return n, nil
}

func isReplyLine(l string) bool {
	return len(l) >= 3 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' && l[2] <= '9' &&
		(len(l) == 3 || l[3] == ' ' || l[3] == '-')
}

func (t *tracer) out(dir, l string) {
	fmt.Fprintf(t.w, "%s%s: %s\n", t.prefix, dir, strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, l), "?"))
}

func (t *tracer) line(l string) {
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
	reply := isReplyLine(l)
	if t.auth {
		if reply {
			t.out("S", l)
			if !strings.HasPrefix(l, "334") {
				t.auth = false
			}
			return
		}
		t.out("C", "[redacted]")
		return
	}
	if reply {
		t.out("S", l)
		if strings.HasPrefix(l, "354") {
			t.data = true
		}
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
		t.auth = true
		return
	}
	t.out("C", l)
}
