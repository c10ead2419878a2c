package relay

import "io"

// WireMode says what the upstream accepts.
type WireMode struct {
	// EightBit: the upstream offers 8BITMIME; 8-bit bytes may stay.
	EightBit bool
}

// NewWireReader returns a reader of r's message as it may go on the wire
// (see the package documentation, "Wire safety"). body must return a fresh
// reader of the same bytes each time it is called: the message is read
// twice (a scan, then the rewrite).
func NewWireReader(body func() (io.Reader, error), mode WireMode) (io.Reader, error) {
	return nil, errNotImplemented
}
