package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime/quotedprintable"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-message"
)

// wire runs the transformer over in, both ways its output is taken: by
// Read (small reads) and by WriteTo (what Session.Send's io.Copy uses);
// the two must give the same bytes.
func wire(t testing.TB, in []byte, mode WireMode) ([]byte, error) {
	t.Helper()
	body := func() (io.Reader, error) { return bytes.NewReader(in), nil }
	r, err := newWireReader(body, mode)
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(struct{ io.Reader }{r})
	r.Close()
	if err != nil {
		return out, err
	}
	r, err = newWireReader(body, mode)
	if err != nil {
		t.Fatalf("second conversion: %v", err)
	}
	defer r.Close()
	var buf bytes.Buffer
	n, err := r.(io.WriterTo).WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) || !bytes.Equal(buf.Bytes(), out) {
		t.Fatalf("WriteTo gave %d bytes (%v), %q; Read gave %q", n, err, buf.Bytes(), out)
	}
	return out, nil
}

// checkWireSafe fails unless out has only CRLF line ends, no line over 998
// octets, no NUL and no bare CR.
func checkWireSafe(t testing.TB, in, out []byte) {
	t.Helper()
	col := 0
	for i := 0; i < len(out); i++ {
		switch c := out[i]; c {
		case 0:
			t.Fatalf("NUL at %d in output of %q", i, in)
		case '\r':
			if i+1 >= len(out) || out[i+1] != '\n' {
				t.Fatalf("bare CR at %d in output of %q", i, in)
			}
			i++
			col = 0
		case '\n':
			t.Fatalf("bare LF at %d in output of %q", i, in)
		default:
			col++
			if col > maxLine {
				t.Fatalf("line longer than %d at %d in output of %q", maxLine, i, in)
			}
		}
	}
}

func TestWireSimple(t *testing.T) {
	in := "From: a@example.org\nSubject: hi\n\nline 1\n.\n..x\nlast"
	out, err := wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	want := "From: a@example.org\r\nSubject: hi\r\n\r\nline 1\r\n.\r\n..x\r\nlast\r\n"
	if string(out) != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
}

func TestWireCRLFStoredStaysOneLineEnd(t *testing.T) {
	out, err := wire(t, []byte("Subject: x\r\n\r\nbody\r\nmore\n"), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "Subject: x\r\n\r\nbody\r\nmore\r\n" {
		t.Fatalf("got %q", out)
	}
}

// decodeText parses msg with go-message and returns the decoded text of
// every leaf part, in order.
func decodeText(t *testing.T, msg []byte) []string {
	t.Helper()
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, msg)
	}
	var out []string
	var walk func(e *message.Entity)
	walk = func(e *message.Entity) {
		if mr := e.MultipartReader(); mr != nil {
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				walk(p)
			}
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	walk(e)
	return out
}

func TestWireLongLineReencodedAndDecodesBack(t *testing.T) {
	long := strings.Repeat("abcdefghij ", 300) + "end" // 3303 octets
	in := "From: a@example.org\nSubject: long\n\nshort line\n" + long + "\ntrailing space \n"
	out, err := wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, []byte(in), out)
	if !bytes.Contains(out, []byte("Content-Transfer-Encoding: quoted-printable\r\n")) || !bytes.Contains(out, []byte("MIME-Version: 1.0\r\n")) {
		t.Fatalf("headers not rewritten:\n%s", out)
	}
	got := decodeText(t, out)
	want := "short line\r\n" + long + "\r\ntrailing space \r\n"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("decoded %q\nwant %q", got, want)
	}
}

