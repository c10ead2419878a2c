package driver

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// writeMessage writes an RFC 5322 message of about size bytes (LF line
// ends, as most callers pipe it) to path. seq goes into SeqHeader.
func writeMessage(path string, size int64, seq int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	hdr := messageHeader(seq)
	w.WriteString(hdr)
	writeBody(w, size-int64(len(hdr)))
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func messageHeader(seq int) string {
	return fmt.Sprintf("From: Bench Sender <sender@bench.example>\nTo: rcpt@bench.example\nSubject: benchmark message %d\nX-Bench-Seq: %d\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n", seq, seq)
}

// writeBody writes n bytes of 76-column text lines.
func writeBody(w *bufio.Writer, n int64) {
	line := strings.Repeat("abcdefghijklmnopqrstuvwxyz0123456789", 3)[:75] + "\n"
	for n > 0 {
		k := min(n, int64(len(line)))
		if k < int64(len(line)) {
			w.WriteString(line[:k-1])
			w.WriteByte('\n')
		} else {
			w.WriteString(line)
		}
		n -= k
	}
}

// message returns a message of about size bytes in memory.
func message(size int64, seq int) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	hdr := messageHeader(seq)
	w.WriteString(hdr)
	writeBody(w, size-int64(len(hdr)))
	w.Flush()
	return b.Bytes()
}

// writeSMTPSession writes a -bs dialogue delivering count messages of
// about size bytes each, with CRLF line ends and dot-stuffing, to path.
func writeSMTPSession(path string, count int, size int64) error {
	var b bytes.Buffer
	b.WriteString("EHLO bench.example\r\n")
	for i := 0; i < count; i++ {
		b.WriteString("MAIL FROM:<sender@bench.example>\r\nRCPT TO:<rcpt@bench.example>\r\nDATA\r\n")
		for _, l := range bytes.SplitAfter(message(size, i), []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			l = bytes.TrimSuffix(l, []byte("\n"))
			if bytes.HasPrefix(l, []byte(".")) {
				b.WriteByte('.')
			}
			b.Write(l)
			b.WriteString("\r\n")
		}
		b.WriteString(".\r\n")
	}
	b.WriteString("QUIT\r\n")
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// writeConcat writes count messages of exactly size bytes back to back
// (the reference's input for the -bs row).
func writeConcat(path string, count int, size int64) error {
	var b bytes.Buffer
	for i := 0; i < count; i++ {
		m := message(size, i)
		if int64(len(m)) != size {
			m = append(m[:min(int64(len(m)), size)], bytes.Repeat([]byte("x"), int(max(0, size-int64(len(m)))))...)
		}
		b.Write(m)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
