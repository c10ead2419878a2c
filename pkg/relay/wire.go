package relay

// The wire transformer: a stored message (LF line ends, anything else
// possible) in, what may go on the SMTP wire out. See the package
// documentation, "Wire safety".
//
// It walks the MIME structure line by line (boundaries, entity headers,
// message/rfc822), in two passes over the same bytes: scanMessage records,
// for each identity-encoded leaf part (7bit, 8bit, binary or no
// Content-Transfer-Encoding), whether it has lines over 998 octets, bare
// CR, NUL or 8-bit bytes; then the writer re-encodes exactly those parts as
// quoted-printable that need it (RFC 5321 4.5.3.1.6 line limit, RFC 6152
// 8BITMIME), repairs quoted-printable and base64 parts in place, folds long
// header lines, and, as a last guard for everything else (preamble,
// epilogue, unknown encodings), breaks long lines and blanks bare CR and
// NUL. Both passes are the same code, so a part's ordinal is the same in
// both.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"mime"
	"regexp"
	"strings"
	"sync"

	"github.com/mailshim/mailshim/pkg/message"
)

// WireMode says what the upstream accepts.
type WireMode struct {
	// EightBit: the upstream offers 8BITMIME; 8-bit bytes may stay.
	EightBit bool
}

const (
	maxLine         = 998       // octets per line, without CRLF (RFC 5321 4.5.3.1.6)
	qpLine          = 76        // quoted-printable line length, with the soft-break '='
	maxEntityHeader = 256 << 10 // bytes of one entity header we buffer
	maxDepth        = 32        // MIME nesting we follow; deeper is passed as is
	readBuf         = 16 << 10
)

// partInfo is what the scan learned about one identity-encoded leaf part.
type partInfo struct {
	longLine, bareCR, nul, eightBit bool
}

func (p partInfo) needsQP(mode WireMode) bool {
	return p.longLine || p.bareCR || p.nul || (p.eightBit && !mode.EightBit)
}

// plan is the result of the scan.
type plan struct {
	parts []partInfo
	// stuck8bit: 8-bit bytes where they cannot be converted (a header, a
	// preamble or epilogue, a base64 or unknown-encoding part).
	stuck8bit bool
	any8bit   bool
	lines     int64
	size      int64
	// clean: the message, held in memory, has nothing the transformer
	// changes (plain: 7-bit, no CR, no NUL, no line over cleanLine
	// octets), so it goes out as it is but for CRLF line ends; scanBody
	// found that without walking it, and render writes it so.
	clean bool
}

// cleanLine bounds the lines of a plain message: well below the 998
// octets of the wire, so that no part (a quoted-printable one, whose
// repair breaks a line a few octets before 998) is changed either.
const cleanLine = 900

// plain reports whether b (a whole message) is 7-bit without CR and NUL,
// with no line over cleanLine octets: what every walker pass leaves as it
// is but for CRLF line ends, whatever its MIME structure.
func plain(b []byte) bool {
	if bytes.IndexByte(b, '\r') >= 0 || bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	var or uint64
	i := 0
	for ; i+8 <= len(b); i += 8 {
		or |= binary.LittleEndian.Uint64(b[i:])
	}
	for ; i < len(b); i++ {
		or |= uint64(b[i])
	}
	if or&0x8080808080808080 != 0 {
		return false
	}
	for len(b) > cleanLine {
		i := bytes.IndexByte(b[:cleanLine+1], '\n')
		if i < 0 {
			return false
		}
		b = b[i+1:]
	}
	return true
}

// wireSize estimates the size of the message on the wire (CRLF line ends).
func (p *plan) wireSize() int64 { return p.size + p.lines }

// scanMessage is the first pass.
func scanMessage(r io.Reader) (*plan, error) {
	w := newWalker(r, nil, WireMode{})
	defer w.release()
	for {
		if err := w.step(); err != nil {
			if err == io.EOF {
				return w.plan, nil
			}
			return nil, err
		}
	}
}

