package pickup

import (
	"strings"
)

// Trace headers a caller cannot forge.
//
// relayd adds two trace fields to every message: Received: naming the UID
// ("from uid 1003 (shop) by web1.example.com (mailshim) id ...") and the
// origin header ([trace] header, X-Mailshim-Origin by default). An abuse
// desk reads them to find the account behind a message, so a caller must
// not be able to plant its own: a script could otherwise put
// "X-Mailshim-Origin: uid=33 script=/var/www/other-site/x.php" in its
// message and have the complaint land on someone else.
//
// Before ours are added, every field of the caller's header section that
// could be taken for one of them is renamed, not deleted, so that the
// abuse desk still sees what the caller tried:
//
//   - the configured origin header and the default X-Mailshim-Origin
//     (a renamed [trace] header must not leave the old name trusted);
//   - a Received: field that names mailshim ("(mailshim)" is how ours
//     ends its by clause). A message submitted on a send-only host has no
//     business carrying our Received: line; other MTAs' Received: fields
//     (a re-injected message) are kept as they are.
//
// A renamed field becomes "X-Mailshim-Forged-Origin: <value as given>" or
// "X-Mailshim-Forged-Received: <value as given>".

// ForgedPrefix starts the name of a caller's field that pickup renamed
// because it could be taken for a trace field of ours.
const ForgedPrefix = "X-Mailshim-Forged-"

// DefaultOriginHeader is the origin header's default name; a caller's
// field of that name is disarmed whatever [trace] header says.
const DefaultOriginHeader = "X-Mailshim-Origin"

// forgedName returns the name a field of the caller's header section is
// renamed to because it could be taken for a trace field relayd adds, or
// "" when it could not.
func (r *Rewriter) forgedName(f *field) string {
	switch {
	case f.is(DefaultOriginHeader), r.TraceHeader != "" && f.is(r.TraceHeader):
		return ForgedPrefix + "Origin"
	case f.is("Received") && strings.Contains(strings.ToLower(f.value()), "mailshim"):
		return ForgedPrefix + "Received"
	}
	return ""
}

// disarmTrace renames every field of h that could be taken for one of our
// trace fields (see forgedName) and returns the names it renamed, in
// order, for the log.
func (r *Rewriter) disarmTrace(h *header) []string {
	var names []string
	for i := range h.fields {
		f := &h.fields[i]
		newName := r.forgedName(f)
		if newName == "" {
			continue
		}
		names = append(names, f.name)
		raw := make([]byte, 0, len(newName)+len(f.raw)-len(f.name))
		raw = append(raw, newName...)
		raw = append(raw, f.raw[len(f.name):]...)
		*f = field{name: newName, raw: raw}
	}
	return names
}
