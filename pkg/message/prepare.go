package message

import "fmt"

// AddressError is an address that does not parse, with where it was found.
type AddressError struct {
	Where   string // "the To: header", "command line", "-f", "RCPT TO", ...
	Address string
	Err     error
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("invalid address %q in %s: %v", truncate(e.Address, 80), e.Where, e.Err)
}

func (e *AddressError) Unwrap() error { return e.Err }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Recipients returns the -t recipients of h: those of Resent-To, Resent-Cc
// and Resent-Bcc when any Resent- recipient field is present (a resent
// message goes to its new recipients only, RFC 5322 3.6.6), else those of
// To, Cc and Bcc.
func Recipients(h *Header) ([]string, error) {
	names := []string{"To", "Cc", "Bcc"}
	if h.Has("Resent-To") || h.Has("Resent-Cc") || h.Has("Resent-Bcc") {
		names = []string{"Resent-To", "Resent-Cc", "Resent-Bcc"}
	}
	var out []string
	for _, f := range h.Fields {
		for _, n := range names {
			if !f.Is(n) {
				continue
			}
			v := f.Value()
			list, err := ParseList(v)
			if err != nil {
				return nil, &AddressError{Where: "the " + f.Name + ": header", Address: v, Err: err}
			}
			out = append(out, list...)
		}
	}
	return out, nil
}

// RemoveBcc removes Bcc: and Resent-Bcc: (sendmail -t).
func RemoveBcc(h *Header) {
	h.Del("Bcc")
	h.Del("Resent-Bcc")
}

// EnsureFrom adds "From: name <addr>" when h has no From: field, and
// reports whether it did.
func EnsureFrom(h *Header, name, addr string) bool {
	if h.Has("From") {
		return false
	}
	h.Add("From", FormatFrom(name, addr))
	return true
}

// Dedup returns list without repeated addresses (first occurrence kept;
// the comparison is exact, as local parts are case-sensitive).
func Dedup(list []string) []string {
	seen := make(map[string]bool, len(list))
	out := list[:0]
	for _, a := range list {
		if seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	return out
}
