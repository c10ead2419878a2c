package pickup

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

func roundTrip(t *testing.T, in string) (string, *header) {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(in), maxLineBytes)
	h, err := readHeader(br)
	if err != nil {
		return "", nil
	}
	var b bytes.Buffer
	if err := h.write(&b, nil); err != nil {
		t.Fatal(err)
	}
	io.Copy(&b, br)
	return b.String(), h
}

func TestReadHeader(t *testing.T) {
	for in, want := range map[string]string{
		"Subject: a\n\nbody\n":                       "Subject: a\n\nbody\n",
		"Subject: a\r\n\r\nbody\r\n":                 "Subject: a\r\n\r\nbody\r\n",
		"Subject: a\n folded\nTo: b\n\nbody\n":       "Subject: a\n folded\nTo: b\n\nbody\n",
		"no header line\nbody\n":                     "\nno header line\nbody\n",
		"Subject: only a header":                     "Subject: only a header\n\n",
		"":                                           "\n",
		"From: x\n>From nobody\n":                    "From: x\n\n>From nobody\n",
		"X: 1\n" + strings.Repeat("y", 70000) + "\n": "X: 1\n\n" + strings.Repeat("y", 70000) + "\n",
	} {
		if got, _ := roundTrip(t, in); got != want {
			t.Errorf("%.40q: got %.60q, want %.60q", in, got, want)
		}
	}
	_, h := roundTrip(t, "Subject: a\n folded\n\n")
	if f, n := h.get("subject"); n != 1 || f.value() != "a folded" {
		t.Errorf("value %q", f.value())
	}
	// A header field longer than a line may be is refused, not truncated.
	br := bufio.NewReaderSize(strings.NewReader("X-Long: "+strings.Repeat("z", 70000)+"\n\n"), maxLineBytes)
	if _, err := readHeader(br); err != ErrHeaderTooLarge {
		t.Errorf("long field: %v", err)
	}
}

// FuzzReadHeader: any input parses without panicking, and whatever is not
// part of the header section reaches the output unchanged.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{"Subject: a\n\nbody\n", "a\n", "X: y\r\n z\r\n\r\n.", ": x\n\n", " cont\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), maxLineBytes)
		h, err := readHeader(br)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		var b bytes.Buffer
		h.write(&b, []field{newField("Received", "x")})
		b.Write(rest)
		out := b.String()
		if !strings.HasPrefix(out, "Received: x\n") || !strings.HasSuffix(out, string(h.bodyStart)+string(rest)) {
			t.Fatalf("in %q out %q", in, out)
		}
		if !strings.Contains(out, "\n\n") && !strings.Contains(out, "\n\r\n") {
			t.Fatalf("no header/body separator in %q", out)
		}
	})
}
