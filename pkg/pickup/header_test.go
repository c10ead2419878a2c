package pickup

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
)

func roundTrip(t *testing.T, in string) (string, *header) {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(in), readBuffer)
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
	if f, n := h.Lookup("subject"); n != 1 || f.Value() != "a folded" {
		t.Errorf("value %q", f.Value())
	}
	// A long unfolded field (a To: of thousands of addresses) is read:
	// sendmail accepts it, so pickup must.
	long := "To: " + strings.Repeat("user@example.org, ", 5000) + "last@example.org\n"
	if got, _ := roundTrip(t, long+"\nb\n"); got != long+"\nb\n" {
		t.Errorf("long field not kept (%d bytes)", len(got))
	}
	// The obsolete "Name : value" syntax is a header field, as in sendmail.
	if got, h := roundTrip(t, "Subject: t\nX-A : 1\nFrom: ceo@example.org\n\nbody\n"); got != "Subject: t\nX-A : 1\nFrom: ceo@example.org\n\nbody\n" || len(h.Fields) != 3 {
		t.Errorf("obsolete syntax: %q", got)
	} else if f, _ := h.Lookup("x-a"); f == nil || f.Value() != "1" {
		t.Errorf("X-A value: %+v", f)
	}
	// A header field over the shared limit is refused, not truncated.
	br := bufio.NewReaderSize(strings.NewReader("X-Long: "+strings.Repeat("z", message.MaxField)+"\n\n"), readBuffer)
	if _, err := readHeader(br); err != ErrHeaderTooLarge {
		t.Errorf("long field: %v", err)
	}
}

// TestSameHeaderAsSendmail: whatever header section sendmail's scanner
// (package message) accepts and stores, pickup reads to the same fields,
// with the body intact. Inputs: the message package's fuzz corpus, the
// callers' messages, and edge cases.
func TestSameHeaderAsSendmail(t *testing.T) {
	inputs := []string{
		"Subject: t\nX-A : 1\nFrom: ceo@example.org\n\nbody\n",
		"X\t: tab before colon\n\nb\n",
		"To: " + strings.Repeat("u@example.org, ", 40000) + "x@example.org\n\nb\n",
		"Subject: a\n" + strings.Repeat(" folded continuation line\n", 100000) + "\nb\n",
		"From nobody Mon Nov 23 10:00:00 2026\nSubject: mbox\n\nb\n",
		"Only: header",
		"not a header\nb\n",
		": empty name\n\nb\n",
	}
	for _, dir := range []string{"../message/testdata/fuzz/FuzzHeader", "../../test/callers"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			if s, ok := strings.CutPrefix(string(b), "go test fuzz v1\n"); ok {
				// One []byte("...") or string("...") value a line.
				for _, l := range strings.Split(s, "\n") {
					if i := strings.IndexByte(l, '"'); i >= 0 && strings.HasSuffix(l, ")") {
						if v, err := strconv.Unquote(l[i : len(l)-1]); err == nil {
							inputs = append(inputs, v)
						}
					}
				}
				continue
			}
			inputs = append(inputs, string(b))
		}
	}
	accepted := 0
	for _, in := range inputs {
		mh, err := message.ReadHeader(bufio.NewReader(strings.NewReader(in)), 0)
		if err != nil {
			continue // sendmail refuses it (exit 65): never in the spool
		}
		accepted++
		var stored bytes.Buffer
		stored.Write(mh.Bytes(true))
		stored.WriteString("BODY\n")
		br := bufio.NewReaderSize(bytes.NewReader(stored.Bytes()), readBuffer)
		h, err := readHeader(br)
		if err != nil {
			t.Errorf("%.60q: sendmail accepts it, pickup refuses it: %v", in, err)
			continue
		}
		if len(h.Fields) != len(mh.Fields) {
			t.Errorf("%.60q: pickup sees %d fields, sendmail %d", in, len(h.Fields), len(mh.Fields))
			continue
		}
		for i := range h.Fields {
			if h.Fields[i].Name != mh.Fields[i].Name || h.Fields[i].Value() != mh.Fields[i].Value() {
				t.Errorf("%.60q: field %d: %q vs %q", in, i, h.Fields[i].Name, mh.Fields[i].Name)
			}
		}
		rest, _ := io.ReadAll(br)
		if got := string(h.BodyStart) + string(rest); !strings.HasSuffix(got, "BODY\n") {
			t.Errorf("%.60q: body %q", in, got)
		}
	}
	if accepted < 20 {
		t.Errorf("only %d inputs accepted by sendmail's scanner: corpus not found?", accepted)
	}
}

// FuzzReadHeader: any input parses without panicking, and whatever is not
// part of the header section reaches the output unchanged.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{"Subject: a\n\nbody\n", "a\n", "X: y\r\n z\r\n\r\n.", ": x\n\n", " cont\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), readBuffer)
		h, err := readHeader(br)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		var b bytes.Buffer
		h.write(&b, []message.Field{message.NewField("Received", "x")})
		b.Write(rest)
		out := b.String()
		if !strings.HasPrefix(out, "Received: x\n") || !strings.HasSuffix(out, string(h.BodyStart)+string(rest)) {
			t.Fatalf("in %q out %q", in, out)
		}
		if !strings.Contains(out, "\n\n") && !strings.Contains(out, "\n\r\n") {
			t.Fatalf("no header/body separator in %q", out)
		}
	})
}
