package spool

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// encode returns a whole message file for m and body, as Drop writes it.
func encode(m *Meta, body string) []byte {
	mm := *m
	mm.Size, mm.CRC = int64(len(body)), checksum([]byte(body))
	hdr, _ := EncodeHeader(&mm)
	return append(hdr, body...)
}

func goldenMeta() (*Meta, string) {
	t := time.Date(2026, 11, 23, 14, 40, 0, 123456789, time.UTC)
	m := &Meta{Version: Version, ID: "0006270A1B2C3D4E5F60", Time: t,
		Env: Envelope{Sender: "webapp@example.org", FullName: "Web App", Recipients: []string{"a@example.org", "root", `"x y"@example.org`},
			Notify: "SUCCESS,FAILURE", Ret: "HDRS", EnvID: "abc", BodyType: "8BITMIME", SMTPUTF8: true},
		Origin: Origin{UID: 1001, GID: 1001, User: "smtest", Via: "maildrop", Mode: "t",
			Script: "/home/smtest/site/contact%.php\nX", ScriptSource: "SCRIPT_FILENAME",
			PHPHeader: "1002:x.php", PHPUIDMismatch: true, ParentPID: 4242, ParentExe: "/usr/lib/cgi-bin/php8.2",
			ParentCmdline: "php -f 'a b.php'", ParentCwd: "/home/smtest/site", Cgroup: "php8.2-fpm.service",
			Caller: "php", Ignored: []string{"-Zq", "-oL9"}},
		Extra: [][2]string{{"x-future", "kept %\x00"}},
	}
	return m, "To: a@example.org\nSubject: golden\n\nbody \xff\x00\r bare CR\n"
}

