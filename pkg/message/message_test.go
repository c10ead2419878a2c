package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/mail"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mailshim/mailshim/pkg/spool"
)

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func TestReader(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	tests := []struct {
		name, in, want string
		ignoreDots     bool
	}{
		{"lf", "a\nb\n", "a\nb\n", true},
		{"crlf", "a\r\nb\r\n", "a\nb\n", true},
		{"mixed php", "To: x\r\nSubject: y\r\n\r\nbody\nline\n", "To: x\nSubject: y\n\nbody\nline\n", true},
		{"bare cr stays", "a\rb\r\n\r", "a\rb\n\r", true},
		{"no final newline", "a\nb", "a\nb", true},
		{"empty", "", "", true},
		{"dot ends without -i", "a\n.\nb\n", "a\n", false},
		{"dot crlf ends", "a\r\n.\r\nb\r\n", "a\n", false},
		{"dot at eof", "a\n.", "a\n", false},
		{"dot first line", ".\nrest", "", false},
		{"dot kept with -i", "a\n.\nb\n", "a\n.\nb\n", true},
		{"dots not a terminator", "..\n. \n.x\n", "..\n. \n.x\n", false},
		{"dot mid line", "a.\n", "a.\n", false},
		{"nul and 8bit", "a\x00b\xff\n", "a\x00b\xff\n", true},
		{"long line", long + "\r\n.\n", long + "\n", false},
		{"cr at buffer boundary", strings.Repeat("y", 64<<10-1) + "\r\nz", strings.Repeat("y", 64<<10-1) + "\nz", true},
		{"cr at buffer boundary bare", strings.Repeat("y", 64<<10-1) + "\rz", strings.Repeat("y", 64<<10-1) + "\rz", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, slow := range []bool{false, true} {
				var in io.Reader = strings.NewReader(tt.in)
				if slow {
					in = iotest.OneByteReader(in)
				}
				got := readAll(t, NewReader(in, tt.ignoreDots))
				if got != tt.want {
					t.Errorf("slow=%v: got %q, want %q", slow, trunc(got), trunc(tt.want))
				}
				in = strings.NewReader(tt.in)
				if slow {
					in = iotest.OneByteReader(in)
				}
				var w strings.Builder
				if _, err := NewReader(in, tt.ignoreDots).WriteTo(&w); err != nil || w.String() != tt.want {
					t.Errorf("slow=%v: WriteTo: got %q, %v, want %q", slow, trunc(w.String()), err, trunc(tt.want))
				}
			}
		})
	}
}

// One Reader reset for message after message reads each as a new one
// would (whatever state the last one ended in: a "." line, a held-back
// CR, a grown buffer), and keeps its first-size buffer.
func TestReaderReset(t *testing.T) {
	ins := []struct {
		in, want   string
		ignoreDots bool
	}{
		{"a\r\n.\r\nb\r\n", "a\n", false},
		{".\nrest\n", ".\nrest\n", true},
		{"x\r", "x\r", true},
		{"\r\nz", "\nz", true},
		{strings.Repeat("line\r\n", 600<<10), strings.Repeat("line\n", 600<<10), true},
		{"after large\r\n", "after large\n", false},
		{"a\n.\nb\n", "a\n", false},
	}
	r := NewReader(nil, true)
	var first []byte
	for i, c := range ins {
		r.Reset(strings.NewReader(c.in), c.ignoreDots)
		got := readAll(t, r)
		if got != c.want {
			t.Errorf("message %d: got %q, want %q", i, trunc(got), trunc(c.want))
		}
		switch {
		case i == 0:
			first = r.buf
		case len(c.in) < 1<<20 && i < 4 && (len(r.buf) == 0 || &r.buf[0] != &first[0]):
			t.Errorf("message %d: the buffer was not kept", i)
		}
	}
}

func trunc(s string) string {
	if len(s) > 100 {
		return s[:50] + "..." + s[len(s)-50:]
	}
	return s
}