// The walkers' read buffers and output buffers are reused from message
// to message: a relay session sends thousands of messages, and a fresh
// 16 KB reader twice and a 32 KB output buffer per message were most of
// the drain's allocation (and so of its garbage collection).
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBuf) }}
	outPool    = sync.Pool{New: func() any { b := make([]byte, 0, 2*readBuf); return &b }}
	hdrPool    = sync.Pool{New: func() any { return &hdrBufs{buf: make([]byte, 0, 1024)} }}
)

// hdrBufs are a walker's buffers for entity headers (walker.hdrBuf,
// hdrLines, fields), pooled like the others.
type hdrBufs struct {
	buf    []byte
	lines  [][]byte
	fields []field
}

// hdrPoolMax bounds the header buffer a walker gives back to the pool.
const hdrPoolMax = 64 << 10

// release returns the walker's buffers to their pools; the walker is not
// used after it.
func (w *walker) release() {
	if w.br != nil {
		w.br.Reset(nil)
		readerPool.Put(w.br)
		w.br = nil
	}
	if w.out != nil && cap(w.out) <= 4*readBuf {
		out := w.out[:0]
		outPool.Put(&out)
	}
	w.out = nil
	if w.hdr != nil {
		if cap(w.hdrBuf) <= hdrPoolMax {
			clear(w.hdrLines[:cap(w.hdrLines)])
			clear(w.fields[:cap(w.fields)])
			*w.hdr = hdrBufs{buf: w.hdrBuf[:0], lines: w.hdrLines[:0], fields: w.fields[:0]}
			hdrPool.Put(w.hdr)
		}
		w.hdr, w.hdrBuf, w.hdrLines, w.fields = nil, nil, nil, nil
	}
}

// ErrStuck8bit is returned for a message with 8-bit bytes in a header (or
// another place that cannot be re-encoded) for an upstream without 8BITMIME.
var ErrStuck8bit = errors.New("the message has 8-bit bytes in a header (or another place that cannot be re-encoded) and the upstream does not offer 8BITMIME")

// source is a message's bytes as the two passes read them. A message of
// at most heldMax bytes is read from its store once, into a pooled
// buffer, and both passes read that buffer (one read and one checksum
// instead of two); a bigger one is streamed from its store by each pass.
type source struct {
	open func() (io.Reader, error)
	held *[]byte // the whole message, when it fit
}

// heldMax bounds the message a source holds in memory.
const heldMax = readBuf

var heldPool = sync.Pool{New: func() any { b := make([]byte, heldMax); return &b }}

func (s *source) reader() (io.Reader, error) {
	if s.held != nil {
		return bytes.NewReader(*s.held), nil
	}
	return s.open()
}

// release returns the held buffer to its pool; no reader of it may be in
// use.
func (s *source) release() {
	if s.held != nil {
		b := (*s.held)[:heldMax]
		heldPool.Put(&b)
		s.held = nil
	}
}

// scanBody is the first pass over the message body returns; the source
// it returns gives the second pass the same bytes (release it after).
func scanBody(body func() (io.Reader, error)) (*plan, *source, error) {
	r, err := body()
	if err != nil {
		return nil, nil, err
	}
	defer closeReader(r)
	src := &source{open: body}
	buf := heldPool.Get().(*[]byte)
	n, err := io.ReadFull(r, (*buf)[:heldMax])
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		// The whole message (its checksum verified at the end by the
		// store's reader) is in buf.
		*buf = (*buf)[:n]
		src.held = buf
		if plain(*buf) {
			return &plan{clean: true, size: int64(n), lines: int64(bytes.Count(*buf, []byte("\n")))}, src, nil
		}
		p, err := scanMessage(bytes.NewReader(*buf))
		if err != nil {
			src.release()
			return nil, nil, err
		}
		return p, src, nil
	case nil:
		// Too big to hold: scan what was read and the rest, stream it
		// again for the second pass.
		p, err := scanMessage(io.MultiReader(bytes.NewReader((*buf)[:n]), r))
		heldPool.Put(buf)
		if err != nil {
			return nil, nil, err
		}
		return p, src, nil
	default:
		heldPool.Put(buf)
		return nil, nil, err
	}
}