func TestWireMultipartOnlyOffendingPartReencoded(t *testing.T) {
	long := strings.Repeat("x", 2000)
	in := "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BB\"\n\npreamble\n--BB\nContent-Type: text/plain\n\nfine part\n--BB\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nh\xc3\xa9 \x00 nul and bare\rCR\n" + long + "\n--BB\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n" + strings.Repeat("QUJD", 400) + "\n--BB--\nepilogue\n"
	out, err := wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, []byte(in), out)
	if n := bytes.Count(out, []byte("Content-Transfer-Encoding: quoted-printable")); n != 1 {
		t.Fatalf("%d parts re-encoded, want 1:\n%s", n, out)
	}
	if bytes.Contains(out, []byte("Content-Transfer-Encoding: 8bit")) {
		t.Fatal("old CTE kept")
	}
	got := decodeText(t, out)
	want := []string{"fine part", "h\xc3\xa9 \x00 nul and bare\rCR\r\n" + long, strings.Repeat("ABC", 400)}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("decoded %q\nwant %q", got, want)
	}
}

func TestWire8bitTo7bit(t *testing.T) {
	in := "From: a@example.org\nSubject: caf\xc3\xa9?\n\nbody\n"
	if _, err := wire(t, []byte(in), WireMode{EightBit: false}); err != ErrStuck8bit {
		t.Fatalf("8-bit header to a 7-bit upstream: %v", err)
	}
	in = "From: a@example.org\nSubject: cafe\nContent-Type: text/plain; charset=utf-8\n\nd\xc3\xa9j\xc3\xa0 vu = ok\n"
	out, err := wire(t, []byte(in), WireMode{EightBit: false})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range out {
		if c >= 0x80 {
			t.Fatalf("8-bit byte on a 7-bit wire: %q", out)
		}
	}
	got := decodeText(t, out)
	if len(got) != 1 || got[0] != "d\xc3\xa9j\xc3\xa0 vu = ok\r\n" {
		t.Fatalf("decoded %q", got)
	}
	// The same message to an 8BITMIME upstream goes as it is.
	out, err = wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("d\xc3\xa9j\xc3\xa0 vu = ok\r\n")) {
		t.Fatalf("8-bit body changed: %q", out)
	}
}

func TestWireQPPartRepaired(t *testing.T) {
	qp := strings.Repeat("a=3Db", 400) // 2000 octets of already-encoded text
	in := "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n" + qp + "\nraw\xe9 and bare\rCR\n"
	out, err := wire(t, []byte(in), WireMode{EightBit: false})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, []byte(in), out)
	dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(out[bytes.Index(out, []byte("\r\n\r\n"))+4:])))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("a=b", 400) + "\r\nraw\xe9 and bare\rCR\r\n"; string(dec) != want {
		t.Fatalf("decoded %q\nwant %q", dec, want)
	}
}

func TestWireLongHeaderFolded(t *testing.T) {
	in := "Subject: " + strings.Repeat("word ", 500) + "\nX-Long: " + strings.Repeat("y", 3000) + "\n\nbody\n"
	out, err := wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, []byte(in), out)
	e, err := message.Read(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Header.Get("Subject"); strings.Join(strings.Fields(got), " ") != strings.TrimSpace(strings.Repeat("word ", 500)) {
		t.Fatalf("Subject changed: %q", got)
	}
}

func TestWireSmugglingNeverFormsEndOfData(t *testing.T) {
	for _, in := range []string{
		"Subject: x\n\nbody\n.\rMAIL FROM:<evil>\r\n",
		"Subject: x\n\nbody\r.\r\nRCPT TO:<evil>\n",
		"Subject: x\n\nbody\n\r.\r\n",
		"Subject: x\n\nbody\x00\n.\x00\n",
	} {
		out, err := wire(t, []byte(in), WireMode{EightBit: true})
		if err != nil {
			t.Fatal(err)
		}
		checkWireSafe(t, []byte(in), out)
	}
}

func TestWireHeaderOnlyAndEmpty(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"Subject: x":         "Subject: x\r\n",
		"Subject: x\n":       "Subject: x\r\n",
		"no header at all\n": "no header at all\r\n",
		"\n\nbody":           "\r\n\r\nbody\r\n",
	} {
		out, err := wire(t, []byte(in), WireMode{EightBit: true})
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != want {
			t.Errorf("%q: got %q, want %q", in, out, want)
		}
	}
}