func TestReaderError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), true)
	_, err := io.ReadAll(r)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	var w bytes.Buffer
	n, err := NewReader(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)), true).WriteTo(&w)
	if !errors.Is(err, boom) || n != 3 || w.String() != "abc" {
		t.Fatalf("WriteTo: %d %q %v, want 3 \"abc\" boom", n, w.String(), err)
	}
}

func TestSMTPReader(t *testing.T) {
	tests := []struct {
		name, in, want, after string
		err                   error
	}{
		{"basic", "a\r\n..b\r\n.\r\nQUIT\r\n", "a\n.b\n", "QUIT\r\n", nil},
		{"lf lines", "a\nb\r\n.\r\nNOOP\n", "a\nb\n", "NOOP\n", nil},
		{"bare cr kept", "a\rb\r\n.\r\n", "a\rb\n", "", nil},
		{"dot stuffed after lf", "a\n..\r\n.\r\n", "a\n.\n", "", nil},
		// SMTP smuggling: only CRLF.CRLF ends DATA; a bare CR or LF next
		// to the dot refuses the message, and nothing after it is read
		// as a command.
		{"smuggle lf.lf", "a\n.\nMAIL FROM:<x>\r\n", "a\n", "MAIL FROM:<x>\r\n", ErrBareDataEnd},
		{"smuggle crlf.lf", "a\r\n.\nMAIL FROM:<x>\r\n", "a\n", "MAIL FROM:<x>\r\n", ErrBareDataEnd},
		{"smuggle lf.crlf", "a\n.\r\nMAIL FROM:<x>\r\n", "a\n", "MAIL FROM:<x>\r\n", ErrBareDataEnd},
		{"smuggle cr.crlf", "a\r.\r\nMAIL FROM:<x>\r\n", "", "MAIL FROM:<x>\r\n", ErrBareDataEnd},
		{"smuggle crlf.cr", "a\r\n.\rMAIL FROM:<x>\r\n", "a\n", "", ErrBareDataEnd},
		{"smuggle cr.cr", "a\r.\rMAIL FROM:<x>\r\n", "", "", ErrBareDataEnd},
		{"smuggle first line", ".\nMAIL FROM:<x>\r\n", "", "MAIL FROM:<x>\r\n", ErrBareDataEnd},
		{"empty", ".\r\n", "", "", nil},
		{"eof", "a\r\nb", "a\nb", "", io.ErrUnexpectedEOF},
		{"dot space", ". \r\n.\r\n", " \n", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 4096)
			got, err := io.ReadAll(NewSMTPReader(br))
			if !errors.Is(err, tt.err) && err != tt.err {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.after {
				t.Errorf("left %q, want %q", rest, tt.after)
			}
			br = bufio.NewReaderSize(strings.NewReader(tt.in), 4096)
			var w bytes.Buffer
			if _, err := NewSMTPReader(br).WriteTo(&w); (!errors.Is(err, tt.err) && err != tt.err) || w.String() != tt.want {
				t.Errorf("WriteTo: %q, %v; want %q, %v", w.String(), err, tt.want, tt.err)
			}
			if rest, _ := io.ReadAll(br); string(rest) != tt.after {
				t.Errorf("WriteTo left %q, want %q", rest, tt.after)
			}
		})
	}
}

func header(t *testing.T, in string) (*Header, string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(in))
	h, err := ReadHeader(br, 0)
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	rest, _ := io.ReadAll(br)
	return h, string(rest)
}

func write(h *Header, bodyFollows bool) string {
	var b bytes.Buffer
	b.Write(h.Bytes(bodyFollows))
	return b.String()
}