func openWire(src *source, p *plan, mode WireMode) (io.ReadCloser, error) {
	r, err := src.reader()
	if err != nil {
		return nil, err
	}
	return &wireReader{w: newWalker(r, p, mode), src: r}, nil
}

func closeReader(r io.Reader) {
	if c, ok := r.(io.Closer); ok {
		c.Close()
	}
}

type wireReader struct {
	w   *walker
	src io.Reader
	err error
}

// WriteTo writes the converted message to dst in chunks of at least
// readBuf bytes (io.Copy uses it): one write per chunk rather than one
// per line, so a small message is one write, and no copy buffer.
func (wr *wireReader) WriteTo(dst io.Writer) (int64, error) {
	w := wr.w
	var total int64
	flush := func() error {
		if w.pos == len(w.out) {
			return nil
		}
		n, err := dst.Write(w.out[w.pos:])
		total += int64(n)
		w.pos += n
		if err == nil && w.pos < len(w.out) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return err
		}
		w.out, w.pos = w.out[:0], 0
		return nil
	}
	for wr.err == nil {
		if len(w.out)-w.pos >= readBuf {
			if err := flush(); err != nil {
				return total, err
			}
		}
		wr.err = w.step()
	}
	if err := flush(); err != nil {
		return total, err
	}
	if wr.err == io.EOF {
		return total, nil
	}
	return total, wr.err
}

func (wr *wireReader) Read(b []byte) (int, error) {
	w := wr.w
	for w.pos == len(w.out) {
		if wr.err != nil {
			return 0, wr.err
		}
		w.out, w.pos = w.out[:0], 0
		wr.err = w.step()
	}
	n := copy(b, w.out[w.pos:])
	w.pos += n
	return n, nil
}

func (wr *wireReader) Close() error {
	closeReader(wr.src)
	if wr.w != nil {
		wr.w.release()
		wr.w = nil
	}
	return nil
}

// Body kinds: how the lines of the current body are treated.
const (
	kindRaw      = iota // passed through the guard
	kindIdentity        // an identity-encoded leaf: scanned; passed through when writing
	kindQPEncode        // writing: re-encode as quoted-printable
	kindQPFix           // a quoted-printable part: escape and soft-break in place
	kindB64Fix          // a base64 part: drop CR/NUL, break long lines
)

type walker struct {
	br   *bufio.Reader
	scan bool // first pass: fill plan, write nothing
	plan *plan
	mode WireMode

	out []byte // output; out[pos:] is pending
	pos int

	// Input line state.
	midLine   bool // the next fragment continues a line
	pendingCR bool // a fragment ended in CR: a line end if LF follows
	lineBody  bool // the current line is body (not header)

	// MIME state.
	inHeader  bool
	hdrLines  [][]byte // current entity header, physical lines without EOL
	hdrBuf    []byte   // the bytes hdrLines point into (one buffer, not one per line)
	fields    []field  // splitFields' result, reused from header to header
	hdr       *hdrBufs // where hdrBuf, hdrLines and fields came from (release)
	hdrSize   int
	hdrOpaque bool // header overflowed: its lines are written as they come
	msgRoot   bool // the current entity is a message (top or message/rfc822)
	depth     int
	stack     []string // boundaries of the enclosing multiparts
	kind      int
	leaf      int // ordinal of the current identity leaf, -1 if none
	nextLeaf  int

	lineLen int  // input line length so far (scan)
	col     int  // output column
	qpWS    byte // quoted-printable: held whitespace (encoded if it ends the line)
	escLeft int  // quoted-printable fix: bytes left in an =XX escape
}

func newWalker(r io.Reader, p *plan, mode WireMode) *walker {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	hdr := hdrPool.Get().(*hdrBufs)
	w := &walker{
		br:       br,
		hdr:      hdr,
		hdrBuf:   hdr.buf,
		hdrLines: hdr.lines,
		fields:   hdr.fields,
		plan:     p,
		mode:     mode,
		inHeader: true,
		msgRoot:  true,
		leaf:     -1,
	}
	if p == nil {
		w.scan = true
		w.plan = &plan{}
	} else {
		w.out = (*outPool.Get().(*[]byte))[:0]
	}
	return w
}