func TestWireStreamsLargeMessage(t *testing.T) {
	// 2 MB in one line: goes through in bounded buffers (the test would
	// still pass if it did not, but checks correctness at size).
	big := bytes.Repeat([]byte("z"), 2<<20)
	in := append([]byte("Subject: big\n\n"), big...)
	out, err := wire(t, in, WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, in[:100], out)
	got := decodeText(t, out)
	if len(got) != 1 || got[0] != string(big)+"\r\n" {
		t.Fatalf("big line did not survive (len %d)", len(got[0]))
	}
}

// transparent reports input the transformer must not change: no CR, no
// NUL, lines of at most 900 octets.
func transparent(in []byte) bool {
	if bytes.IndexByte(in, '\r') >= 0 || bytes.IndexByte(in, 0) >= 0 {
		return false
	}
	for _, l := range bytes.Split(in, []byte("\n")) {
		if len(l) > 900 {
			return false
		}
	}
	return true
}

func FuzzWireSafe(f *testing.F) {
	f.Add([]byte("Subject: x\n\nbody\n.\n"), true)
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: base64\n\nQUJD\n--b\n\n\xff\x00\r\n--b--\n"), false)
	f.Add([]byte("Content-Type: message/rfc822\n\nSubject: inner\nContent-Transfer-Encoding: quoted-printable\n\n=3D=\n"), true)
	f.Add([]byte(strings.Repeat("h: v\r", 300)+"\n\n"+strings.Repeat("x\r", 1200)), false)
	f.Fuzz(func(t *testing.T, in []byte, eightBit bool) {
		out, err := wire(t, in, WireMode{EightBit: eightBit})
		if err == ErrStuck8bit && !eightBit {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		checkWireSafe(t, in, out)
		// What is already safe passes unchanged, but for CRLF line ends.
		if eightBit && transparent(in) {
			want := bytes.ReplaceAll(in, []byte("\n"), []byte("\r\n"))
			if len(in) > 0 && in[len(in)-1] != '\n' {
				want = append(want, "\r\n"...)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("safe input changed:\n%q\n->\n%q", in, out)
			}
		}
		if !eightBit {
			for _, c := range out {
				if c >= 0x80 {
					t.Fatalf("8-bit byte on a 7-bit wire: %q -> %q", in, out)
				}
			}
		}
	})
}

// A CR at the very end of a read fragment: CRLF is one line end, CR before
// anything else is a bare CR (kept, re-encoded).
func TestWireCRAtFragmentEdge(t *testing.T) {
	a := strings.Repeat("a", readBuf-1)
	for _, tc := range []struct{ in, want string }{
		{"Subject: x\n\n" + a + "\r\nnext\n", a + "\r\nnext\r\n"},
		{"Subject: x\n\n" + a + "\rb\nnext\n", a + "\rb\r\nnext\r\n"},
		{"Subject: x\n\n" + a + "\r", a + "\r\r\n"},
	} {
		out, err := wire(t, []byte(tc.in), WireMode{EightBit: true})
		if err != nil {
			t.Fatal(err)
		}
		checkWireSafe(t, nil, out)
		if got := decodeText(t, out); len(got) != 1 || got[0] != tc.want {
			t.Errorf("decoded %q\nwant %q", got, tc.want)
		}
	}
}

// genReader produces a large multipart message on the fly, without
// allocating: a part with long 8-bit lines and NULs (re-encoded) and a
// base64 part, n times.
type genReader struct {
	n, i int
	buf  []byte
}

var (
	genHead = []byte("From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n")
	genPart = []byte("--XX\nContent-Type: text/plain; charset=utf-8\n\n" + strings.Repeat("caf\xc3\xa9 \x00 ", 2000) + "\n--XX\nContent-Transfer-Encoding: base64\n\n" + strings.Repeat("QUJD", 3000) + "\n")
	genTail = []byte("--XX--\n")
)

func (g *genReader) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		switch {
		case g.i == 0:
			g.buf = genHead
		case g.i <= g.n:
			g.buf = genPart
		case g.i == g.n+1:
			g.buf = genTail
		default:
			return 0, io.EOF
		}
		g.i++
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func TestWireMemoryIsBounded(t *testing.T) {
	const parts = 2000 // ~64 MB of message
	body := func() (io.Reader, error) { return &genReader{n: parts}, nil }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := newWireReader(body, WireMode{EightBit: false})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n < 60<<20 {
		t.Fatalf("only %d bytes out", n)
	}
	// The transformer allocates its fixed buffers and a little per entity
	// header (two per part, two passes), whatever the size of the bodies:
	// far less than one copy of the message.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d bytes through, %d bytes allocated", n, alloc)
	if alloc > 1<<20+uint64(parts)*4<<10 || alloc > uint64(n)/8 {
		t.Fatalf("allocated %d bytes for a %d-byte message", alloc, n)
	}
}

func TestWireSalvagedBoundary(t *testing.T) {
	long := strings.Repeat("y", 1500)
	// Duplicate parameters make mime.ParseMediaType fail; the boundary is
	// still found, and only the long part is re-encoded.
	in := "Content-Type: multipart/mixed; charset=a; charset=b; boundary=\"=_b 1\"\n\n--=_b 1\nContent-Type: text/plain\n\n" + long + "\n--=_b 1--\n"
	out, err := wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, []byte(in), out)
	if !bytes.Contains(out, []byte("\r\n--=_b 1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")) {
		t.Fatalf("part not re-encoded on its own:\n%s", out)
	}
	// A multipart without a boundary is never re-encoded as a whole.
	in = "Content-Type: multipart/mixed\n\n" + long + "\n"
	out, err = wire(t, []byte(in), WireMode{EightBit: true})
	if err != nil {
		t.Fatal(err)
	}
	checkWireSafe(t, []byte(in), out)
	if bytes.Contains(out, []byte("quoted-printable")) {
		t.Fatalf("multipart re-encoded:\n%s", out)
	}
}

