package message

import "testing"

func TestLookupAndNewField(t *testing.T) {
	h := &Header{}
	h.Add("Received", "a")
	h.Fields = append(h.Fields, NewField("received", "b"))
	h.Add("Subject", "s")
	f, n := h.Lookup("RECEIVED")
	if f == nil || n != 2 || f.Value() != "a" || string(h.Fields[1].Raw) != "received: b\n" {
		t.Fatalf("Lookup = %v, %d; fields %q", f, n, h.Fields)
	}
	*f = NewField("X-Was", "a")
	if h.Get("X-Was") != "a" || h.Has("Nope") {
		t.Error("Lookup does not point into the header")
	}
	if f, n := h.Lookup("Nope"); f != nil || n != 0 {
		t.Errorf("Lookup(Nope) = %v, %d", f, n)
	}
}