func (w *walker) emit(b []byte) {
	if !w.scan {
		w.out = append(w.out, b...)
	}
}

func (w *walker) emitString(s string) {
	if !w.scan {
		w.out = append(w.out, s...)
	}
}

func (w *walker) crlf() {
	w.emitString("\r\n")
	w.col = 0
}

// step processes one input fragment; io.EOF at the end.
func (w *walker) step() error {
	frag, err := w.br.ReadSlice('\n')
	if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
		return err
	}
	w.plan.size += int64(len(frag))
	complete := len(frag) > 0 && frag[len(frag)-1] == '\n'
	content := frag
	if complete {
		w.plan.lines++
		content = frag[:len(frag)-1]
	}
	if w.pendingCR {
		w.pendingCR = false
		if len(content) > 0 || !complete {
			// The CR held back was a bare one.
			w.piece([]byte{'\r'}, w.midLine, false)
			w.midLine = true
		}
		// else: CR then LF across two fragments, a line end.
	}
	if n := len(content); n > 0 && content[n-1] == '\r' {
		content = content[:n-1]
		if !complete {
			w.pendingCR = true
		}
	}
	if err == io.EOF && !complete {
		if w.pendingCR {
			w.pendingCR = false
			content = append(append([]byte(nil), content...), '\r')
		}
		if len(content) > 0 || w.midLine {
			w.piece(content, w.midLine, true) // a last line without LF
		}
		w.midLine = false
		if w.inHeader {
			w.endHeader(false)
		}
		return io.EOF
	}
	if len(content) > 0 || complete {
		w.piece(content, w.midLine, complete)
	}
	w.midLine = !complete
	return nil
}

// piece handles the bytes of one line fragment (no EOL): cont says they
// continue a line already started, complete that the line ends here.
func (w *walker) piece(b []byte, cont, complete bool) {
	if !cont {
		w.lineLen = 0
		for i := 0; w.inHeader && i <= maxDepth; i++ {
			if len(b) == 0 && complete {
				w.endHeader(true) // the blank line ends the header
				return
			}
			if w.hdrOpaque || isHeaderLine(b, len(w.hdrLines) > 0) {
				break
			}
			// Not a header field: the header ended without a blank line
			// (as Postfix's cleanup reads it); this line is body — or
			// the start of a nested message's header.
			w.endHeader(false)
		}
		w.lineBody = !w.inHeader
		if w.lineBody && complete && w.boundary(b) {
			return
		}
	}
	if w.lineBody {
		w.bodyBytes(b)
		if complete {
			w.bodyEOL()
		}
		return
	}
	w.headerBytes(b, cont)
	if complete && w.hdrOpaque {
		w.crlf()
	}
}

// isHeaderLine reports whether b can be a header field line: "name:" with
// a printable name, or a continuation of a previous field.
func isHeaderLine(b []byte, havePrev bool) bool {
	if len(b) == 0 {
		return false
	}
	if b[0] == ' ' || b[0] == '\t' {
		return havePrev
	}
	for i, c := range b {
		if c == ':' {
			return i > 0
		}
		if c < 33 || c > 126 {
			return false
		}
	}
	return false
}

// boundary handles b if it is a delimiter line of an enclosing multipart.
func (w *walker) boundary(b []byte) bool {
	if len(w.stack) == 0 || len(b) < 3 || b[0] != '-' || b[1] != '-' {
		return false
	}
	line := string(bytes.TrimRight(b[2:], " \t"))
	for i := len(w.stack) - 1; i >= 0; i-- {
		bd := w.stack[i]
		if !strings.HasPrefix(line, bd) {
			continue
		}
		rest := line[len(bd):]
		if rest != "" && rest != "--" {
			continue
		}
		w.guardBytes(b)
		w.crlf()
		w.leaf = -1
		w.qpWS, w.escLeft = 0, 0
		if rest == "--" {
			w.stack = w.stack[:i]
			w.kind = kindRaw // the epilogue
			return true
		}
		w.stack = w.stack[:i+1]
		w.depth = i + 1
		w.startHeader(false)
		return true
	}
	return false
}

