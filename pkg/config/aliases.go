package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// maxAliasDepth bounds alias expansion (Sendmail uses 10; a chain this
// deep is a mistake).
const maxAliasDepth = 20

// checkAliasName validates an alias name (already lower-cased).
func checkAliasName(name string) error {
	if name == "" {
		return errors.New("empty alias name")
	}
	if strings.ContainsAny(name, "@:,") {
		return fmt.Errorf("alias name %q: a local name has no @, colon or comma", name)
	}
	return checkLocalPart(name)
}

// checkAliasTarget validates one alias value: a local name or an address.
// Pipes, files and :include: are refused: mailshim only relays.
func checkAliasTarget(t string) error {
	switch {
	case t == "":
		return errors.New("empty alias target")
	case strings.HasPrefix(t, "|"):
		return fmt.Errorf("%q: delivery to a program is not supported (mailshim only relays mail)", t)
	case strings.HasPrefix(t, "/"):
		return fmt.Errorf("%q: delivery to a file is not supported (mailshim only relays mail)", t)
	case strings.HasPrefix(strings.ToLower(t), ":include:"):
		return fmt.Errorf("%q: :include: is not supported; list the addresses", t)
	case strings.ContainsRune(t, '@'):
		return checkAddress(t)
	}
	return checkLocalPart(t)
}

// ReadAliases parses a file in the aliases(5) format of /etc/aliases:
//
//	# comment
//	name: target, target
//	    target          (a line starting with white space continues the last)
//
// Names are case-insensitive (returned lower-cased). Targets that a
// send-only MTA cannot honour (|program, /file, :include:) and malformed
// lines are reported in the error list and skipped; the rest is returned.
// A missing file yields an empty map and no error. Errors read
// "<path>:<line>: <name>: <what>".
func ReadAliases(path string) (map[string][]string, []error) {
	out := map[string][]string{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, []error{err}
	}
	var errs []error
	report := func(line int, key, format string, args ...any) {
		errs = append(errs, &Error{File: path, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
	}

	// Join continuation lines into logical entries, remembering where each
	// entry started.
	type entry struct {
		line int
		text string
	}
	var entries []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		trimmed := strings.TrimSpace(text)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case text[0] == ' ' || text[0] == '\t':
			if len(entries) == 0 {
				report(n, "aliases", "continuation line without an alias before it")
				continue
			}
			entries[len(entries)-1].text += " " + trimmed
		default:
			entries = append(entries, entry{n, text})
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}

	for _, e := range entries {
		name, rest, ok := strings.Cut(e.text, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if !ok {
			report(e.line, "aliases", "want \"name: address, ...\"")
			continue
		}
		if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
			name = name[1 : len(name)-1]
		}
		if err := checkAliasName(name); err != nil {
			report(e.line, name, "%v", err)
			continue
		}
		var targets []string
		skipped := false
		for _, t := range splitTargets(rest) {
			if err := checkAliasTarget(t); err != nil {
				report(e.line, name, "%v; skipped", err)
				skipped = true
				continue
			}
			targets = append(targets, t)
		}
		if len(targets) == 0 {
			if !skipped {
				report(e.line, name, "no address; skipped")
			}
			continue
		}
		if _, dup := out[name]; dup {
			report(e.line, name, "defined again; this definition wins")
		}
		out[name] = targets
	}
	return out, errs
}

// splitTargets splits an alias value at commas outside double quotes and
// removes the quotes.
func splitTargets(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	flush := func() {
		if t := strings.TrimSpace(cur.String()); t != "" {
			out = append(out, t)
		}
		cur.Reset()
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

// LoadAliases reads AliasesFile (when set) and merges it under [aliases]:
// a name defined in the configuration file wins. Resolve uses the result.
// The errors are those of ReadAliases: worth a log line, not fatal.
func (c *Config) LoadAliases() []error {
	merged := map[string][]string{}
	var errs []error
	if c.AliasesFile != "" {
		var file map[string][]string
		file, errs = ReadAliases(c.AliasesFile)
		for k, v := range file {
			merged[k] = v
		}
	}
	for k, v := range c.Aliases {
		merged[strings.ToLower(k)] = v
	}
	c.aliases = merged
	return errs
}

// Resolve expands a local name through the aliases, recursively: [aliases]
// and, after LoadAliases, the aliases file. Names are case-insensitive. The
// result keeps the order of first appearance without duplicates; it holds
// addresses (with @) and local names that have no alias, which the caller
// qualifies. A name met again while it is being expanded (a loop, or the
// usual "root: root, ops@example.com") is kept as a local name, not
// expanded again. A name without alias resolves to itself.
func (c *Config) Resolve(local string) []string {
	table := c.aliases
	if table == nil {
		table = make(map[string][]string, len(c.Aliases))
		for k, v := range c.Aliases {
			table[strings.ToLower(k)] = v
		}
	}
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		key := strings.ToLower(s)
		if !seen[key] {
			seen[key] = true
			out = append(out, s)
		}
	}
	active := map[string]bool{}
	var expand func(name string, depth int)
	expand = func(name string, depth int) {
		key := strings.ToLower(name)
		targets, ok := table[key]
		if strings.ContainsRune(name, '@') || !ok || active[key] || depth >= maxAliasDepth {
			add(name)
			return
		}
		active[key] = true
		for _, t := range targets {
			expand(t, depth+1)
		}
		active[key] = false
	}
	expand(local, 0)
	return out
}