func TestReadHeader(t *testing.T) {
	h, rest := header(t, "To: a@x.org,\n b@x.org\nSubject: hi\nBcc: c@x.org\n\nbody\n")
	if len(h.Fields) != 3 || !h.Separator || rest != "body\n" {
		t.Fatalf("fields %d sep %v rest %q", len(h.Fields), h.Separator, rest)
	}
	if got := h.Get("to"); got != "a@x.org, b@x.org" {
		t.Errorf("To %q", got)
	}
	rc, err := Recipients(h)
	if err != nil || strings.Join(rc, " ") != "a@x.org b@x.org c@x.org" {
		t.Errorf("recipients %v %v", rc, err)
	}
	RemoveBcc(h)
	EnsureFrom(h, "Jörg Ü", "u@x.org")
	want := "To: a@x.org,\n b@x.org\nSubject: hi\nFrom: =?utf-8?q?J=C3=B6rg_=C3=9C?= <u@x.org>\n\nbody\n"
	if got := write(h, true) + rest; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestReadHeaderShapes(t *testing.T) {
	tests := []struct {
		name, in    string
		fields      int
		out         string // header written with From: added, then rest
		bodyFollows bool
	}{
		{"no body no newline", "Subject: x", 1, "Subject: x\nFrom: u@h\n", false},
		{"header only", "Subject: x\n", 1, "Subject: x\nFrom: u@h\n", false},
		{"no header", "just text\nmore\n", 0, "From: u@h\n\njust text\nmore\n", true},
		{"empty", "", 0, "From: u@h\n", false},
		{"mbox from line dropped", "From someone Mon Jan 1\nSubject: x\n\nb\n", 1, "Subject: x\nFrom: u@h\n\nb\n", true},
		{"body without blank line", "Subject: x\nnot a header\n", 1, "Subject: x\nFrom: u@h\n\nnot a header\n", false},
		{"obsolete space before colon", "Subject : x\n\nb", 1, "Subject : x\nFrom: u@h\n\nb", true},
		{"existing from kept", "from: a@b\n\nb", 1, "from: a@b\n\nb", true},
		{"8bit and nul in value", "Subject: \xff\x00\n\nb", 1, "Subject: \xff\x00\nFrom: u@h\n\nb", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rest := header(t, tt.in)
			if len(h.Fields) != tt.fields {
				t.Fatalf("fields %d, want %d", len(h.Fields), tt.fields)
			}
			EnsureFrom(h, "", "u@h")
			if got := write(h, rest != "") + rest; got != tt.out {
				t.Errorf("got %q\nwant %q", got, tt.out)
			}
		})
	}
}

func TestReadHeaderBounds(t *testing.T) {
	big := "To: " + strings.Repeat("a@example.org, ", (MaxField/15)+1) + "\n\n"
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader(big)), 0); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("long field: %v", err)
	}
	many := strings.Repeat("X-A: b\n", 1000) + "\n"
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader(many)), 5000); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("long header: %v", err)
	}
	// 10,000 recipients in one To: fit.
	var b strings.Builder
	b.WriteString("To: ")
	for i := 0; i < 10000; i++ {
		if i > 0 {
			b.WriteString(",\n ")
		}
		b.WriteString("user" + strings.Repeat("x", i%7) + "@example.org")
	}
	b.WriteString("\n\nbody\n")
	h, err := ReadHeader(bufio.NewReader(strings.NewReader(b.String())), 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := Recipients(h)
	if err != nil || len(rc) != 10000 {
		t.Fatalf("%d recipients, %v", len(rc), err)
	}
}