func (w *walker) startHeader(msgRoot bool) {
	w.inHeader = true
	w.hdrLines = w.hdrLines[:0]
	w.hdrBuf = w.hdrBuf[:0]
	w.hdrSize = 0
	w.hdrOpaque = false
	w.msgRoot = msgRoot
}

func (w *walker) headerBytes(b []byte, cont bool) {
	for _, c := range b {
		if c >= 0x80 {
			w.plan.stuck8bit = true
			w.plan.any8bit = true
			break
		}
	}
	if w.hdrOpaque {
		w.guardBytes(b)
		return
	}
	w.hdrSize += len(b)
	if w.hdrSize > maxEntityHeader {
		// Too big to buffer: write what we have, then pass the rest.
		w.hdrOpaque = true
		for _, l := range w.hdrLines {
			w.headerLine(l)
		}
		w.hdrLines = w.hdrLines[:0]
		w.hdrBuf = w.hdrBuf[:0]
		w.guardBytes(b)
		return
	}
	// The lines are copied into one buffer, each the slice of it that
	// holds it: the last line is always at its end, so a fragment that
	// continues it extends it there. A buffer that grows leaves the
	// lines before in the old array, unchanged, still theirs.
	if cont && len(w.hdrLines) > 0 {
		last := len(w.hdrLines) - 1
		start := len(w.hdrBuf) - len(w.hdrLines[last])
		w.hdrBuf = append(w.hdrBuf, b...)
		w.hdrLines[last] = w.hdrBuf[start:len(w.hdrBuf):len(w.hdrBuf)]
		return
	}
	start := len(w.hdrBuf)
	w.hdrBuf = append(w.hdrBuf, b...)
	w.hdrLines = append(w.hdrLines, w.hdrBuf[start:len(w.hdrBuf):len(w.hdrBuf)])
}

// endHeader ends the current entity's header (blank says whether a blank
// line ended it) and decides how its body is treated.
func (w *walker) endHeader(blank bool) {
	w.inHeader = false
	w.leaf = -1
	w.kind = kindRaw
	w.col = 0
	if w.hdrOpaque {
		if blank {
			w.crlf()
		}
		return
	}
	var ctype, boundary, cte string
	var haveMIMEVersion bool
	fields := splitFields(w.fields[:0], w.hdrLines)
	w.fields = fields
	for _, f := range fields {
		switch f.name {
		case "content-type":
			ctype, boundary = parseContentType(f.value)
		case "content-transfer-encoding":
			cte = strings.ToLower(strings.TrimSpace(f.value))
		case "mime-version":
			haveMIMEVersion = true
		}
	}
	identity := cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary"
	var nested bool
	var dropCTE bool
	var add []string
	switch {
	case strings.HasPrefix(ctype, "multipart/") && boundary != "" && len(w.stack) < maxDepth:
		defer func() { w.stack = append(w.stack, boundary) }()
	case strings.HasPrefix(ctype, "multipart/"):
		// Without a usable boundary (or nested too deep): passed as it
		// is, through the guard, never re-encoded as a whole.
	case (ctype == "message/rfc822" || ctype == "message/global") && identity && w.depth < maxDepth:
		nested = true
	case identity:
		w.leaf = w.nextLeaf
		w.nextLeaf++
		w.kind = kindIdentity
		if w.scan {
			w.plan.parts = append(w.plan.parts, partInfo{})
		} else if w.leaf < len(w.plan.parts) && w.plan.parts[w.leaf].needsQP(w.mode) {
			w.kind = kindQPEncode
			dropCTE = true
			add = append(add, "Content-Transfer-Encoding: quoted-printable")
			if w.msgRoot && !haveMIMEVersion {
				add = append(add, "MIME-Version: 1.0")
			}
		}
	case cte == "quoted-printable":
		w.kind = kindQPFix
	case cte == "base64":
		w.kind = kindB64Fix
	}
	for _, f := range fields {
		if dropCTE && f.name == "content-transfer-encoding" {
			continue
		}
		for _, l := range w.hdrLines[f.first:f.end] {
			w.headerLine(l)
		}
	}
	for _, a := range add {
		w.headerLine([]byte(a))
	}
	if blank {
		w.crlf()
	}
	if nested {
		w.depth++
		w.startHeader(true)
	}
}

