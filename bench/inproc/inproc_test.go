package inproc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
)

func msg(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Bench <sender@bench.example>\nTo: rcpt@bench.example, Other <other@bench.example>\nCc: cc@bench.example\nBcc: hidden@bench.example\nSubject: benchmark\nMessage-ID: <1@bench.example>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n")
	line := strings.Repeat("0123456789abcdef", 5)[:75] + "\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()[:size]
}

func crlf(p []byte) []byte { return bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n")) }

func benchDrop(b *testing.B, size int) {
	dir := b.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	body := msg(size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(), Env: spool.Envelope{Recipients: []string{"rcpt@bench.example"}}}
		dr, err := spool.NewDrop(d, m, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := dr.Write(body); err != nil {
			b.Fatal(err)
		}
		if err := dr.Commit(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.Remove(dir + "/" + m.ID)
		b.StartTimer()
	}
}

// BenchmarkDrop is spool.Drop end to end: O_TMPFILE, write, fsync, link,
// directory fsync.
func BenchmarkDrop(b *testing.B) {
	for _, size := range []int{2 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) { benchDrop(b, size) })
	}
}

// BenchmarkDecode is relayd's validation of a maildrop file's header.
func BenchmarkDecode(b *testing.B) {
	body := msg(2 << 10)
	rcpts := make([]string, 100)
	for i := range rcpts {
		rcpts[i] = fmt.Sprintf("user%d@bench.example", i)
	}
	crc := spool.NewCRC()
	crc.Write(body)
	m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(), Env: spool.Envelope{Sender: "s@bench.example", Recipients: rcpts},
		Origin: spool.Origin{UID: 33, GID: 33, User: "www-data", Script: "/var/www/site/contact.php", ScriptSource: "SCRIPT_FILENAME"},
		Size:   int64(len(body)), CRC: crc.Sum32()}
	hdr, _ := spool.EncodeHeader(m)
	file := append(hdr, body...)
	r := bytes.NewReader(file)
	b.SetBytes(int64(len(hdr)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := spool.Decode(r, int64(len(file))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeaderScan is sendmail -t's work on the header: scan, collect
// To/Cc/Bcc, remove Bcc.
func BenchmarkHeaderScan(b *testing.B) {
	in := msg(2 << 10)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		h, err := message.ReadHeader(bufio.NewReader(bytes.NewReader(in)), 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := message.Recipients(h); err != nil {
			b.Fatal(err)
		}
		message.RemoveBcc(h)
	}
}

// BenchmarkNormalise is the CRLF→LF and "." handling every byte of every
// message goes through in sendmail.
func BenchmarkNormalise(b *testing.B) {
	for _, size := range []int{2 << 10, 1 << 20} {
		in := crlf(msg(size))
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.Copy(io.Discard, message.NewReader(bytes.NewReader(in), false)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
