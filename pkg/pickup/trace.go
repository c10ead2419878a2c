package pickup

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mailshim/mailshim/pkg/message"
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
func (r *Rewriter) forgedName(f *message.Field) string {
	switch {
	case f.Is(DefaultOriginHeader), r.TraceHeader != "" && f.Is(r.TraceHeader):
		return ForgedPrefix + "Origin"
	case f.Is("Received") && strings.Contains(strings.ToLower(f.Value()), "mailshim"):
		return ForgedPrefix + "Received"
	}
	return ""
}

// disarmTrace renames every field of h that could be taken for one of our
// trace fields (see forgedName) and returns the names it renamed, in
// order, for the log.
func (r *Rewriter) disarmTrace(h *header) []string {
	var names []string
	for i := range h.Fields {
		f := &h.Fields[i]
		newName := r.forgedName(f)
		if newName == "" {
			continue
		}
		names = append(names, f.Name)
		raw := make([]byte, 0, len(newName)+len(f.Raw)-len(f.Name))
		raw = append(raw, newName...)
		raw = append(raw, f.Raw[len(f.Name):]...)
		*f = message.Field{Name: newName, Raw: raw}
	}
	return names
}

// Signed origin headers.
//
// With [trace] key_file, the origin header ends in "id=<queue id>
// mac=<signature>": HMAC-SHA256, keyed with the secret only relayd reads,
// over the header's name (lower case), its value up to " mac=" and the
// message's Message-ID, truncated to 128 bits and written in unpadded
// base64url. The queue ID and the Message-ID bind it to one message: a
// genuine header copied into another message no longer verifies.
// VerifyOrigin checks one.
//
// The value and the Message-ID are signed as DKIM's "relaxed" header
// canonicalization sees them (RFC 6376 3.4.2): unfolded, every run of
// spaces and tabs one space, none at either end. MTAs on the way re-fold
// long header lines, some with a tab where the space was; that must not
// make a genuine header look forged. Folding only ever happens at white
// space because relayd writes the header folded at its spaces and with no
// word near the 998-octet line limit (originField), so nothing on the way
// has to break a line inside a word.

// macPrefix separates the signature from the signed value.
const macPrefix = " mac="

// macLen is the signature's length in bytes (128 bits).
const macLen = 16

func originMAC(key []byte, name, value, msgid string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mailshim-origin-v1\x00"))
	m.Write([]byte(strings.ToLower(name)))
	m.Write([]byte{0})
	m.Write([]byte(relaxed(value)))
	m.Write([]byte{0})
	m.Write([]byte(relaxed(msgid)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:macLen])
}

// relaxed is s unfolded, with every run of white space (space, tab, line
// breaks) one space and none at either end.
func relaxed(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\r', '\n':
			space = b.Len() > 0
		default:
			if space {
				b.WriteByte(' ')
				space = false
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

// foldWidth is where originField folds the origin header's lines.
const foldWidth = 78

// originField returns the origin header field name: value, folded before
// a space wherever a line would pass foldWidth (RFC 5322 2.2.3). The
// value's words are short (traceValue), so no line comes near 998 octets.
func originField(name, value string) message.Field {
	b := make([]byte, 0, len(name)+len(value)+8)
	b = append(b, name...)
	b = append(b, ':')
	col := len(b)
	for rest, more := value, true; more; {
		var w string
		w, rest, more = strings.Cut(rest, " ")
		if col+1+len(w) > foldWidth && col > len(name)+1 {
			b = append(b, '\n')
			col = 0
		}
		b = append(b, ' ')
		b = append(b, w...)
		col += 1 + len(w)
	}
	return message.Field{Name: name, Raw: append(b, '\n')}
}

// SignOrigin returns value with its signature appended.
func SignOrigin(key []byte, name, value, msgid string) string {
	return value + macPrefix + originMAC(key, name, value, msgid)
}

// ErrNotGenuine is the error VerifyOrigin wraps for a header that is not
// ours (as opposed to a message it could not read).
var ErrNotGenuine = errors.New("not genuine")

// VerifyOrigin reads a message's header section from r (as delivered,
// or as saved: LF line ends, an mbox "From " line first) and checks its
// origin header (name) against key. It returns the header's signed value
// (the trace without the signature) when there is exactly one such field
// and its signature is right for this message's Message-ID; otherwise an
// error wrapping ErrNotGenuine that says why, or a read error.
func VerifyOrigin(key []byte, name string, r io.Reader) (string, error) {
	br := bufio.NewReader(r)
	// A message saved in an mbox file starts with its "From " separator
	// line, which is not a header field.
	if b, _ := br.Peek(5); string(b) == "From " {
		if _, err := br.ReadString('\n'); err != nil {
			return "", fmt.Errorf("reading the message: %w", err)
		}
	}
	h, err := readHeader(br)
	if err != nil {
		return "", fmt.Errorf("reading the message: %w", err)
	}
	var origins []*message.Field
	for i := range h.Fields {
		if h.Fields[i].Is(name) {
			origins = append(origins, &h.Fields[i])
		}
	}
	switch len(origins) {
	case 0:
		return "", fmt.Errorf("%w: the message has no %s header", ErrNotGenuine, name)
	case 1:
	default:
		return "", fmt.Errorf("%w: the message has %d %s headers; relayd adds exactly one", ErrNotGenuine, len(origins), name)
	}
	v := strings.TrimSpace(unfold(origins[0].Raw[len(origins[0].Name):]))
	v = relaxed(strings.TrimPrefix(strings.TrimSpace(v), ":"))
	i := strings.LastIndex(v, macPrefix)
	if i < 0 {
		return "", fmt.Errorf("%w: the %s header is not signed (no mac=)", ErrNotGenuine, name)
	}
	value, mac := v[:i], v[i+len(macPrefix):]
	msgid := ""
	if f, n := h.Lookup("Message-ID"); f != nil {
		if n > 1 {
			return "", fmt.Errorf("%w: the message has %d Message-ID headers", ErrNotGenuine, n)
		}
		msgid = f.Value()
	}
	want := originMAC(key, name, value, msgid)
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return value, fmt.Errorf("%w: the signature does not match (the header was forged or altered, it belongs to another message, or it was signed with another key)", ErrNotGenuine)
	}
	return value, nil
}

// unfold joins a header field's folded lines (RFC 5322 2.2.3): the line
// breaks go, the white space after them stays.
func unfold(raw []byte) string {
	s := strings.ReplaceAll(string(raw), "\r\n", "\n")
	s = strings.TrimSuffix(s, "\n")
	return strings.ReplaceAll(s, "\n", "")
}