type field struct {
	name       string // lower case
	value      string // unfolded
	first, end int    // physical lines [first, end)
}

// mimeFields are the header fields splitFields names: the only ones the
// walker looks at.
var mimeFields = [...]string{"content-type", "content-transfer-encoding", "mime-version"}

// splitFields appends the fields of the header lines to fs. Only the
// fields of mimeFields get a name (lower case) and a value.
func splitFields(fs []field, lines [][]byte) []field {
	for i, l := range lines {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') && len(fs) > 0 {
			fs[len(fs)-1].end = i + 1
			continue
		}
		// The field-name rule of package message ("Name :" included); a
		// line that is not a field has no name.
		name := ""
		if n := message.ParseFieldName(l); n >= 0 {
			for _, m := range mimeFields {
				if len(m) == n && strings.EqualFold(m, string(l[:n])) {
					name = m
					break
				}
			}
		}
		fs = append(fs, field{name: name, first: i, end: i + 1})
	}
	for i := range fs {
		f := &fs[i]
		switch f.name {
		case "content-type", "content-transfer-encoding", "mime-version":
		default:
			continue
		}
		var b strings.Builder
		_, v, _ := bytes.Cut(lines[f.first], []byte(":"))
		b.Write(bytes.TrimSpace(v))
		for _, l := range lines[f.first+1 : f.end] {
			b.WriteByte(' ')
			b.Write(bytes.TrimSpace(l))
		}
		f.value = b.String()
	}
	return fs
}

var boundaryParam = regexp.MustCompile(`(?i);\s*boundary\s*=\s*(?:"([^"]+)"|([^\s;"]+))`)

