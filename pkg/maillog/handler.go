package maillog

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Handler is a slog.Handler that writes the mail log's line format: the
// record's time as ts (UTC, milliseconds), its message as event, then its
// attributes in order, each key checked by key and each value written by
// Value. The level is not written: the event name says what happened.
// After a line is written, the Observer (if any) is called with its Entry.
//
// Groups are flattened: a group's name and '_' prefix the keys inside it.
type Handler struct {
	s      *handlerState
	pre    []byte      // attributes added by WithAttrs, already formatted
	preat  []slog.Attr // the same attributes for the Observer
	prefix string      // group prefix for later keys
}

// handlerState is what all handlers derived from one share.
type handlerState struct {
	mu  sync.Mutex
	w   io.Writer
	obs atomic.Pointer[Observer]
}

// NewHandler returns a Handler writing to w.
func NewHandler(w io.Writer) *Handler {
	return &Handler{s: &handlerState{w: w}}
}

// SetObserver sets the function every record is passed to (nil: none).
func (h *Handler) SetObserver(o Observer) {
	if o == nil {
		h.s.obs.Store(nil)
		return
	}
	h.s.obs.Store(&o)
}

// Enabled reports true: every event is logged.
func (h *Handler) Enabled(context.Context, slog.Level) bool { return true }

// flusher is a writer that holds lines back (Buffer).
type flusher interface{ Flush() error }

// Handle writes r as one line, and writes out every line a Buffer held
// back before it.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	return h.handle(r.Time, r.Message, &r, nil, false)
}

// line is what writing one line needs, reused from line to line (lines):
// the line's bytes and the Observer's Entry. An Observer keeps neither.
type line struct {
	b []byte
	e Entry
}

var lines = sync.Pool{New: func() any { return &line{b: make([]byte, 0, 512)} }}

// handle writes one line: the time t, the event msg, then the attributes
// of r (when not nil), then attrs. Unless lazy, it then flushes the
// writer (when it is a Buffer): a line that may wait is one of the events
// every delivered or accepted message logs, which a busy drain or
// listener writes by the thousand (a pickup line whose client is told is
// written out by Logger.WriteOut before the answer); every other event —
// an error, a refusal — is written out at once, with whatever waited
// before it, so that it is in the log when the outside world hears of it.
func (h *Handler) handle(t time.Time, msg string, r *slog.Record, attrs []slog.Attr, lazy bool) error {
	ln := lines.Get().(*line)
	b := append(ln.b[:0], "ts="...)
	b = appendTime(b, t.UTC())
	b = append(b, " event="...)
	b = append(b, Value(msg)...)
	b = append(b, h.pre...)
	obs := h.s.obs.Load()
	as := append(ln.e.Attrs[:0], h.preat...)
	if r != nil {
		r.Attrs(func(a slog.Attr) bool {
			b, as = appendAttr(b, as, obs != nil, h.prefix, a)
			return true
		})
	}
	for _, a := range attrs {
		b, as = appendAttr(b, as, obs != nil, h.prefix, a)
	}
	b = append(b, '\n')
	h.s.mu.Lock()
	_, err := h.s.w.Write(b)
	if f, ok := h.s.w.(flusher); ok && !lazy {
		if ferr := f.Flush(); err == nil {
			err = ferr
		}
	}
	h.s.mu.Unlock()
	if obs != nil {
		ln.e = Entry{Time: t, Event: msg, Attrs: as}
		(*obs)(&ln.e)
	}
	// Back to the pool holding no value of this line; an unusually long
	// line's buffer is left to the collector.
	clear(as)
	ln.e = Entry{Attrs: as[:0]}
	if cap(b) <= 16<<10 {
		ln.b = b[:0]
		lines.Put(ln)
	}
	return err
}

// appendTime appends t (UTC) as "2006-01-02T15:04:05.000Z".
func appendTime(b []byte, t time.Time) []byte {
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(b, "2006-01-02T15:04:05.000Z")
	}
	hh, mm, ss := t.Clock()
	ms := t.Nanosecond() / 1e6
	return append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+mo/10), byte('0'+mo%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+hh/10), byte('0'+hh%10), ':', byte('0'+mm/10), byte('0'+mm%10), ':',
		byte('0'+ss/10), byte('0'+ss%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

// appendAttr formats a as " key=value" onto b and, when observed, appends
// it (with the key as written) to as.
func appendAttr(b []byte, as []slog.Attr, observed bool, prefix string, a slog.Attr) ([]byte, []slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "_"
		}
		for _, g := range v.Group() {
			b, as = appendAttr(b, as, observed, p, g)
		}
		return b, as
	}
	if a.Key == "" && v.Kind() == slog.KindAny && v.Any() == nil {
		return b, as // slog's rule: an empty Attr is ignored
	}
	k := key(prefix + a.Key)
	b = append(b, ' ')
	b = append(b, k...)
	b = append(b, '=')
	if v.Kind() == slog.KindAny {
		if bv, ok := v.Any().(bare); ok {
			b = append(b, bv...)
			if observed {
				as = append(as, slog.String(k, string(bv)))
			}
			return b, as
		}
	}
	switch v.Kind() {
	case slog.KindInt64:
		// Digits and '-': what Value writes bare.
		b = strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		b = strconv.AppendUint(b, v.Uint64(), 10)
	default:
		b = append(b, Value(valueString(v))...)
	}
	if observed {
		as = append(as, slog.Attr{Key: k, Value: v})
	}
	return b, as
}

// valueString is v as text, as fmt.Sprint writes it.
func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return strconv.FormatInt(v.Int64(), 10)
	case slog.KindUint64:
		return strconv.FormatUint(v.Uint64(), 10)
	case slog.KindTime:
		// Times in the mail log are RFC 3339 in UTC, like ts.
		return v.Time().UTC().Format(time.RFC3339)
	}
	return v.String()
}

// WithAttrs returns a Handler that writes attrs after event on every line.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.pre = append([]byte(nil), h.pre...)
	n.preat = append([]slog.Attr(nil), h.preat...)
	for _, a := range attrs {
		n.pre, n.preat = appendAttr(n.pre, n.preat, true, h.prefix, a)
	}
	return &n
}

// WithGroup returns a Handler whose later keys are prefixed with name
// and '_'.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + strings.ToLower(name) + "_"
	return &n
}

// Entry is an event as the Observer receives it: the time written in its
// line, its name, and its attributes in order, with their keys as the
// line writes them (groups flattened, bad keys replaced).
type Entry struct {
	Time  time.Time
	Event string
	Attrs []slog.Attr
}

// Str returns the value of the first attribute named key as the line
// writes it, before quoting ("" when there is none).
func (e *Entry) Str(key string) string {
	for _, a := range e.Attrs {
		if a.Key == key {
			if a.Value.Kind() == slog.KindAny {
				if bv, ok := a.Value.Any().(bare); ok {
					return string(bv)
				}
			}
			return valueString(a.Value)
		}
	}
	return ""
}
