package message

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// The fields of a header read into one buffer stay apart: what is
// appended to one field (a line end, a continuation line, a rewrite)
// never changes the next, and a header larger than that buffer reads
// the same.
func TestReadHeaderFieldsApart(t *testing.T) {
	for _, n := range []int{1, 10, 100} {
		var in strings.Builder
		for i := range n {
			in.WriteString("X-F" + strings.Repeat("a", i%7) + ": v" + strings.Repeat("b", i*13%200) + "\n")
			if i%3 == 0 {
				in.WriteString("\tcontinued " + strings.Repeat("c", i) + "\n")
			}
		}
		in.WriteString("From: a@b\nSubject: s\n\nbody\n")
		h, err := ReadHeader(bufio.NewReader(strings.NewReader(in.String())), 0)
		if err != nil {
			t.Fatal(err)
		}
		want := make([][]byte, len(h.Fields))
		for i, f := range h.Fields {
			want[i] = bytes.Clone(f.Raw)
		}
		for i := range h.Fields {
			h.Fields[i].Raw = append(h.Fields[i].Raw, "X-Added: 1\n"...)
		}
		for i, f := range h.Fields {
			if !bytes.Equal(f.Raw, append(want[i], "X-Added: 1\n"...)) {
				t.Fatalf("%d fields: field %d is %q after appending to each, want %q", n, i, f.Raw, want[i])
			}
		}
	}
}

func BenchmarkReadHeader(b *testing.B) {
	msg := "From: a@bench.example\r\nTo: r@bench.example\r\nSubject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 2048/78)
	r := strings.NewReader(msg)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(msg)
		br.Reset(r)
		if _, err := ReadHeader(br, 0); err != nil {
			b.Fatal(err)
		}
	}
}
