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
// After a line is written, the Observer (if any) is called with it.
//
// Groups are flattened: a group's name and '_' prefix the keys inside it.
type Handler struct {
	s      *handlerState
	pre    []byte // attributes added by WithAttrs, already formatted
	prekv  []any  // the same attributes for the Observer
	prefix string // group prefix for later keys
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

// Handle writes r as one line.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	b := make([]byte, 0, 256)
	b = append(b, "ts="...)
	b = r.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, " event="...)
	b = append(b, Value(r.Message)...)
	b = append(b, h.pre...)
	obs := h.s.obs.Load()
	var kv []any
	if obs != nil {
		kv = make([]any, 0, len(h.prekv)+2*r.NumAttrs())
		kv = append(kv, h.prekv...)
	}
	r.Attrs(func(a slog.Attr) bool {
		b, kv = appendAttr(b, kv, obs != nil, h.prefix, a)
		return true
	})
	b = append(b, '\n')
	h.s.mu.Lock()
	_, err := h.s.w.Write(b)
	h.s.mu.Unlock()
	if obs != nil {
		(*obs)(r.Time, r.Message, kv)
	}
	return err
}

// appendAttr formats a as " key=value" onto b and, when observed, its key
// and plain value onto kv.
func appendAttr(b []byte, kv []any, observed bool, prefix string, a slog.Attr) ([]byte, []any) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "_"
		}
		for _, g := range v.Group() {
			b, kv = appendAttr(b, kv, observed, p, g)
		}
		return b, kv
	}
	if a.Key == "" && v.Kind() == slog.KindAny && v.Any() == nil {
		return b, kv // slog's rule: an empty Attr is ignored
	}
	k := key(prefix + a.Key)
	b = append(b, ' ')
	b = append(b, k...)
	b = append(b, '=')
	if v.Kind() == slog.KindAny {
		if bv, ok := v.Any().(bare); ok {
			b = append(b, bv...)
			if observed {
				kv = append(kv, k, string(bv))
			}
			return b, kv
		}
	}
	b = append(b, Value(valueString(v))...)
	if observed {
		kv = append(kv, k, plain(v))
	}
	return b, kv
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

// plain is v's Go value for the Observer: strings as string, integers as
// int, everything else as its text.
func plain(v slog.Value) any {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindInt64:
		return int(v.Int64())
	}
	return valueString(v)
}

// WithAttrs returns a Handler that writes attrs after event on every line.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.pre = append([]byte(nil), h.pre...)
	n.prekv = append([]any(nil), h.prekv...)
	for _, a := range attrs {
		n.pre, n.prekv = appendAttr(n.pre, n.prekv, true, h.prefix, a)
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
