package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"
)

// MaxFileSize bounds the configuration file; Load refuses larger files.
const MaxFileSize = 1 << 20

// Error is one configuration error, printed as "<file>:<line>: <key>: <msg>".
// Key is the dotted key without array indices ("upstream.tls"); Line is 0
// when unknown.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
	// Err is the cause, when Msg is an error's text (errors.Is sees it).
	Err error
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

// Errors lists the *Error values in err (one, or several joined by Load).
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var e *Error
		if errors.As(err, &e) {
			out = append(out, e)
		}
	}
	walk(err)
	return out
}

// Load reads and validates the file at path, on top of the defaults. It
// never reads secrets (see LoadSecrets), never touches the network and never
// resolves names: sendmail runs it at every call.
//
// The file must not be writable by every user, and when the process runs
// setuid/setgid it must belong to root.
//
// A missing file is returned as an error that satisfies
// errors.Is(err, fs.ErrNotExist); callers decide whether Default() will do.
// Every other error lists all problems found, one *Error per line (see
// Errors), sorted by line.
func Load(path string) (*Config, error) {
	// unix.Open, not os.Open: os.Open would try to add the file to the
	// network poller (five more system calls, and the poller's own set-up
	// in a sendmail that has no other use for it).
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{File: path, Key: "file", Msg: "not a regular file"}
	}
	// Whoever can write this file chooses where every local message goes.
	if fi.Mode().Perm()&0o002 != 0 {
		return nil, &Error{File: path, Key: "file", Msg: fmt.Sprintf("mode %04o: writable by every user; run chmod o-w %s", fi.Mode().Perm(), path)}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && Privileged() && st.Uid != 0 {
		return nil, &Error{File: path, Key: "file", Msg: fmt.Sprintf("owned by uid %d, not root; run chown root %s", st.Uid, path)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: path, Key: "file", Msg: fmt.Sprintf("larger than %d bytes", MaxFileSize)}
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	data = blankComments(data)
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			key := pe.LastKey
			if key == "" {
				key = "syntax"
			}
			line := pe.Position.Line
			if line <= 0 { // toml v1.6 leaves it 0 for some errors at the end of input
				start := min(max(pe.Position.Start, 0), len(data))
				line = 1 + bytes.Count(data[:start], []byte("\n"))
			}
			return nil, &Error{File: name, Line: line, Key: key, Msg: pe.Message}
		}
		return nil, &Error{File: name, Key: "syntax", Msg: err.Error()}
	}
	c := defaults()
	c.Source = name
	d := &decoder{file: name, loc: locate(string(data))}
	c.loc = d.loc
	d.table(nil, raw, reflect.ValueOf(c).Elem())
	c.validate(validator{d})
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
		errs := make([]error, len(d.errs))
		for i, e := range d.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	if c.Hostname == "" {
		c.Hostname = DefaultHostname()
	}
	c.placeSockets(func(k string) bool { _, ok := raw[k]; return ok })
	c.Listen.place(c.Spool, func(k string) bool {
		m, _ := raw["listen"].(map[string]any)
		_, ok := m[k]
		return ok
	})
	return c, nil
}

// blankComments returns data with the text of its comment lines removed
// (the line ends stay, so every line keeps its number). The shipped file
// is mostly comments, and BurntSushi/toml's lexer takes ~0.35 ms for its
// 15 KB, at every sendmail call; without them the parse takes ~20 µs.
// Only what the TOML parser would accept as a comment is removed: a line
// whose first non-blank character is "#" and that holds no control
// character and only valid UTF-8; and nothing at all when the file has a
// multi-line string, whose lines may start with "#".
func blankComments(data []byte) []byte {
	if bytes.Contains(data, []byte(`"""`)) || bytes.Contains(data, []byte("'''")) {
		return data
	}
	var out []byte // allocated at the first comment removed
	rest := data
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i]
		}
		start := len(data) - len(rest)
		rest = rest[len(line):]
		lf := len(rest) > 0
		if lf {
			rest = rest[1:]
		}
		text := bytes.TrimLeft(line, " \t")
		if lf {
			text = bytes.TrimSuffix(text, []byte("\r")) // CRLF ends the line too
		}
		if len(text) == 0 || text[0] != '#' || !plainComment(text) {
			if out != nil {
				out = append(out, data[start:len(data)-len(rest)]...)
			}
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(data))
			out = append(out, data[:start]...)
		}
		if lf {
			out = append(out, '\n')
		}
	}
	if out == nil {
		return data
	}
	return out
}

// plainComment reports whether a comment holds only what TOML allows in
// one: valid UTF-8 without control characters other than tab.
func plainComment(c []byte) bool {
	for _, b := range c {
		if b < 0x20 && b != '\t' || b == 0x7f {
			return false
		}
	}
	return utf8.Valid(c)
}

// displayKey drops array indices: "upstream.\x001.host" → "upstream.host".
func displayKey(path []string) string {
	var parts []string
	for _, p := range path {
		if strings.HasPrefix(p, "\x00") {
			continue
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ".")
}

func sub(path []string, k string) []string {
	return append(append(make([]string, 0, len(path)+1), path...), k)
}

// keys returns m's keys in the order they are written in the file (then by
// name), so that errors come in file order and the result is deterministic.
func (d *decoder) keys(path []string, m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return d.sortKeys(path, keys)
}

func (d *decoder) sortKeys(path []string, keys []string) []string {
	lines := make(map[string]int, len(keys))
	for _, k := range keys {
		lines[k] = d.loc.line(sub(path, k)...)
	}
	sort.Slice(keys, func(i, j int) bool {
		if li, lj := lines[keys[i]], lines[keys[j]]; li != lj {
			return li < lj
		}
		return keys[i] < keys[j]
	})
	return keys
}
