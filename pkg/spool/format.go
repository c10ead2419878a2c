package spool

// The message file format, version 1.
//
// A message file is a text header, a blank line, then exactly Size bytes of
// message (RFC 5322 header and body, lines ending in LF as sendmail stored
// them):
//
//	MAILSHIM-SPOOL 1
//	id 0006270A1B2C3D4E5F60
//	time 2026-11-23T14:40:00.123456789Z
//	uid 1001
//	...one "key value" line per field, repeatable keys repeated...
//	size 00000000000000000262
//	crc32c 1a2b3c4d
//	<empty line>
//	<262 bytes of message>
//
// Values are percent-escaped: '%', bytes below 0x20 and 0x7f become %XX, so
// a value can never contain CR, LF or NUL and the header stays one line per
// field. "size" and "crc32c" are always the last two lines, with fixed
// widths, so a writer streaming the message can fill them in afterwards
// (pwrite) without rewriting the file. Decode refuses a file whose first line
// is not a known version, whose header is not terminated, or whose length is
// not exactly header + size; Body verifies the CRC-32C at its end.
//
// Trust: "uid", "gid" and "user" are the caller's real IDs as sendmail got
// them from the kernel (relayd still takes the UID from the file's owner,
// or from SO_PEERCRED for socket submissions). Everything about where the
// message came from beyond that — "script", "script-source",
// "php-header", "php-uid-mismatch", "parent-pid", "parent-exe",
// "parent-cmdline", "parent-cwd", "cgroup", "caller", "ignored",
// "smtp-client", "smtp-helo", "smtp-auth-user" — is advisory: what the caller's environment and /proc claim. Logs and
// headers must present it as such and never base a decision on it.
//
// Unknown keys are kept in Meta.Extra (so a newer minor writer does not make
// an older relayd quarantine mail); an unknown version is refused.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version is the format version this package writes.
const Version = 1

const (
	magic     = "MAILSHIM-SPOOL "
	sizeWidth = 20
	crcWidth  = 8
	maxHeader = 16 << 20 // 10,000 recipients fit many times over
)

// Envelope is what the message is sent with: the SMTP envelope and the
// delivery options the caller asked for.
type Envelope struct {
	// Sender is the envelope sender as the caller gave it with -f/-r or
	// MAIL FROM, already validated. "" means none was given (relayd uses
	// user@hostname through the sender map); "<>" is the null sender.
	Sender string
	// FullName is -F, used only in a From: that the system adds.
	FullName string
	// Recipients as given on the command line, from -t headers, or RCPT TO;
	// validated, possibly unqualified ("root").
	Recipients []string
	Notify     string // -N: NEVER or a list of SUCCESS,FAILURE,DELAY
	Ret        string // -R: FULL or HDRS
	EnvID      string // -V: envelope ID (RFC 3461)
	BodyType   string // -B or BODY=: 7BIT or 8BITMIME
	SMTPUTF8   bool   // MAIL FROM ... SMTPUTF8 in -bs, or non-ASCII addresses
}

// Origin is who sent the message. UID, GID and User come from the kernel
// (the caller's real IDs); everything else is advisory: what the caller's
// environment and /proc claim.
type Origin struct {
	UID  int
	GID  int
	User string // from the password database; "" if the UID has no entry

	// Via is how the message reached the spool: "maildrop" (setgid
	// sendmail), "socket" (relayd's submission socket) or "smtp" (relayd's
	// loopback SMTP listener).
	Via string
	// Mode is sendmail's mode: "bm" (arguments), "t" (-t) or "bs" (SMTP).
	Mode string

	// Script is the advisory best guess at the script that sent the
	// message, and ScriptSource names where it came from: "SCRIPT_FILENAME",
	// "X-PHP-Originating-Script", "MAILSHIM_SCRIPT" (the PHP-FPM prepend
	// snippet), "parent-cmdline", or "".
	Script       string
	ScriptSource string
	// PHPHeader is the raw value of PHP's X-PHP-Originating-Script header
	// ("uid:name"); PHPUIDMismatch is set when its uid is not the caller's
	// (recorded, never believed).
	PHPHeader      string
	PHPUIDMismatch bool

	// The nearest interesting ancestor process (sh -c wrappers skipped).
	ParentPID     int
	ParentExe     string
	ParentCmdline string // arguments joined by spaces, each %-escaped as needed
	ParentCwd     string
	// Cgroup is the caller's systemd unit or scope, e.g. "php8.2-fpm.service".
	Cgroup string
	// Caller is the recognised kind of caller: "cron", "php", "php-fpm",
	// "git", "mailx", ... or "".
	Caller string

	// Ignored lists the command-line options that were accepted and ignored
	// as unknown (relayd logs them).
	Ignored []string

	// What the SMTP listener (Via "smtp") records besides the client's
	// process (the Parent* fields, Cgroup and Caller describe the process
	// that holds the client's socket): Client is the peer ("127.0.0.1:54321",
	// "[::1]:54321" or "unix"), Helo the name the client gave in EHLO/HELO,
	// AuthUser the user name it claimed in AUTH — a claim, recorded, never
	// an identity (the UID is the kernel's).
	Client   string
	Helo     string
	AuthUser string
}