// newWireReader returns a reader of the message that body returns, as it
// may go on the wire, as Session.Send makes it (scanBody before DATA,
// openWire after). body must return a fresh reader of the same bytes
// each time: the message is read twice (a scan, then the rewrite). The
// returned reader closes the underlying one (if it is an io.Closer) when
// closed. It refuses (ErrStuck8bit) a message with 8-bit bytes that cannot
// be converted when mode.EightBit is false.
func newWireReader(body func() (io.Reader, error), mode WireMode) (io.ReadCloser, error) {
	p, src, err := scanBody(body)
	if err != nil {
		return nil, err
	}
	if !mode.EightBit && p.stuck8bit {
		src.release()
		return nil, ErrStuck8bit
	}
	r, err := openWire(src, p, mode)
	if err != nil {
		src.release()
		return nil, err
	}
	return releasing{r, src}, nil
}

// releasing closes the wire reader, then releases its source.
type releasing struct {
	io.ReadCloser
	src *source
}

func (r releasing) Close() error {
	err := r.ReadCloser.Close()
	r.src.release()
	return err
}

func (r releasing) WriteTo(w io.Writer) (int64, error) { return r.ReadCloser.(io.WriterTo).WriteTo(w) }

// TestWireHeldBoundary converts plain messages around the size up to
// which the message is read once and held (heldMax): each must come out
// whole, with CRLF line ends, whichever way it was read.
func TestWireHeldBoundary(t *testing.T) {
	for _, n := range []int{heldMax - 1, heldMax, heldMax + 1, 3*heldMax + 7} {
		head := "Subject: s\n\n"
		var b strings.Builder
		b.WriteString(head)
		for b.Len() < n {
			b.WriteString(strings.Repeat("0123456789", 7)[:min(70, n-b.Len()-1)] + "\n")
		}
		in := b.String()[:n]
		out, err := wire(t, []byte(in), WireMode{})
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		want := strings.ReplaceAll(in, "\n", "\r\n")
		if !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if string(out) != want {
			t.Fatalf("%d bytes: got %d bytes, want %d", n, len(out), len(want))
		}
	}
}

