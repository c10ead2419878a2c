package spool

// The state journal (queue/journal): one line per change of the queue,
// appended, never rewritten in place.
//
//	<8 hex digits: CRC-32C of the JSON> <JSON>\n
//
// The JSON is one of
//
//	{"op":"add","id":ID,"st":STATE,"seg":N,"off":O,"len":L,"dur":D,"uid":U,"d":{Delivery}}
//	{"op":"set","id":ID,"st":STATE,"d":{Delivery}}   a new record (the whole record)
//	{"op":"mv","id":ID,"st":STATE}                    a transition, keeping the record
//	{"op":"loc","id":ID,"seg":N,"off":O,"len":L,"dur":D} moved by segment compaction
//	{"op":"del","id":ID}
//	{"op":"pol","acct":KEY,"p":{...}}                the policy's state of one account
//	{"op":"pol","acct":KEY}                           the account has nothing left to remember
//
// ("d" is left out when the record is empty). "dur" is how much of the
// segment was known durable (fdatasynced) when the line was written: Sync
// makes the segments and the journal durable at the same time, so a power
// loss may leave an add line durable and its message's bytes not (nothing
// was acknowledged for it: its Sync had not returned). Recover checks the
// messages lying beyond the largest "dur" the lines state for their
// segment, and only those. A line without "dur" (a loc line of
// compaction, which made the bytes durable before it; an add line whose
// message was durable, as in a rewrite; any line of a relayd that synced
// the segments before the journal) states that its own message is
// durable. Once a Sync has made a segment's last messages durable, a loc
// line naming a message's present place states so (stateDurableLocked:
// at the next Maintain, and at Close), so that a queue at rest has
// nothing left to check. Older relayds ignore the field. A "pol" line carries the
// per-account policy counters (pkg/policy) in the policy's own JSON,
// which the queue keeps opaque: one line per account changed, so a line
// stays small however many accounts there are, and the counters are
// made durable by the same Sync as the messages they counted. Replaying the lines in order
// gives the queue: the last line about an ID wins. A line whose CRC or JSON
// is bad is skipped (a crash can tear the last line, and a power loss can
// leave a block of zeros or stale bytes among the lines written since the
// last fdatasync: those were never promised to anyone); replay goes on at
// the next line, so one damaged block costs the changes it held, never the
// queue after it. Before relayd appends, it truncates an unterminated tail.
//
// Beyond the last line the file holds zeros written ahead of it (its zero
// tail, see journalReserve), which lines are written over. Zeros where a
// line would start, with nothing after them, are the journal's end: not a
// torn line, not a damaged one. A torn line followed by zeros is a torn
// tail. (An older relayd takes a zero tail for a torn last line and cuts
// it off: nothing is lost.)

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// JournalFile is the state journal, relative to the spool root.
const JournalFile = DirQueue + "/journal"

// journalNew is the temporary file a rewrite of the journal is written to.
const journalNew = DirQueue + "/journal.new"

// maxJournalLine bounds one line (a delivery record with many recipients).
const maxJournalLine = 16 << 20

// jrec is one journal line decoded.
type jrec struct {
	Op  string          `json:"op"`
	ID  string          `json:"id"`
	St  string          `json:"st"`
	Seg uint64          `json:"seg"`
	Off int64           `json:"off"`
	Len int64           `json:"len"`
	Dur *int64          `json:"dur"` // nil: the message itself is durable
	UID int             `json:"uid"`
	D   json.RawMessage `json:"d"`
	// Acct and P are a "pol" line's account key and state.
	Acct string          `json:"acct"`
	P    json.RawMessage `json:"p"`
}

// stateIndex returns the index of s in States, or -1.
func stateIndex(s string) int {
	for i, x := range States {
		if x == s {
			return i
		}
	}
	return -1
}

// emptyDelivery is the JSON of an empty record, which is stored as nil (a
// constant: nothing is run at sendmail's initialisation).
const emptyDelivery = `{"attempts":0}`

// encodeDelivery returns the JSON of d, nil for an empty record.
func encodeDelivery(d *Delivery) ([]byte, error) {
	if d == nil {
		return nil, nil
	}
	b, ok := appendDelivery(make([]byte, 0, 192), d)
	if !ok {
		var err error
		if b, err = json.Marshal(d); err != nil {
			return nil, err
		}
	}
	if string(b) == emptyDelivery {
		return nil, nil
	}
	return b, nil
}