// The limits shared with relayd's pickup:
// what ReadHeader accepts and Check passes, ReadHeader reads again from
// the stored bytes.
func TestReadHeaderSharedLimits(t *testing.T) {
	line := func(n int) string { // a To: of n addresses on one line
		var b strings.Builder
		b.WriteString("To: ")
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("user" + strings.Repeat("x", i%7) + "@example.org")
		}
		return b.String() + "\n"
	}
	stored := func(t *testing.T, in string) (*Header, string) {
		t.Helper()
		br := bufio.NewReader(strings.NewReader(in))
		h, err := ReadHeader(br, 0)
		if err != nil {
			return nil, err.Error()
		}
		rest, _ := io.ReadAll(br)
		EnsureFrom(h, "A Name", "u@example.org")
		if err := h.Check(len(rest) > 0); err != nil {
			return nil, err.Error()
		}
		out := string(h.Bytes(len(rest) > 0)) + string(rest)
		// What pickup does with the stored message.
		h2, err := ReadHeader(bufio.NewReader(strings.NewReader(out)), 0)
		if err != nil {
			t.Fatalf("stored message not readable again: %v", err)
		}
		return h2, ""
	}
	for _, n := range []int{4000, 10000} {
		h, e := stored(t, line(n)+"Subject: long unfolded To\n\nbody\n")
		if e != "" {
			t.Fatalf("%d recipients on one line: %s", n, e)
		}
		if rc, err := Recipients(h); err != nil || len(rc) != n {
			t.Fatalf("%d recipients, %v", len(rc), err)
		}
	}
	// One field over MaxField, on one line or folded; a section over
	// MaxHeader made of fields that are each within bounds.
	for name, in := range map[string]string{
		"long line":              "X-A: " + strings.Repeat("a", MaxField) + "\n\nb\n",
		"long folded":            "X-A: a\n" + strings.Repeat(" "+strings.Repeat("b", 1000)+"\n", MaxField/1000+1) + "\nb\n",
		"long section":           strings.Repeat("X-A: "+strings.Repeat("c", MaxField-100)+"\n", MaxHeader/MaxField+1) + "\nb\n",
		"long continuation line": "X-A: a\n " + strings.Repeat("d", MaxField+10) + "\n\n",
	} {
		if _, e := stored(t, in); !strings.Contains(e, "too large") {
			t.Errorf("%s: accepted (%q)", name, e)
		}
	}
	// The field at the limit passes (with room for a line end), and so
	// does a section just under it.
	if _, e := stored(t, "X-A: "+strings.Repeat("a", MaxField-7)+"\n\nb\n"); e != "" {
		t.Errorf("field at the limit: %s", e)
	}
	// A very long line that is not a field starts the body: nothing is
	// lost, nothing refused.
	long := strings.Repeat("z", 3*MaxField) + "\nmore\n"
	br := bufio.NewReader(strings.NewReader("Subject: x\n" + long))
	h, err := ReadHeader(br, 0)
	if err != nil || len(h.Fields) != 1 || h.BodyStart == nil {
		t.Fatalf("long body line: %v %+v", err, h)
	}
	rest, _ := io.ReadAll(br)
	if string(h.BodyStart)+string(rest) != long {
		t.Fatalf("long body line not kept whole")
	}
}

// "Name : value" is a field for both sides (sendmail and pickup).
func TestParseFieldName(t *testing.T) {
	for in, want := range map[string]int{
		"Subject: x": 7, "X-A : 1": 3, "X-A\t: 1": 3, "X-A:": 3, ": x": -1, " X: y": -1,
		"From x": -1, "a b: c": -1, "\xffX: y": -1, "X\x7f: y": -1, "body": -1, "": -1,
	} {
		if got := ParseFieldName([]byte(in)); got != want {
			t.Errorf("ParseFieldName(%q) = %d, want %d", in, got, want)
		}
	}
	h, rest := header(t, "Subject: t\nX-A : 1\nFrom: ceo@example.org\n\nbody\n")
	if len(h.Fields) != 3 || h.Get("From") != "ceo@example.org" || h.Get("X-A") != "1" || rest != "body\n" {
		t.Fatalf("fields %+v rest %q", h.Fields, rest)
	}
}

func TestResentRecipients(t *testing.T) {
	h, _ := header(t, "To: old@x.org\nResent-To: new@x.org\nResent-Bcc: hidden@x.org\n\n")
	rc, err := Recipients(h)
	if err != nil || strings.Join(rc, " ") != "new@x.org hidden@x.org" {
		t.Fatalf("%v %v", rc, err)
	}
	RemoveBcc(h)
	if h.Has("Resent-Bcc") {
		t.Error("Resent-Bcc kept")
	}
}