// errAtEnd returns its bytes, then err instead of io.EOF (as the spool's
// reader does on a checksum mismatch).
type errAtEnd struct {
	r   *bytes.Reader
	err error
}

func (e *errAtEnd) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

// TestWireSourceError: a read error at the end of a small (held) or big
// (streamed) message fails the scan, so a corrupted message is never
// sent.
func TestWireSourceError(t *testing.T) {
	bad := errors.New("checksum mismatch")
	for _, n := range []int{100, 3 * heldMax} {
		in := bytes.Repeat([]byte("x\n"), n/2)
		body := func() (io.Reader, error) { return &errAtEnd{bytes.NewReader(in), bad}, nil }
		if _, _, err := scanBody(body); !errors.Is(err, bad) {
			t.Fatalf("%d bytes: scan error %v, want %v", n, err, bad)
		}
	}
}

// TestRenderMatchesStream: a message made ready for the wire in memory
// (render) is, byte for byte, what writeData streams after the 354 from
// the same message read again from its store.
func TestRenderMatchesStream(t *testing.T) {
	bodies := []string{
		"",
		"Subject: s\n\nno final line end",
		"Subject: s\n\n.\n..\n.x\nend\n",
		"Subject: s\r\n\r\nbare\rCR and bare\nLF\r\n.\r",
		"Subject: caf\xc3\xa9\n\n8-bit caf\xc3\xa9 body\n.dot\n",
		"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\xe2\x82\xac \n.\n",
		"Subject: s\n\n" + strings.Repeat(".0123456789\n", heldMax/12),
	}
	for _, n := range []int{heldMax - 1, heldMax} {
		bodies = append(bodies, ("Subject: s\n\n" + strings.Repeat(".23456789\n", n/10+1))[:n])
	}
	for i, in := range bodies {
		body := func() (io.Reader, error) { return strings.NewReader(in), nil }
		for _, mode := range []WireMode{{EightBit: true}, {}} {
			p, src, err := scanBody(body)
			if err != nil {
				t.Fatalf("body %d: %v", i, err)
			}
			var want bytes.Buffer
			bw := bufio.NewWriterSize(&want, writeBuf)
			wr, err := openWire(&source{open: body}, p, mode)
			if err == nil {
				err = writeData(bw, wr)
			}
			if err != nil {
				t.Fatalf("body %d: stream: %v", i, err)
			}
			r := render(src, p, mode)
			if src.held == nil {
				if r != nil {
					t.Fatalf("body %d (%d bytes): rendered though not held", i, len(in))
				}
				continue
			}
			if r == nil {
				t.Fatalf("body %d (%d bytes): held but not rendered", i, len(in))
			}
			if got := r.b.String(); got != want.String() {
				t.Fatalf("body %d, %+v: rendered %q\nstreamed %q", i, mode, got, want.String())
			}
			r.release()
			src.release()
		}
	}
}