// appendDelivery appends to b the JSON json.Marshal gives for d, without
// reflection, for the records a delivery writes for every message (the
// attempt's: counts, times, upstream, a reply): ok is false, and the
// caller marshals d, when d lists recipients or bounces, or has a time
// RFC 3339 cannot hold or a string json.Marshal would escape.
func appendDelivery(b []byte, d *Delivery) ([]byte, bool) {
	if len(d.Sent) > 0 || len(d.Failed) > 0 || len(d.Bounces) > 0 {
		return b, false
	}
	b = append(b, `{"attempts":`...)
	b = strconv.AppendInt(b, int64(d.Attempts), 10)
	for _, f := range [...]struct {
		key string
		t   time.Time
	}{{"first_attempt", d.First}, {"last_attempt", d.Last}, {"next_attempt", d.Next}} {
		if f.t.IsZero() {
			continue
		}
		// What time.Time.MarshalJSON refuses (and json.Marshal with it).
		_, off := f.t.Zone()
		if y := f.t.Year(); y < 0 || y > 9999 || off <= -24*3600 || off >= 24*3600 {
			return b, false
		}
		b = append(b, `,"`...)
		b = append(b, f.key...)
		b = append(b, `":"`...)
		b = f.t.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	for _, f := range [...]struct{ key, v string }{
		{"last_reply", d.LastReply}, {"upstream", d.Upstream}, {"delay_notice", d.DelayNotice}, {"reason", d.Reason},
	} {
		if f.v == "" {
			continue
		}
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return b, false
			}
		}
		b = append(b, `,"`...)
		b = append(b, f.key...)
		b = append(b, `":"`...)
		b = append(b, f.v...)
		b = append(b, '"')
	}
	if d.Paced {
		b = append(b, `,"paced":true`...)
	}
	return append(b, '}'), true
}

// decodeDelivery returns the record b holds (an empty one for nil).
func decodeDelivery(b []byte) (*Delivery, error) {
	d := new(Delivery)
	if len(b) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, err
	}
	return d, nil
}

// line frames the JSON in b (built after 9 reserved bytes) as a journal
// line: the CRC in front, a newline behind.
func frame(b []byte) []byte {
	sum := updateCRC(0, b[9:])
	const hexd = "0123456789abcdef"
	for i := 7; i >= 0; i-- {
		b[i] = hexd[sum&0xf]
		sum >>= 4
	}
	b[8] = ' '
	return append(b, '\n')
}

func lineStart(op, id string) []byte {
	b := make([]byte, 9, 160)
	b = append(b, `{"op":"`...)
	b = append(b, op...)
	b = append(b, `","id":"`...)
	b = append(b, id...)
	b = append(b, '"')
	return b
}

// addLine is the add line of e, whose segment was known durable up to
// dur: the field is left out when that covers the message.
func addLine(id string, e *entry, dur int64) []byte {
	b := appendState(lineStart("add", id), e.st)
	b = appendLoc(b, e.seg, e.off, e.len)
	b = appendDur(b, dur, e.off, e.len)
	b = append(b, `,"uid":`...)
	b = strconv.AppendUint(b, uint64(e.uid), 10)
	return frame(appendRecord(b, e.d))
}

func setLine(id string, st uint8, d []byte) []byte {
	return frame(appendRecord(appendState(lineStart("set", id), st), d))
}

func mvLine(id string, st uint8) []byte {
	return frame(append(appendState(lineStart("mv", id), st), '}'))
}

// locLine is the loc line of message id, at off in segment seg (n
// bytes), whose segment is known durable up to dur: the field is left out
// when that covers the message. A loc line naming the place a message is
// at already changes nothing but states dur (see stateDurableLocked).
func locLine(id string, seg uint64, off, n, dur int64) []byte {
	b := appendLoc(lineStart("loc", id), seg, off, n)
	return frame(append(appendDur(b, dur, off, n), '}'))
}

// appendDur appends a line's "dur" field, dur, unless the first dur bytes
// of the segment hold the line's message (n bytes at off).
func appendDur(b []byte, dur, off, n int64) []byte {
	if covers(dur, off, n) {
		return b
	}
	b = append(b, `,"dur":`...)
	return strconv.AppendInt(b, max(dur, 0), 10)
}

// appendState appends a line's "st" field.
func appendState(b []byte, st uint8) []byte {
	b = append(b, `,"st":"`...)
	b = append(b, States[st]...)
	return append(b, '"')
}

// appendLoc appends a line's "seg", "off" and "len" fields.
func appendLoc(b []byte, seg uint64, off, n int64) []byte {
	b = append(b, `,"seg":`...)
	b = strconv.AppendUint(b, seg, 10)
	b = append(b, `,"off":`...)
	b = strconv.AppendInt(b, off, 10)
	b = append(b, `,"len":`...)
	return strconv.AppendInt(b, n, 10)
}