// TestGolden pins version 1 of the format byte for byte: a change here is a
// change of the contract between sendmail and relayd.
func TestGolden(t *testing.T) {
	m, body := goldenMeta()
	got := encode(m, body)
	path := filepath.Join("testdata", "v1.msg")
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding changed:\n%s\nwant:\n%s", got, want)
	}
	d, err := Decode(bytes.NewReader(want), int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	m.Size, m.CRC, m.BodyOffset = int64(len(body)), checksum([]byte(body)), d.BodyOffset
	if !reflect.DeepEqual(d, m) {
		t.Errorf("decoded\n%+v\nwant\n%+v", d, m)
	}
	b, err := io.ReadAll(d.Body(bytes.NewReader(want)))
	if err != nil || string(b) != body {
		t.Errorf("body %q %v", b, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	m, body := goldenMeta()
	good := encode(m, body)
	hdrLen := bytes.Index(good, []byte("\n\n")) + 2
	replace := func(old, new string) []byte {
		return bytes.Replace(append([]byte(nil), good...), []byte(old), []byte(new), 1)
	}
	tests := []struct {
		name string
		file []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"version 2", replace("MAILSHIM-SPOOL 1", "MAILSHIM-SPOOL 2"), ErrVersion},
		{"not spool", []byte("From: x\n\n"), ErrCorrupt},
		{"header cut", good[:hdrLen-1], ErrTruncated},
		{"body cut", good[:len(good)-1], ErrTruncated},
		{"body longer", append(append([]byte(nil), good...), 'x'), ErrSize},
		{"no id", replace("id 0006270A1B2C3D4E5F60\n", ""), ErrCorrupt},
		{"bad id", replace("id 0006270A1B2C3D4E5F60", "id ../../etc/passwd"), ErrCorrupt},
		{"bad uid", replace("uid 1001", "uid -1"), ErrCorrupt},
		{"raw control", replace("user smtest", "user sm\rtest"), ErrCorrupt},
		{"bad escape", replace("user smtest", "user sm%zz"), ErrCorrupt},
		{"field after crc", replace("\n\nTo:", "\nx 1\n\nTo:"), ErrCorrupt},
		{"short size", replace("size 000000000000000", "size 0"), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tt.file), int64(len(tt.file)))
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	// A flipped body byte decodes, and Body reports the checksum.
	bad := append([]byte(nil), good...)
	bad[len(bad)-2] ^= 1
	d, err := Decode(bytes.NewReader(bad), int64(len(bad)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(d.Body(bytes.NewReader(bad))); !errors.Is(err, ErrChecksum) {
		t.Fatalf("body read: %v", err)
	}
}

func TestEscape(t *testing.T) {
	for _, s := range []string{"", "plain", "a%b", "\r\n\x00\x7f\xff", strings.Repeat("%", 10)} {
		e := Escape(s)
		if strings.ContainsAny(e, "\r\n\x00") {
			t.Errorf("Escape(%q) = %q", s, e)
		}
		u, err := Unescape(e)
		if err != nil || u != s {
			t.Errorf("Unescape(Escape(%q)) = %q, %v", s, u, err)
		}
	}
}

// FuzzDecode checks that Decode never panics or over-reads, that what it
// accepts re-encodes to the same file (the format is canonical), and that
// Body never returns more than Size bytes.
func FuzzDecode(f *testing.F) {
	m, body := goldenMeta()
	f.Add(encode(m, body))
	f.Add(encode(&Meta{ID: "0006270A1B2C3D4E5F60", Time: time.Unix(0, 0).UTC()}, ""))
	f.Add([]byte("MAILSHIM-SPOOL 1\n\n"))
	f.Add([]byte("MAILSHIM-SPOOL 9\nid x\n\n"))
	f.Fuzz(func(t *testing.T, file []byte) {
		// The stream decoder (the submission socket's) never panics and
		// agrees with Decode on every file Decode accepts.
		s, serr := DecodeHeader(bufio.NewReaderSize(bytes.NewReader(file), 16), len(file))
		d, err := Decode(bytes.NewReader(file), int64(len(file)))
		// The decoder of a file held in memory (OpenWhole's) agrees
		// with Decode on every file, its errors included.
		if w, werr := decodeBytes(file); fmt.Sprint(werr) != fmt.Sprint(err) || !reflect.DeepEqual(w, d) {
			t.Fatalf("decodeBytes and Decode differ:\n%+v, %v\n%+v, %v", w, werr, d, err)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if serr != nil {
			t.Fatalf("DecodeHeader refuses what Decode accepts: %v", serr)
		}
		s.BodyOffset = d.BodyOffset
		if !reflect.DeepEqual(s, d) {
			t.Fatalf("DecodeHeader and Decode differ:\n%+v\n%+v", s, d)
		}
		if d.BodyOffset+d.Size != int64(len(file)) {
			t.Fatalf("offset %d + size %d != %d", d.BodyOffset, d.Size, len(file))
		}
		b, _ := io.ReadAll(d.Body(bytes.NewReader(file)))
		if int64(len(b)) != d.Size {
			t.Fatalf("body %d bytes, size %d", len(b), d.Size)
		}
		hdr, _ := EncodeHeader(d)
		d2, err := Decode(bytes.NewReader(append(hdr, b...)), int64(len(hdr)+len(b)))
		if err != nil {
			t.Fatalf("re-encoded file refused: %v", err)
		}
		d2.BodyOffset = d.BodyOffset
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("re-encoding changed the header:\n%+v\n%+v", d, d2)
		}
	})
}

// DecodeHeader reads the same fields as Decode from a stream, stops at the
// empty line, and refuses a header over its bound or cut short.
func TestDecodeHeader(t *testing.T) {
	m, body := goldenMeta()
	file := encode(m, body)
	want, err := Decode(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(bytes.NewReader(file), 16)
	got, err := DecodeHeader(br, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got.BodyOffset = want.BodyOffset
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if rest, _ := io.ReadAll(br); string(rest) != body {
		t.Errorf("left %q", rest)
	}
	if _, err := DecodeHeader(bufio.NewReader(bytes.NewReader(file)), int(want.BodyOffset)-1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("over the bound: %v", err)
	}
	if _, err := DecodeHeader(bufio.NewReader(bytes.NewReader(file[:want.BodyOffset-1])), 1<<20); !errors.Is(err, ErrTruncated) {
		t.Errorf("cut short: %v", err)
	}
}

// PatchSize writes what fmt's "size %0*d\ncrc32c %0*x\n" would.
func TestPatchSizeFormat(t *testing.T) {
	for _, c := range []struct {
		size int64
		crc  uint32
	}{{0, 0}, {1, 1}, {2048, 0xdeadbeef}, {1 << 40, 0xffffffff}, {math.MaxInt64, 0x0000abcd}, {-5, 7}} {
		want := fmt.Sprintf("size %0*d\ncrc32c %0*x\n", sizeWidth, c.size, crcWidth, c.crc)
		if got := string(PatchSize(c.size, c.crc)); got != want {
			t.Errorf("PatchSize(%d, %x) = %q, want %q", c.size, c.crc, got, want)
		}
	}
	for _, err := range []error{ErrVersion, ErrTruncated, ErrSize, ErrChecksum} {
		if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "spool: corrupt message file: ") {
			t.Errorf("%v does not wrap ErrCorrupt", err)
		}
	}
}

// TestDecodeLargeIDs: UIDs and GIDs are 32-bit unsigned on Linux; a
// message of a caller whose IDs are 2^31 or more (user namespaces' high
// ranges) decodes with them, and 2^32-1 ((uid_t)-1, no ID) does not.
func TestDecodeLargeIDs(t *testing.T) {
	m, body := goldenMeta()
	m.Origin.UID, m.Origin.GID = 1<<32-2, 1<<31
	file := encode(m, body)
	d, err := Decode(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Origin.UID != 1<<32-2 || d.Origin.GID != 1<<31 {
		t.Fatalf("uid %d gid %d", d.Origin.UID, d.Origin.GID)
	}
	m.Origin.UID = 1<<32 - 1
	file = encode(m, body)
	if _, err := Decode(bytes.NewReader(file), int64(len(file))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("uid 2^32-1: %v", err)
	}
}