// Header lines are gathered in one buffer per walker, reused from header
// to header and from message to message: a line longer than the read
// buffer (taken in several fragments), a folded Content-Type whose name
// is in mixed case, and CR and NUL in a header all come out as they
// should, the same on a second run with the buffers reused.
func TestWireHeaderBuffers(t *testing.T) {
	long := strings.Repeat("z", readBuf+5000)
	in := "X-Huge: " + long + "\nsubject: a\rb\x00c\nCoNtEnT-TyPe: multipart/mixed;\n\tboundary=\"BB\"\n\n" +
		"--BB\ncontent-transfer-encoding: 8bit\nContent-Type: text/plain\n\n" + strings.Repeat("l", 1200) + "\n--BB--\n"
	for run := 0; run < 2; run++ {
		out, err := wire(t, []byte(in), WireMode{EightBit: true})
		if err != nil {
			t.Fatal(err)
		}
		checkWireSafe(t, []byte(in), out)
		s := string(out)
		if !strings.Contains(s, "subject: a b c\r\n") {
			t.Errorf("CR and NUL in a header not blanked: %q", s[:200])
		}
		if strings.ReplaceAll(strings.ReplaceAll(s, "\r\n ", ""), "\r\n\t", "") == s || !strings.Contains(strings.ReplaceAll(s, "\r\n", ""), long[:900]) {
			t.Errorf("long header not folded or not whole")
		}
		// The part's long line makes it quoted-printable: the boundary
		// was found through the folded, mixed-case Content-Type.
		if !strings.Contains(s, "Content-Transfer-Encoding: quoted-printable\r\n") || strings.Contains(s, "content-transfer-encoding: 8bit") {
			t.Errorf("the part with a long line was not re-encoded:\n%s", s[len(s)-1500:])
		}
		e, err := message.Read(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(strings.Fields(e.Header.Get("X-Huge")), ""); got != long {
			t.Errorf("X-Huge changed: %d bytes, want %d", len(got), len(long))
		}
	}
}

// FuzzRenderPlain: a message scanBody finds plain (plan.clean, rendered
// without the walker) goes on the wire exactly as the walker makes it,
// with its full scan's plan, and with the same size and 8-bit verdict;
// a message it does not find plain is scanned as before.
func FuzzRenderPlain(f *testing.F) {
	f.Add([]byte("Subject: s\n\n.\n..\n.x\nend\n"))
	f.Add([]byte("Subject: s\n\nno final line end"))
	f.Add([]byte(""))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: quoted-printable\n\n" + strings.Repeat("a", 880) + "=3D=\n--b--\n"))
	f.Add([]byte("Subject: s\n\n" + strings.Repeat("x", cleanLine) + "\n" + strings.Repeat("y", cleanLine+1) + "\n"))
	f.Add([]byte("Subject: caf\xc3\xa9\n\nx\n"))
	f.Add([]byte("Subject: s\n\n" + strings.Repeat("z\n", heldMax))) // cut to heldMax-1 bytes: the largest held
	f.Fuzz(func(t *testing.T, in []byte) {
		// A message of heldMax bytes or more is not held (scanBody
		// streams it): the largest held one has heldMax-1.
		if len(in) >= heldMax {
			in = in[:heldMax-1]
		}
		body := func() (io.Reader, error) { return bytes.NewReader(in), nil }
		p, src, err := scanBody(body)
		if err != nil {
			t.Fatal(err)
		}
		defer src.release()
		full, err := scanMessage(bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if p.clean != plain(in) {
			t.Fatalf("clean %v, plain %v", p.clean, plain(in))
		}
		if p.wireSize() != full.wireSize() || p.stuck8bit != full.stuck8bit {
			t.Fatalf("plan %+v, full scan %+v", p, full)
		}
		for _, mode := range []WireMode{{EightBit: true}, {}} {
			var want bytes.Buffer
			bw := bufio.NewWriterSize(&want, writeBuf)
			wr, err := openWire(&source{open: body}, full, mode)
			if err == nil {
				err = writeData(bw, wr)
			}
			if err != nil {
				t.Fatal(err)
			}
			r := render(src, p, mode)
			if r == nil {
				t.Fatal("held message not rendered")
			}
			if got := r.b.String(); got != want.String() {
				t.Fatalf("%+v, clean %v: rendered %q\nwalked %q", mode, p.clean, got, want.String())
			}
			r.release()
		}
	})
}