func TestParseList(t *testing.T) {
	tests := []struct {
		in   string
		want string // space-separated; "ERR" for an error
	}{
		{"a@example.org", "a@example.org"},
		{"root", "root"},
		{"root, www-data", "root www-data"},
		{"Name <root>", "root"},
		{"Jörg <jörg@exämple.org>", "jörg@exämple.org"},
		{"=?windows-1252?Q?J=F6rg?= <j@x.org>", "j@x.org"},
		{"undisclosed-recipients:;", ""},
		{"a@b.org, Grp: c@d.org, e@f.org;", "a@b.org c@d.org e@f.org"},
		{`"a b"@x.org`, `"a b"@x.org`},
		{"a@x.org (comment)", "a@x.org"},
		{`root, a@x.org (5" disks), Ops <ops@x.org>`, "root a@x.org ops@x.org"},
		{`root (the 19" rack), b@x.org`, "root b@x.org"},
		{"", ""},
		{"a@x.org,", "a@x.org"},
		{"J\xf6rg <j@x.org>", "j@x.org"},
		{"\"J\xf6rg\" <j@x.org>, k@x.org", "j@x.org k@x.org"},
		{"a@b.org <a@b.org>", "a@b.org"},
		{"x <-X@b.org>", "ERR"},
		{"x <a@b.org\r\nBcc: e@x.org>", "ERR"},
		{"-X", "ERR"},
		{"-X/var/www/x.php", "ERR"},
		{"/tmp/x", "ERR"},
		{"|/bin/sh", "ERR"},
		{":include:/etc/passwd", "ERR"},
		{"-oQ/tmp@x.org", "ERR"},
		{"a@x.org\r\nBcc: evil@x.org", "ERR"},
		{"a\x00@x.org", "ERR"},
		{"$(id)@x.org", "ERR"},
		{"a;rm -rf /@x.org", "ERR"},
		{"`id`@x.org", "`id`@x.org"},
		{"a@", "ERR"},
		{"@x.org", "ERR"},
		{strings.Repeat("a", 600) + "@x.org", "ERR"},
	}
	for _, tt := range tests {
		got, err := ParseList(tt.in)
		s := strings.Join(got, " ")
		if err != nil {
			s = "ERR"
		}
		if s != tt.want {
			t.Errorf("ParseList(%q) = %q (%v), want %q", tt.in, s, err, tt.want)
		}
	}
}