// Meta is everything in a message file except the message bytes.
type Meta struct {
	Version int
	ID      string
	Time    time.Time // arrival, from sendmail's clock
	Env     Envelope
	Origin  Origin
	Extra   [][2]string // unknown keys, in order, unescaped

	Size       int64  // number of message bytes
	CRC        uint32 // CRC-32C of the message bytes
	BodyOffset int64  // where the message bytes start in the file
}

// Errors returned by Decode. They wrap ErrCorrupt, so callers that only
// need to know "quarantine it" can test errors.Is(err, ErrCorrupt).
var (
	ErrCorrupt         = errors.New("spool: corrupt message file")
	ErrVersion   error = corruptError("unknown format version")
	ErrTruncated error = corruptError("truncated")
	ErrSize      error = corruptError("size mismatch")
	ErrChecksum  error = corruptError("checksum mismatch")
)

// corruptError is ErrCorrupt with what is wrong, as fmt.Errorf("%w: ...",
// ErrCorrupt) would make it, without running fmt when the package is
// initialised: sendmail, which imports this package, would pay for that
// at every call, and its path to a stored message does not use fmt.
type corruptError string

func (e corruptError) Error() string { return ErrCorrupt.Error() + ": " + string(e) }
func (e corruptError) Unwrap() error { return ErrCorrupt }

// EncodeHeader returns the file header for m, with m.Size and m.CRC in the
// trailing fixed-width fields, and the offset of the "size" line within it
// (for PatchSize).
func EncodeHeader(m *Meta) (hdr []byte, sizeOff int64) {
	var b bytes.Buffer
	b.WriteString(magic)
	b.WriteString(strconv.Itoa(Version))
	b.WriteByte('\n')
	kv := func(k, v string) {
		b.WriteString(k)
		b.WriteByte(' ')
		b.WriteString(Escape(v))
		b.WriteByte('\n')
	}
	kvOpt := func(k, v string) {
		if v != "" {
			kv(k, v)
		}
	}
	kv("id", m.ID)
	kv("time", m.Time.UTC().Format(time.RFC3339Nano))
	kv("uid", strconv.Itoa(m.Origin.UID))
	kv("gid", strconv.Itoa(m.Origin.GID))
	kvOpt("user", m.Origin.User)
	kvOpt("via", m.Origin.Via)
	kvOpt("mode", m.Origin.Mode)
	kvOpt("sender", m.Env.Sender)
	kvOpt("fullname", m.Env.FullName)
	for _, r := range m.Env.Recipients {
		kv("rcpt", r)
	}
	kvOpt("notify", m.Env.Notify)
	kvOpt("ret", m.Env.Ret)
	kvOpt("envid", m.Env.EnvID)
	kvOpt("body", m.Env.BodyType)
	if m.Env.SMTPUTF8 {
		kv("smtputf8", "yes")
	}
	kvOpt("script", m.Origin.Script)
	kvOpt("script-source", m.Origin.ScriptSource)
	kvOpt("php-header", m.Origin.PHPHeader)
	if m.Origin.PHPUIDMismatch {
		kv("php-uid-mismatch", "yes")
	}
	if m.Origin.ParentPID != 0 {
		kv("parent-pid", strconv.Itoa(m.Origin.ParentPID))
	}
	kvOpt("parent-exe", m.Origin.ParentExe)
	kvOpt("parent-cmdline", m.Origin.ParentCmdline)
	kvOpt("parent-cwd", m.Origin.ParentCwd)
	kvOpt("cgroup", m.Origin.Cgroup)
	kvOpt("caller", m.Origin.Caller)
	kvOpt("smtp-client", m.Origin.Client)
	kvOpt("smtp-helo", m.Origin.Helo)
	kvOpt("smtp-auth-user", m.Origin.AuthUser)
	for _, o := range m.Origin.Ignored {
		kv("ignored", o)
	}
	for _, e := range m.Extra {
		if validKey(e[0]) && !knownKey(e[0]) {
			kv(e[0], e[1])
		}
	}
	sizeOff = int64(b.Len())
	b.Write(PatchSize(m.Size, m.CRC))
	b.WriteByte('\n')
	return b.Bytes(), sizeOff
}

