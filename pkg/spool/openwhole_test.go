package spool

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// OpenWhole gives the same header and body as OpenMessage, for a message
// it holds in memory and for one too big to, and a body damaged on disk
// before it was opened still fails its checksum.
func TestOpenWhole(t *testing.T) {
	q := newTestQueue(t)
	small := "Subject: s\n\n" + strings.Repeat("x", 2000) + "\n"
	big := "Subject: b\n\n" + strings.Repeat(strings.Repeat("y", 99)+"\n", 300)
	for _, body := range []string{small, big} {
		id := putBody(t, q, Incoming, body)
		f, m, err := q.OpenWhole(id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(m.Body(f))
		f.Close()
		if err != nil || string(got) != body {
			t.Fatalf("OpenWhole %d bytes: body of %d bytes, %v", len(body), len(got), err)
		}
		// Its buffer may serve another message now: a reader made after
		// Close must not see that one's bytes.
		if n, err := io.ReadAll(m.Body(f)); len(body) < wholeMax && (err == nil || len(n) > 0) {
			t.Errorf("read after Close: %d bytes, %v; want an error", len(n), err)
		}
		f2, m2, err := q.OpenMessage(id)
		if err != nil {
			t.Fatal(err)
		}
		f2.Close()
		if m.BodyOffset != m2.BodyOffset || m.Size != m2.Size || m.CRC != m2.CRC || m.Env.Sender != m2.Env.Sender {
			t.Errorf("OpenWhole's header %+v differs from OpenMessage's %+v", m, m2)
		}
	}
	id := putBody(t, q, Incoming, small)
	f, m, err := q.OpenMessage(id)
	if err != nil {
		t.Fatal(err)
	}
	seg, off := f.seg.f, f.off
	f.Close()
	if _, err := seg.WriteAt([]byte("X"), off+m.BodyOffset+100); err != nil {
		t.Fatal(err)
	}
	f, m, err = q.OpenWhole(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, m.Body(f)); !errors.Is(err, ErrChecksum) {
		t.Errorf("damaged body read through OpenWhole: %v, want ErrChecksum", err)
	}
}

// BenchmarkOpenRead is what a delivery reads of a 2 KB message: its
// header, then its body to the end (checksum verified), opened by
// OpenMessage (header and body read from the segment each) or by
// OpenWhole (one read).
func BenchmarkOpenRead(b *testing.B) {
	body := "Subject: bench\n\n" + strings.Repeat(strings.Repeat("b", 71)+"\n", 28)
	for _, mode := range []string{"message", "whole"} {
		b.Run(mode, func(b *testing.B) {
			q := newTestQueue(b)
			id := putBody(b, q, Incoming, body)
			open := q.OpenMessage
			if mode == "whole" {
				open = q.OpenWhole
			}
			buf := make([]byte, 16<<10)
			b.ReportAllocs()
			for b.Loop() {
				f, m, err := open(id)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.ReadFull(m.Body(f), buf)
				if err != io.ErrUnexpectedEOF || !bytes.Equal(buf[:n], []byte(body)) {
					b.Fatal(n, err)
				}
				f.Close()
			}
		})
	}
}