// parseContentType returns the media type and the boundary, salvaging
// both from a value mime.ParseMediaType refuses (as mail readers do).
func parseContentType(v string) (ctype, boundary string) {
	mt, params, err := mime.ParseMediaType(v)
	if err == nil {
		return mt, params["boundary"]
	}
	mt, _, _ = strings.Cut(v, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if m := boundaryParam.FindStringSubmatch(v); m != nil {
		boundary = m[1] + m[2]
	}
	return mt, boundary
}

// headerLine writes one physical header line: CR and NUL blanked, and
// folded at white space (or, failing that, hard) to at most 998 octets.
func (w *walker) headerLine(l []byte) {
	if w.scan {
		return
	}
	if len(l) <= maxLine {
		// The common case, written in place: CR and NUL blanked in the
		// output.
		at := len(w.out)
		w.out = append(w.out, l...)
		for i, c := range w.out[at:] {
			if c == '\r' || c == 0 {
				w.out[at+i] = ' '
			}
		}
		w.crlf()
		return
	}
	line := make([]byte, len(l))
	for i, c := range l {
		if c == '\r' || c == 0 {
			c = ' '
		}
		line[i] = c
	}
	for len(line) > maxLine {
		cut := -1
		for i := maxLine - 1; i > 1; i-- {
			if line[i] == ' ' || line[i] == '\t' {
				cut = i
				break
			}
		}
		if cut < 0 {
			// No white space to fold at: break the line and continue it
			// with a space (the value gains a space; it stays whole).
			w.emit(line[:maxLine-1])
			w.crlf()
			line = append([]byte{' '}, line[maxLine-1:]...)
			continue
		}
		w.emit(line[:cut])
		w.crlf()
		line = line[cut:]
	}
	w.emit(line)
	w.crlf()
}

// bodyBytes handles body bytes of the current line.
func (w *walker) bodyBytes(b []byte) {
	if w.scan {
		w.scanBody(b)
		return
	}
	switch w.kind {
	case kindQPEncode:
		for _, c := range b {
			w.qpByte(c)
		}
	case kindQPFix:
		for _, c := range b {
			w.qpFixByte(c)
		}
	case kindB64Fix:
		for _, c := range b {
			if c == '\r' || c == 0 {
				continue
			}
			if w.col >= maxLine {
				w.crlf()
			}
			w.out = append(w.out, c)
			w.col++
		}
	default:
		w.guardBytes(b)
	}
}

func (w *walker) scanBody(b []byte) {
	w.lineLen += len(b)
	switch w.kind {
	case kindIdentity:
		if w.leaf < 0 || w.leaf >= len(w.plan.parts) {
			return
		}
		p := &w.plan.parts[w.leaf]
		if w.lineLen > maxLine {
			p.longLine = true
		}
		for _, c := range b {
			switch {
			case c == '\r':
				p.bareCR = true
			case c == 0:
				p.nul = true
			case c >= 0x80:
				p.eightBit = true
				w.plan.any8bit = true
			}
		}
	case kindQPFix:
		for _, c := range b {
			if c >= 0x80 {
				w.plan.any8bit = true
				break
			}
		}
	default:
		for _, c := range b {
			if c >= 0x80 {
				w.plan.any8bit = true
				w.plan.stuck8bit = true
				break
			}
		}
	}
}

func (w *walker) bodyEOL() {
	switch w.kind {
	case kindQPEncode:
		if w.qpWS != 0 {
			w.qpPut(w.qpWS, true)
			w.qpWS = 0
		}
	case kindQPFix:
		w.escLeft = 0
	}
	w.crlf()
}

// guardBytes is the last line of defence: lines broken at 998 octets,
// bare CR and NUL blanked.
func (w *walker) guardBytes(b []byte) {
	if w.scan {
		return
	}
	for len(b) > 0 {
		room := maxLine - w.col
		if room <= 0 {
			w.crlf()
			room = maxLine
		}
		n := min(room, len(b))
		chunk := b[:n]
		if bytes.IndexByte(chunk, '\r') < 0 && bytes.IndexByte(chunk, 0) < 0 {
			w.out = append(w.out, chunk...)
		} else {
			for _, c := range chunk {
				if c == '\r' || c == 0 {
					c = ' '
				}
				w.out = append(w.out, c)
			}
		}
		w.col += n
		b = b[n:]
	}
}

const hexDigits = "0123456789ABCDEF"

// qpByte encodes one byte as quoted-printable (RFC 2045 6.7); input line
// ends become hard line breaks (CRLF).
func (w *walker) qpByte(c byte) {
	if w.qpWS != 0 {
		ws := w.qpWS
		w.qpWS = 0
		w.qpPut(ws, false) // followed by something: may stay literal
	}
	switch {
	case c == ' ' || c == '\t':
		w.qpWS = c
	case c >= 33 && c <= 126 && c != '=':
		w.qpPut(c, false)
	default:
		w.qpPut(c, true)
	}
}

// qpPut writes c, literally or as =XX, with a soft line break first if
// the line would grow past 76 octets.
func (w *walker) qpPut(c byte, escape bool) {
	n := 1
	if escape {
		n = 3
	}
	if w.col+n > qpLine-1 {
		w.out = append(w.out, "=\r\n"...)
		w.col = 0
	}
	if escape {
		w.out = append(w.out, '=', hexDigits[c>>4], hexDigits[c&15])
	} else {
		w.out = append(w.out, c)
	}
	w.col += n
}

// qpFixByte passes a quoted-printable part's byte, escaping what must not
// be raw (CR, NUL; 8-bit bytes for a 7-bit upstream) and adding a soft
// line break where a line would pass 998 octets. It never breaks inside an
// =XX escape; a raw byte that must be escaped ends a (broken) escape.
func (w *walker) qpFixByte(c byte) {
	esc := c == '\r' || c == 0 || (c >= 0x80 && !w.mode.EightBit)
	n := 1
	if esc {
		n = 3
		w.escLeft = 0
	}
	if w.escLeft == 0 {
		need := n
		if c == '=' {
			need = 3 // the whole escape stays on this line
		}
		if w.col+need > maxLine-1 {
			w.out = append(w.out, '=')
			w.crlf()
		}
	}
	switch {
	case c == '=' && !esc:
		w.escLeft = 2
	case w.escLeft > 0:
		w.escLeft--
	}
	if esc {
		w.out = append(w.out, '=', hexDigits[c>>4], hexDigits[c&15])
	} else {
		w.out = append(w.out, c)
	}
	w.col += n
}