// PatchSize returns the bytes to write at sizeOff (as returned by
// EncodeHeader) to record the final size and checksum: the lines
// "size %0*d" and "crc32c %0*x" in their fixed widths, written without
// fmt (see corruptError).
func PatchSize(size int64, crc uint32) []byte {
	if size < 0 { // never written; kept identical to fmt's rendering
		return fmt.Appendf(nil, "size %0*d\ncrc32c %0*x\n", sizeWidth, size, crcWidth, crc)
	}
	b := make([]byte, 0, len("size \ncrc32c \n")+sizeWidth+crcWidth)
	b = append(b, "size "...)
	b = appendPadded(b, strconv.AppendInt(nil, size, 10), sizeWidth)
	b = append(b, "\ncrc32c "...)
	b = appendPadded(b, strconv.AppendUint(nil, uint64(crc), 16), crcWidth)
	return append(b, '\n')
}

// appendPadded appends digits to b, after as many '0' as make it width
// bytes long.
func appendPadded(b, digits []byte, width int) []byte {
	for i := len(digits); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, digits...)
}

var known = map[string]bool{
	"id": true, "time": true, "uid": true, "gid": true, "user": true, "via": true, "mode": true,
	"sender": true, "fullname": true, "rcpt": true, "notify": true, "ret": true, "envid": true,
	"body": true, "smtputf8": true, "script": true, "script-source": true, "php-header": true,
	"php-uid-mismatch": true, "parent-pid": true, "parent-exe": true, "parent-cmdline": true,
	"parent-cwd": true, "cgroup": true, "caller": true, "ignored": true, "size": true, "crc32c": true,
	"smtp-client": true, "smtp-helo": true, "smtp-auth-user": true,
}

func knownKey(k string) bool { return known[k] }

