package relay

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The recorded real callers (test/callers, copied from the shared corpus):
// their messages go on the wire unchanged but for CRLF line ends (PHP's
// mixed CRLF/LF included) to an 8BITMIME upstream, and either 7-bit or
// refused with ErrStuck8bit to one without.
func TestWireRealCallers(t *testing.T) {
	files, _ := filepath.Glob("../../test/callers/*.eml")
	if len(files) == 0 {
		t.Skip("no caller corpus in ../../test/callers")
	}
	crlf := regexp.MustCompile(`\r?\n`)
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := wire(t, in, WireMode{EightBit: true})
			if err != nil {
				t.Fatal(err)
			}
			checkWireSafe(t, in, out)
			want := crlf.ReplaceAll(in, []byte("\r\n"))
			if len(want) > 0 && !bytes.HasSuffix(want, []byte("\r\n")) {
				want = append(want, "\r\n"...)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("changed:\n%q\n->\n%q", in, out)
			}
			out, err = wire(t, in, WireMode{EightBit: false})
			if err == ErrStuck8bit {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkWireSafe(t, in, out)
			for _, c := range out {
				if c >= 0x80 {
					t.Fatalf("8-bit byte for a 7-bit upstream: %q", out)
				}
			}
		})
	}
}
