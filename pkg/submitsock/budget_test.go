package submitsock

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// Headers are charged beyond FreeHeader, per UID and in all, until the
// connection gives them back.
func TestHeaderBudget(t *testing.T) {
	b := &HeaderBudget{Total: 3 << 20, PerUID: 2 << 20}
	big := strings.Repeat("h", FreeHeader+(1<<20))
	read := func(uid uint32) (*budgetReader, error) {
		r := &budgetReader{r: strings.NewReader(big), b: b, uid: uid, on: true}
		_, err := io.Copy(io.Discard, r)
		return r, err
	}
	r1, err := read(1)
	if err != nil || b.Used() != 1<<20 {
		t.Fatalf("first header: %v, used %d", err, b.Used())
	}
	r2, err := read(1)
	if err != nil {
		t.Fatalf("second header of uid 1: %v", err)
	}
	r4, err := read(1)
	if !errors.Is(err, ErrHeaderBudget) {
		t.Fatalf("third header of uid 1: %v, want ErrHeaderBudget", err)
	}
	r3, err := read(2)
	if err != nil {
		t.Fatalf("uid 2: %v", err)
	}
	r5, err := read(3)
	if !errors.Is(err, ErrHeaderBudget) {
		t.Fatalf("over the total: %v, want ErrHeaderBudget", err)
	}
	// Every connection gives back what it took when it ends (Serve
	// defers release), refused ones included.
	for _, r := range []*budgetReader{r1, r2, r3, r4, r5} {
		r.release()
	}
	if b.Used() != 0 {
		t.Fatalf("used %d after every release", b.Used())
	}
	small := &budgetReader{r: bytes.NewReader(make([]byte, FreeHeader)), b: b, uid: 9, on: true}
	if _, err := io.Copy(io.Discard, small); err != nil || small.held != 0 {
		t.Fatalf("a header within FreeHeader was charged: %v %d", err, small.held)
	}
}
