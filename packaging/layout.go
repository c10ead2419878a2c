// Package packaging holds packaging/layout.txt, the one place the owners
// and modes of every installed path are written down, for code that checks
// an installed system against it (relayd doctor).
package packaging

import (
	_ "embed"
	"fmt"
	"strings"
)

//go:embed layout.txt
var layoutTxt string

// Entry is one line of layout.txt.
type Entry struct {
	Type   string // f c m l d r (see layout.txt)
	Path   string // with @PREFIX@ /usr and the Debian systemd directories
	Owner  string // "-" for links
	Group  string
	Mode   string // octal, 4 digits; "-" for links
	Source string // link target for "l"
}

// Layout returns the entries of layout.txt, as installed by the .deb.
func Layout() ([]Entry, error) {
	var out []Entry
	r := strings.NewReplacer("@PREFIX@", "/usr", "@UNITDIR@", "/lib/systemd/system",
		"@SYSUSERSDIR@", "/usr/lib/sysusers.d", "@TMPFILESDIR@", "/usr/lib/tmpfiles.d")
	for n, line := range strings.Split(layoutTxt, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		w := strings.Fields(line)
		if len(w) != 6 {
			return nil, fmt.Errorf("layout.txt:%d: %d columns, want 6", n+1, len(w))
		}
		out = append(out, Entry{Type: w[0], Path: r.Replace(w[1]), Owner: w[2], Group: w[3], Mode: w[4], Source: w[5]})
	}
	return out, nil
}