// appendRecord appends the "d" field when the record d is not empty, and
// closes the JSON object.
func appendRecord(b, d []byte) []byte {
	if len(d) > 0 {
		b = append(b, `,"d":`...)
		b = append(b, d...)
	}
	return append(b, '}')
}

func delLine(id string) []byte {
	return frame(append(lineStart("del", id), '}'))
}

// polLine is the line of account key's policy state p (nil: forgotten).
// The key is the policy's (an account's decimal UID), checked by
// validAcct; p is JSON the caller produced (json.Marshal: no newline).
func polLine(key string, p []byte) []byte {
	b := make([]byte, 9, 32+len(key)+len(p))
	b = append(b, `{"op":"pol","acct":"`...)
	b = append(b, key...)
	b = append(b, '"')
	if len(p) > 0 {
		b = append(b, `,"p":`...)
		b = append(b, p...)
	}
	return frame(append(b, '}'))
}

// validAcct reports whether k may be a "pol" line's account key: 1 to 20
// bytes of ASCII letters, digits, '-', '_', ':' or '.' (nothing to escape
// in JSON).
func validAcct(k string) bool {
	if len(k) == 0 || len(k) > 20 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

// parseLine checks and decodes one journal line (without its newline).
func parseLine(l []byte) (*jrec, error) {
	l = bytes.TrimLeft(l, "\x00")
	if len(l) < 10 || l[8] != ' ' {
		return nil, errors.New("malformed line")
	}
	want, err := strconv.ParseUint(string(l[:8]), 16, 32)
	if err != nil {
		return nil, errors.New("malformed checksum")
	}
	if updateCRC(0, l[9:]) != uint32(want) {
		return nil, errors.New("checksum mismatch")
	}
	r := new(jrec)
	if err := json.Unmarshal(l[9:], r); err != nil {
		return nil, err
	}
	if r.Op == "pol" {
		if !validAcct(r.Acct) {
			return nil, fmt.Errorf("bad policy account %q", r.Acct)
		}
		if string(r.P) == "null" {
			r.P = nil
		}
		return r, nil
	}
	if !ValidID(r.ID) {
		return nil, fmt.Errorf("bad queue id %q", r.ID)
	}
	switch r.Op {
	case "add", "set", "mv":
		if stateIndex(r.St) < 0 {
			return nil, fmt.Errorf("unknown state %q", r.St)
		}
	case "loc", "del":
	default:
		return nil, fmt.Errorf("unknown op %q", r.Op)
	}
	if len(r.D) > 0 && (string(r.D) == "null" || string(r.D) == emptyDelivery) {
		r.D = nil
	}
	return r, nil
}

// replayResult is what a replay found besides the entries.
type replayResult struct {
	good int64    // offset just after the last complete line
	seg  uint64   // the highest segment number a good line names
	bad  []string // one description per line skipped
	tail bool     // an unterminated last line (a torn append)
	// dur is, per segment, the largest size the good add and loc lines
	// state durable (see "dur" above).
	dur map[uint64]int64
}

// covers reports whether the first dur bytes of a segment hold the n
// bytes at off.
func covers(dur, off, n int64) bool {
	return off >= 0 && n >= 0 && dur >= n && off <= dur-n
}

// durable returns how much of its segment r states durable: its "dur",
// else the end of its message (without overflowing: the numbers come from
// a file).
func (r *jrec) durable() int64 {
	switch {
	case r.Dur != nil:
		return *r.Dur
	case r.Off < 0 || r.Len < 0:
		return 0
	case r.Off > math.MaxInt64-r.Len:
		return math.MaxInt64
	}
	return r.Off + r.Len
}

// replay reads the journal in r and applies every good line to es (and
// the "pol" lines to pol, when not nil). It stops at EOF; an
// unterminated last line is a torn append (tail).
func replay(r io.Reader, es map[string]*entry, pol map[string][]byte) (replayResult, error) {
	var res replayResult
	br := bufio.NewReaderSize(r, 256<<10)
	n := 0
	for {
		// Zeros where a line would start: the zero tail written ahead
		// of the journal's end when nothing follows them (the end of
		// the journal, not a torn line), else a block a power loss left
		// unwritten among the lines (parseLine would trim them off the
		// line that follows). good moves past them with that line only.
		zeros, err := skipZeros(br)
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		res.good += zeros
		l, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line (a large delivery record): gather it.
			long := append([]byte(nil), l...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxJournalLine {
				l, err = br.ReadSlice('\n')
				long = append(long, l...)
			}
			l = long
		}
		if err == io.EOF {
			// An unterminated line, with or without zeros after it.
			res.good -= zeros
			res.tail = true
			return res, nil
		}
		n++
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return res, err
		}
		if err != nil {
			// Over the limit: skip to the end of the line. good moves
			// past it only once its newline is found: an unterminated
			// one is a torn tail, cut off from where it starts.
			skipped := int64(len(l))
			for errors.Is(err, bufio.ErrBufferFull) {
				l, err = br.ReadSlice('\n')
				skipped += int64(len(l))
			}
			if err == io.EOF {
				res.good -= zeros
				res.tail = true
				return res, nil
			}
			if err != nil {
				return res, err
			}
			res.good += skipped
			res.bad = append(res.bad, fmt.Sprintf("line %d: longer than %d bytes", n, maxJournalLine))
			continue
		}
		res.good += int64(len(l))
		rec, perr := parseLine(l[:len(l)-1])
		if perr != nil {
			res.bad = append(res.bad, fmt.Sprintf("line %d: %v", n, perr))
			continue
		}
		if rec.Op == "pol" {
			switch {
			case pol == nil:
			case len(rec.P) == 0:
				delete(pol, rec.Acct)
			default:
				pol[rec.Acct] = bytes.Clone(rec.P)
			}
			continue
		}
		res.seg = max(res.seg, rec.Seg)
		if rec.Op == "add" || rec.Op == "loc" {
			if res.dur == nil {
				res.dur = map[uint64]int64{}
			}
			res.dur[rec.Seg] = max(res.dur[rec.Seg], rec.durable())
		}
		apply(es, rec)
	}
}