func validKey(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// decodeReaders recycles Decode's buffers: relayd decodes every message
// at pickup and again at each delivery, and a 4 KiB buffer each time was
// a third of pickup's allocations.
var decodeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// Decode reads and validates the header of a message file of the given
// total length. It refuses unknown versions, unterminated headers and files
// whose length is not exactly header + size. It does not read the message
// bytes; use Body for that.
func Decode(r io.ReaderAt, fileSize int64) (*Meta, error) {
	// A small buffer: ReadString copes with longer lines, and relayd
	// decodes every queued message for a listing (a 64 KiB buffer per
	// message was most of the allocation of mailq over a large queue).
	br := decodeReaders.Get().(*bufio.Reader)
	br.Reset(io.NewSectionReader(r, 0, min(fileSize, maxHeader)))
	defer func() {
		br.Reset(nil)
		decodeReaders.Put(br)
	}()
	var off int64
	line := func() (string, error) {
		s, err := br.ReadString('\n')
		off += int64(len(s))
		if err == io.EOF {
			if fileSize >= maxHeader {
				return "", fmt.Errorf("%w: header longer than %d bytes", ErrCorrupt, maxHeader)
			}
			return "", ErrTruncated
		}
		if err != nil {
			return "", err
		}
		return s[:len(s)-1], nil
	}
	m, err := decodeFields(line)
	if err != nil {
		return nil, err
	}
	return m, m.placeBody(off, fileSize)
}

// placeBody sets m's body offset, the length of the header, and checks
// that the file (of fileSize bytes) holds exactly m.Size bytes after it.
func (m *Meta) placeBody(off, fileSize int64) error {
	m.BodyOffset = off
	switch {
	case fileSize-off < m.Size:
		return fmt.Errorf("%w: %d of %d message bytes", ErrTruncated, fileSize-off, m.Size)
	case fileSize-off > m.Size:
		return fmt.Errorf("%w: %d bytes after the message", ErrSize, fileSize-off-m.Size)
	}
	return nil
}

// decodeBytes is Decode of a whole file held in b (smaller than
// maxHeader): the header's lines are substrings of one copy of the
// header, not a string each.
func decodeBytes(b []byte) (*Meta, error) {
	h := b
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		h = b[:i+2]
	}
	hdr := string(h)
	var off int64
	line := func() (string, error) {
		i := strings.IndexByte(hdr, '\n')
		if i < 0 {
			return "", ErrTruncated
		}
		l := hdr[:i]
		hdr = hdr[i+1:]
		off += int64(i + 1)
		return l, nil
	}
	m, err := decodeFields(line)
	if err != nil {
		return nil, err
	}
	return m, m.placeBody(off, int64(len(b)))
}

// decodeFields parses the header lines returned by line (without their
// LF), through the empty line that ends them, and checks that the
// required fields are there.
func decodeFields(line func() (string, error)) (*Meta, error) {
	first, err := line()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(first, magic) {
		return nil, fmt.Errorf("%w: not a mailshim spool file", ErrCorrupt)
	}
	if v, err := strconv.Atoi(first[len(magic):]); err != nil || v != Version {
		return nil, fmt.Errorf("%w %q", ErrVersion, first[len(magic):])
	}
	m := &Meta{Version: Version}
	var haveSize, haveCRC, haveID, haveTime, haveUID, haveGID bool
	bad := func(k, v string) error { return fmt.Errorf("%w: bad %s %q", ErrCorrupt, k, v) }
	for {
		l, err := line()
		if err != nil {
			return nil, err
		}
		if l == "" {
			break
		}
		if haveCRC {
			return nil, fmt.Errorf("%w: field after crc32c", ErrCorrupt)
		}
		k, ev, ok := strings.Cut(l, " ")
		if !ok || !validKey(k) {
			return nil, fmt.Errorf("%w: bad header line", ErrCorrupt)
		}
		v, err := Unescape(ev)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
		}
		atoi := func() (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1<<31-1 {
				return 0, bad(k, v)
			}
			return n, nil
		}
		switch k {
		case "id":
			if !ValidID(v) {
				return nil, bad(k, v)
			}
			m.ID, haveID = v, true
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, bad(k, v)
			}
			m.Time, haveTime = t, true
		case "uid":
			if m.Origin.UID, err = idAtoi(k, v); err != nil {
				return nil, err
			}
			haveUID = true
		case "gid":
			if m.Origin.GID, err = idAtoi(k, v); err != nil {
				return nil, err
			}
			haveGID = true
		case "user":
			m.Origin.User = v
		case "via":
			m.Origin.Via = v
		case "mode":
			m.Origin.Mode = v
		case "sender":
			m.Env.Sender = v
		case "fullname":
			m.Env.FullName = v
		case "rcpt":
			m.Env.Recipients = append(m.Env.Recipients, v)
		case "notify":
			m.Env.Notify = v
		case "ret":
			m.Env.Ret = v
		case "envid":
			m.Env.EnvID = v
		case "body":
			m.Env.BodyType = v
		case "smtputf8":
			m.Env.SMTPUTF8 = v == "yes"
		case "script":
			m.Origin.Script = v
		case "script-source":
			m.Origin.ScriptSource = v
		case "php-header":
			m.Origin.PHPHeader = v
		case "php-uid-mismatch":
			m.Origin.PHPUIDMismatch = v == "yes"
		case "parent-pid":
			if m.Origin.ParentPID, err = atoi(); err != nil {
				return nil, err
			}
		case "parent-exe":
			m.Origin.ParentExe = v
		case "parent-cmdline":
			m.Origin.ParentCmdline = v
		case "parent-cwd":
			m.Origin.ParentCwd = v
		case "cgroup":
			m.Origin.Cgroup = v
		case "caller":
			m.Origin.Caller = v
		case "smtp-client":
			m.Origin.Client = v
		case "smtp-helo":
			m.Origin.Helo = v
		case "smtp-auth-user":
			m.Origin.AuthUser = v
		case "ignored":
			m.Origin.Ignored = append(m.Origin.Ignored, v)
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if len(v) != sizeWidth || err != nil || n < 0 {
				return nil, bad(k, v)
			}
			m.Size, haveSize = n, true
		case "crc32c":
			n, err := strconv.ParseUint(v, 16, 32)
			if !haveSize || len(v) != crcWidth || err != nil {
				return nil, bad(k, v)
			}
			m.CRC, haveCRC = uint32(n), true
		default:
			m.Extra = append(m.Extra, [2]string{k, v})
		}
	}
	switch {
	case !haveID:
		return nil, fmt.Errorf("%w: no id", ErrCorrupt)
	case !haveTime:
		return nil, fmt.Errorf("%w: no time", ErrCorrupt)
	case !haveUID || !haveGID:
		return nil, fmt.Errorf("%w: no uid/gid", ErrCorrupt)
	case !haveSize || !haveCRC:
		return nil, fmt.Errorf("%w: no size/crc32c", ErrCorrupt)
	}
	return m, nil
}