func TestFormatFrom(t *testing.T) {
	tests := []struct{ name, addr, want string }{
		{"", "u@h", "u@h"},
		{"CronDaemon", "root@h", "CronDaemon <root@h>"},
		{"Doe, John", "j@h", `"Doe, John" <j@h>`},
		{`a"b`, "j@h", `"a\"b" <j@h>`},
	}
	for _, tt := range tests {
		if got := FormatFrom(tt.name, tt.addr); got != tt.want {
			t.Errorf("FormatFrom(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// A full name that is not UTF-8 (read as ISO-8859-1) gives a From: value
// that is one mailbox, the address given, whose name decodes to the
// name, in encoded-words of at most 75 characters: whatever bytes it
// holds (below 0x20 and DEL excepted: ValidateEnvelope refuses them).
func TestFormatFromLatin1(t *testing.T) {
	var names []string
	for c := 0x20; c < 0x100; c++ {
		if c != 0x7f {
			names = append(names, string([]byte{0xe9, byte(c)}), strings.Repeat(string([]byte{byte(c), 0xff}), 128))
		}
	}
	names = append(names, "\xe9 <evil@example.com>, x", "Dupont, Jos\xe9", "Caf\xe9 \"x\" (y) a@b:c;", "=?utf-8?q?x?= \xe9")
	for _, name := range names {
		v := FormatFrom(name, "u@example.org")
		list, err := mail.ParseAddressList(v)
		if err != nil || len(list) != 1 || list[0].Address != "u@example.org" {
			t.Errorf("FormatFrom(%q) = %q: %v, %v", name, v, list, err)
			continue
		}
		want := make([]rune, 0, len(name))
		for i := 0; i < len(name); i++ {
			want = append(want, rune(name[i]))
		}
		if list[0].Name != string(want) {
			t.Errorf("FormatFrom(%q) = %q: name %q", name, v, list[0].Name)
		}
		for _, w := range strings.Fields(strings.TrimSuffix(v, "<u@example.org>")) {
			if len(w) > 75 {
				t.Errorf("FormatFrom(%q): encoded-word of %d characters", name, len(w))
			}
		}
	}
}

// A UTF-8 full name gives a From: value that is one mailbox, the address
// given, whose name decodes to the name, in encoded-words of at most 75
// characters, whatever ASCII characters it holds besides: a backslash
// too, which mail.Address leaves raw in a Q-encoded word.
func TestFormatFromUTF8(t *testing.T) {
	var names []string
	for c := 0x20; c < 0x7f; c++ {
		names = append(names, "é"+string(rune(c)), strings.Repeat(string(rune(c))+"€", 64))
	}
	names = append(names, `CORP\jörg`, "é <evil@example.com>, x", "=?utf-8?q?x?= é")
	for _, name := range names {
		v := FormatFrom(name, "u@example.org")
		list, err := mail.ParseAddressList(v)
		if err != nil || len(list) != 1 || list[0].Address != "u@example.org" || list[0].Name != name {
			t.Errorf("FormatFrom(%q) = %q: %v, %v", name, v, list, err)
			continue
		}
		for _, w := range strings.Fields(strings.TrimSuffix(v, "<u@example.org>")) {
			if len(w) > 75 {
				t.Errorf("FormatFrom(%q): encoded-word of %d characters", name, len(w))
			}
		}
	}
}

// FuzzHeader checks that header scanning never panics, that what it keeps
// plus the rest of the input is the input (nothing lost, nothing added
// besides the separator line), and that address parsing is total.
func FuzzHeader(f *testing.F) {
	for _, s := range []string{
		"To: a@b\n\nbody", "Subject: x", "", "From x\nTo: y\n", "To: a,\n b\nCc: c\n\n",
		"x\n", "A: \xff\x00\n\n", "To: <a@b>, \"q\\\"\" <c@d>, g:;\n\n",
		// RFC 5322 comments (stripComments): around, nested, quoted
		// pairs, a double quote inside, next to an angle-addr.
		"To: root (System Administrator), (Sales) sales@example.org\n\n",
		"Cc: ops@example.org (the (nested) team), \"B\" <b@x.org> (acc), (x) <x@x.org>\n\n",
		"To: root, a@x.org (5\" disks), Ops <ops@x.org>\nBcc: (\\)) -X@x.org, $(id)@x.org\n\n",
		"To: (c) |cmd, (c) /tmp/x, \"a (b)\"@x.org, a@[1.2.3.4] (c)\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		h, err := ReadHeader(br, 1<<20)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		out := write(h, len(rest) > 0) + string(rest)
		orig := string(in)
		if h.FromLine != "" {
			if i := strings.IndexByte(orig, '\n'); i >= 0 {
				orig = orig[i+1:]
			} else {
				orig = ""
			}
		}
		if strings.ReplaceAll(out, "\n", "") != strings.ReplaceAll(orig, "\n", "") {
			t.Fatalf("round trip changed bytes: %q -> %q", orig, out)
		}
		// What sendmail stores (Check passed), pickup's scanner reads.
		if h.Check(len(rest) > 0) == nil {
			if _, err := ReadHeader(bufio.NewReader(strings.NewReader(out)), 0); err != nil {
				t.Fatalf("stored header not readable again: %v", err)
			}
		}
		for _, fl := range h.Fields {
			list, err := ParseList(fl.Value())
			if err == nil {
				for _, a := range list {
					if HasControl(a) || a == "" || a[0] == '-' {
						t.Fatalf("bad address accepted: %q", a)
					}
					// The socket's server accepts what sendmail sends,
					// unchanged.
					env := spool.Envelope{Sender: a, Recipients: []string{a}}
					if err := ValidateEnvelope(&env); err != nil || env.Recipients[0] != a || env.Sender != a {
						t.Fatalf("address %q: ValidateEnvelope %v, %+v", a, err, env)
					}
				}
			}
		}
	})
}

// normaliseModel is the naive model of NewReader's output: with -i, the
// input with every CRLF made LF; without -i, the same up to the first line
// that is a single ".".
func normaliseModel(in []byte, ignoreDots bool) string {
	want := string(in)
	if !ignoreDots {
		lines := strings.SplitAfter(want, "\n")
		for i, l := range lines {
			if l == ".\n" || l == ".\r\n" || l == "." && i == len(lines)-1 {
				want = strings.Join(lines[:i], "")
				break
			}
		}
	}
	return strings.ReplaceAll(want, "\r\n", "\n")
}

// chunkReader returns its input in pieces of pseudo-random sizes.
type chunkReader struct {
	b []byte
	n uint32
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	c.n = c.n*1664525 + 1013904223
	k := min(len(p), len(c.b), int(c.n>>8)%(100<<10)+1)
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

// crReader ends every piece it returns with a CR (so that the Reader
// holds one back after every read, the one when its buffer grows too).
type crReader struct{ b []byte }

func (c *crReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(c.b))
	if i := bytes.IndexByte(c.b[:k], '\r'); i >= 0 {
		k = i + 1
	}
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

// Messages past the size at which the buffer grows: the bytes around the
// switch and the gathered writes come out as the model says.
func TestReaderLarge(t *testing.T) {
	var in []byte
	for i := 0; len(in) < 5<<20; i++ {
		switch i % 7 {
		case 0:
			in = append(in, "line with crlf\r\n"...)
		case 3:
			in = append(in, ".. dotted\n"...)
		case 5:
			in = append(in, strings.Repeat("x", i%5000)+"\r"...)
		default:
			in = append(in, "plain line\n"...)
		}
	}
	ended := append(append(append([]byte{}, in[:3<<20]...), ".\r\n"...), in[3<<20:]...)
	for _, tc := range []struct {
		in         []byte
		ignoreDots bool
	}{{in, true}, {in, false}, {ended, false}, {ended, true}} {
		want := normaliseModel(tc.in, tc.ignoreDots)
		got, err := io.ReadAll(NewReader(&chunkReader{b: tc.in}, tc.ignoreDots))
		if err != nil || string(got) != want {
			t.Errorf("Read: %d bytes, %v; want %d", len(got), err, len(want))
		}
		var w bytes.Buffer
		if _, err := NewReader(&chunkReader{b: tc.in}, tc.ignoreDots).WriteTo(&w); err != nil || w.String() != want {
			t.Errorf("WriteTo: %d bytes, %v; want %d", w.Len(), err, len(want))
		}
		w.Reset()
		if _, err := NewReader(&crReader{b: tc.in}, tc.ignoreDots).WriteTo(&w); err != nil || w.String() != want {
			t.Errorf("WriteTo, a CR at the end of every read: %d bytes, %v; want %d", w.Len(), err, len(want))
		}
	}
}

// FuzzReader checks the line-end normalisation against a naive model:
// with -i, the output is the input with every CRLF made LF; without -i,
// the same up to the first line that is a single ".".
func FuzzReader(f *testing.F) {
	for _, s := range []string{"a\r\nb\n", "x\r", "\r\r\n", ".\n", "a\n.\r\nb", "..\n", strings.Repeat("y", 70000) + "\r\n"} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, ignoreDots bool) {
		want := normaliseModel(in, ignoreDots)
		got, err := io.ReadAll(NewReader(iotest.HalfReader(bytes.NewReader(in)), ignoreDots))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		// WriteTo (io.Copy's path) gives the same bytes.
		var w bytes.Buffer
		if _, err := NewReader(iotest.HalfReader(bytes.NewReader(in)), ignoreDots).WriteTo(&w); err != nil {
			t.Fatal(err)
		}
		if w.String() != want {
			t.Fatalf("WriteTo: got %q, want %q", w.String(), want)
		}
	})
}

func TestValidateEnvelope(t *testing.T) {
	// What sendmail stores passes again unchanged (the socket's server
	// validates what sendmail's client sends).
	for _, in := range []string{"a@example.org", `"a b"@example.org`, "root", "j\u00f6rg@example.org", "a+tag@[192.0.2.1]", "`id`@example.org", "Name <x@example.org>"} {
		a, err := ParseAddress(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		env := spool.Envelope{Sender: a, Recipients: []string{a}}
		if err := ValidateEnvelope(&env); err != nil || env.Sender != a || env.Recipients[0] != a {
			t.Errorf("%q: %v, %+v", a, err, env)
		}
	}
	bad := map[string]spool.Envelope{
		"quoted pipe":    {Recipients: []string{`"|cmd"@example.org`}},
		"quoted path":    {Recipients: []string{`"/etc/passwd"@example.org`}},
		"quoted option":  {Recipients: []string{`"-oQ/tmp"@example.org`}},
		"quoted include": {Recipients: []string{`":include:/x"@example.org`}},
		"sender nul":     {Sender: "a\x00@example.org", Recipients: []string{"b@example.org"}},
		"ret":            {Ret: "ALL", Recipients: []string{"b@example.org"}},
		"body":           {BodyType: "BINARYMIME", Recipients: []string{"b@example.org"}},
		"long name":      {FullName: strings.Repeat("n", 257), Recipients: []string{"b@example.org"}},
		"rcpt bytes": {Recipients: func() []string {
			r := make([]string, 3000)
			for i := range r {
				r[i] = strings.Repeat("a", 400) + "@example.org"
			}
			return r
		}()},
	}
	for name, env := range bad {
		if err := ValidateEnvelope(&env); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzSMTPReader: DATA ends (io.EOF) only just after <CR><LF>.<CR><LF>
// (or a first line ".\r\n"), never at a variant with a bare CR or LF.
func FuzzSMTPReader(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\nb", "a\n.\nb", "a\r\n.\nb", "a\n.\r\nb", "a\r.\r\nb", ".\r\n", "..\r\n.\r\n", "a\rb\r\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		_, err := io.ReadAll(NewSMTPReader(br))
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		consumed := string(in[:len(in)-len(rest)])
		if consumed != ".\r\n" && !strings.HasSuffix(consumed, "\r\n.\r\n") {
			t.Fatalf("DATA ended after %q", consumed)
		}
		body := strings.TrimSuffix(consumed, ".\r\n")
		if strings.Contains(body, "\n.\n") || strings.Contains(body, "\n.\r\n") || strings.HasPrefix(body, ".\n") {
			t.Fatalf("a smuggling variant was accepted as data before the end: %q", consumed)
		}
	})
}

// Control characters of every kind are refused in addresses, names and
// parameters: C0, DEL, C1, line separators, bidi controls.
func TestHasControl(t *testing.T) {
	for _, s := range []string{"a\x00", "a\x1b[2J", "a\x7f", "a\u0085b", "a\u009bb", "a\u2028b", "a\u202eb", "a\u2066b", "a\u200fb", "a\u061cb"} {
		if !HasControl(s) {
			t.Errorf("HasControl(%q) = false", s)
		}
		if _, err := ParseAddress(`"` + s + `"@example.org`); err == nil {
			t.Errorf("ParseAddress accepted a local part with %q", s)
		}
	}
	for _, s := range []string{"plain", "grüße", "日本", "a\u00a0b", "\u05d0\u05d1"} {
		if HasControl(s) {
			t.Errorf("HasControl(%q) = true", s)
		}
	}
}