// skipZeros reads past the zero bytes at br's position and returns how
// many there were; io.EOF when the input ends with them.
func skipZeros(br *bufio.Reader) (int64, error) {
	var n int64
	for {
		b, err := br.Peek(1)
		if err != nil {
			return n, err
		}
		if b[0] != 0 {
			return n, nil
		}
		b, _ = br.Peek(br.Buffered())
		k := 0
		// A page at a time while it is all zeros (a whole zero tail is
		// read by every Snapshot), then byte by byte.
		for len(b)-k >= 4096 && bytes.Equal(b[k:k+4096], zeroBlock[:4096]) {
			k += 4096
		}
		for k < len(b) && b[k] == 0 {
			k++
		}
		br.Discard(k)
		n += int64(k)
	}
}

// apply applies one decoded line to the entries.
func apply(es map[string]*entry, r *jrec) {
	switch r.Op {
	case "add":
		es[r.ID] = &entry{st: uint8(stateIndex(r.St)), seg: r.Seg, off: r.Off, len: r.Len, uid: uint32(r.UID), d: bytes.Clone(r.D)}
	case "set":
		if e := es[r.ID]; e != nil {
			e.st = uint8(stateIndex(r.St))
			e.d = bytes.Clone(r.D)
		}
	case "mv":
		if e := es[r.ID]; e != nil {
			e.st = uint8(stateIndex(r.St))
		}
	case "loc":
		if e := es[r.ID]; e != nil {
			e.seg, e.off, e.len = r.Seg, r.Off, r.Len
		}
	case "del":
		delete(es, r.ID)
	}
}

// readJournal replays the journal of the spool at root read-only (a
// missing journal is an empty queue).
func readJournal(root string) (map[string]*entry, replayResult, error) {
	es := map[string]*entry{}
	path := root + "/" + JournalFile
	f, err := openJournalAt(unix.AT_FDCWD, path, path, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return es, replayResult{}, nil
	}
	if err != nil {
		return nil, replayResult{}, err
	}
	defer f.Close()
	res, err := replay(f, es, nil)
	return es, res, err
}

// openJournalAt opens the journal, name in the directory dfd (path names
// it for errors), with flags, and refuses anything but a regular file:
// relayd creates it as one, so a symbolic link, a FIFO or a directory
// there was put by someone else. O_NONBLOCK: opening a FIFO must not hang
// relayd's start or Snapshot; it changes nothing for a regular file.
func openJournalAt(dfd int, name, path string, flags int) (*os.File, error) {
	notRegular := fmt.Errorf("spool: %s is not a regular file (relayd creates it as one): move it away", path)
	fd, err := unix.Openat(dfd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EISDIR):
		return nil, notRegular
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, notRegular
	}
	return os.NewFile(uintptr(fd), path), nil
}