// DecodeHeader reads a file header (as EncodeHeader writes it) from br,
// through its empty line and no further, refusing one longer than max
// bytes. It is Decode for a stream (the submission socket), without the
// size checks, which need the whole file; nothing but the decoded fields
// is kept in memory.
func DecodeHeader(br *bufio.Reader, max int) (*Meta, error) {
	n := 0
	line := func() (string, error) {
		var b []byte
		for {
			c, err := br.ReadSlice('\n')
			n += len(c)
			if n > max {
				return "", fmt.Errorf("%w: header longer than %d bytes", ErrCorrupt, max)
			}
			b = append(b, c...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF {
				return "", ErrTruncated
			}
			if err != nil {
				return "", err
			}
			return string(b[:len(b)-1]), nil
		}
	}
	return decodeFields(line)
}

// Body returns a reader of m's message bytes in r. At the end of the bytes
// it checks the CRC-32C and returns ErrChecksum instead of io.EOF on a
// mismatch, so a reader that copies to the end never sends a corrupted
// message silently.
func (m *Meta) Body(r io.ReaderAt) io.Reader {
	return &crcReader{r: io.NewSectionReader(r, m.BodyOffset, m.Size), h: NewCRC(), want: m.CRC}
}

type crcReader struct {
	r    io.Reader
	h    hash.Hash32
	want uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	if err == io.EOF && c.h.Sum32() != c.want {
		return n, ErrChecksum
	}
	return n, err
}

// idAtoi parses a uid or gid field: a 32-bit unsigned ID as the kernel
// gives it (user namespaces map ranges at 2^31 and above), but not
// 2^32-1, which is (uid_t)-1: no ID.
func idAtoi(k, v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return 0, fmt.Errorf("%w: bad %s %q", ErrCorrupt, k, v)
	}
	return int(n), nil
}

// Escape percent-escapes '%', control bytes and DEL so that v fits on one
// header line.
func Escape(v string) string {
	need := false
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f || c == '%' {
			need = true
			break
		}
	}
	if !need {
		return v
	}
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c == 0x7f || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&0xf])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Unescape reverses Escape. It refuses raw control bytes and bad escapes.
func Unescape(v string) (string, error) {
	if !strings.ContainsAny(v, "%") {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c == 0x7f {
				return "", errors.New("raw control byte")
			}
		}
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", errors.New("raw control byte")
		case c == '%':
			if i+2 >= len(v) {
				return "", errors.New("short escape")
			}
			n, err := strconv.ParseUint(v[i+1:i+3], 16, 8)
			if err != nil {
				return "", errors.New("bad escape")
			}
			b.WriteByte(byte(n))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
