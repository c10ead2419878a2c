// Package maillog writes the mail log: one stable key=value line per event,
// meant to be grepped for years (chasquid's maillog, Postfix's
// "postfix/smtp[123]: ID: to=<...>, status=sent" in spirit).
//
// A line is
//
//	ts=2026-11-23T14:40:00.123Z event=pickup id=0006270A1B2C3D4E5F60 uid=1001 user=smtest ...
//
// Keys are fixed lower-case words chosen by the caller; values are written
// bare when they consist only of safe characters, else as a Go-quoted string
// (so CR, LF, '"' and non-printable bytes can never break a line or forge
// another event). The order of keys is the caller's order. The format of
// each event is pinned by tests in the packages that emit them.
//
// Many values come from outside and are hostile at times: upstream reply
// texts, addresses, script paths and command lines a caller claims,
// options, header values. Value is what makes them safe: quoting escapes
// every control character (C0, DEL, C1, U+2028/2029, bidi overrides) and
// every invalid UTF-8 byte, so a line holds printable characters only; a
// value over MaxValue bytes is cut (with the number of bytes left out), so
// that one upstream cannot make a line of megabytes. A key that is not a
// lower-case word is replaced by "badkey", so even a caller's mistake
// cannot break the format.
//
// Its Go API is not stable.
package maillog

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"
)

// Logger writes mail log lines through a Handler. Its methods, one per
// event (events.go), are the events relayd logs. It is safe for
// concurrent use; a nil *Logger logs nothing.
type Logger struct {
	h   *Handler
	now func() time.Time
}

// Observer is called with every event after its line is written
// (relayd's metrics and stats count what the log says). It must be quick,
// must not log and must not keep e or its Attrs (both are reused for the
// next line); the strings inside are its to keep.
type Observer func(e *Entry)

// SetObserver sets the function every event is passed to (nil: none).
func (l *Logger) SetObserver(o Observer) { l.h.SetObserver(o) }

// New returns a Logger writing to w. now may be nil for time.Now.
func New(w io.Writer, now func() time.Time) *Logger {
	if now == nil {
		now = time.Now
	}
	return &Logger{h: NewHandler(w), now: now}
}

// Handler returns the slog.Handler the Logger writes through, for a
// slog.Logger that writes the same lines.
func (l *Logger) Handler() slog.Handler { return l.h }

// emit writes one event at level lv with attrs in order, at once.
func (l *Logger) emit(lv slog.Level, event string, attrs ...slog.Attr) {
	l.emitAs(false, lv, event, attrs...)
}

// emitLazy writes one of the events of every delivered message (pickup
// from maildrop/, delivery, removal): when the Logger writes to a Buffer
// it may wait there until the Buffer's delay, the next event written at
// once or a WriteOut.
func (l *Logger) emitLazy(lv slog.Level, event string, attrs ...slog.Attr) {
	l.emitAs(true, lv, event, attrs...)
}

// WriteOut writes out the lines a Buffer holds back (nothing when the
// Logger does not write to one). The drain calls it before a change the
// outside world can see — a maildrop file removed, a message gone from
// the queue — so that the lines about it are in the log by then.
func (l *Logger) WriteOut() {
	if l == nil {
		return
	}
	l.h.s.mu.Lock()
	defer l.h.s.mu.Unlock()
	if f, ok := l.h.s.w.(flusher); ok {
		f.Flush()
	}
}

func (l *Logger) emitAs(lazy bool, lv slog.Level, event string, attrs ...slog.Attr) {
	if l == nil {
		return
	}
	l.h.handle(l.now(), event, nil, attrs, lazy)
}

// KV converts alternating keys and values (key string, value of any type;
// a trailing odd key gets an empty value) to attributes, for the details
// a rate-limited reporter (sockserve.RateLog) passes on.
func KV(kv ...any) []slog.Attr {
	attrs := make([]slog.Attr, 0, (len(kv)+1)/2)
	for i := 0; i < len(kv); i += 2 {
		a := slog.Attr{Key: fmt.Sprint(kv[i])}
		if i+1 < len(kv) {
			a.Value = slog.AnyValue(kv[i+1])
		} else {
			a.Value = slog.AnyValue(bare(""))
		}
		if a.Key == "" {
			a.Key = "badkey"
		}
		attrs = append(attrs, a)
	}
	return attrs
}

// bare is a value written as it is, without quoting (only the empty
// value of a trailing odd key).
type bare string

// MaxValue bounds the bytes of a value that are logged.
const MaxValue = 4096

// key returns k if it is a word of lower-case letters, digits, '_' and
// '-', else "badkey".
func key(k string) string {
	if k == "" {
		return "badkey"
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "badkey"
		}
	}
	return k
}

// Value formats one value: bare if every byte is a safe printable ASCII
// character, else Go-quoted. The empty string is written as "". A value
// longer than MaxValue bytes is cut there (at a character boundary) and
// quoted, with "...[N more bytes]" inside the quotes.
func Value(s string) string {
	if s == "" {
		return `""`
	}
	if len(s) > MaxValue {
		cut := MaxValue
		for cut > MaxValue-4 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut] + fmt.Sprintf("...[%d more bytes]", len(s)-cut))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\' {
			return strconv.Quote(s)
		}
	}
	return s
}
