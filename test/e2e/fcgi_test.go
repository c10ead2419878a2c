//go:build e2e

package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// A minimal FastCGI client (the responder role, one request per
// connection), enough to run a script in php-fpm the way a web server does.

const (
	fcgiBeginRequest = 1
	fcgiEndRequest   = 3
	fcgiParams       = 4
	fcgiStdin        = 5
	fcgiStdout       = 6
	fcgiStderr       = 7
	fcgiResponder    = 1
)

func fcgiRecord(w io.Writer, typ uint8, content []byte) error {
	for {
		n := min(len(content), 65535)
		pad := (8 - n%8) % 8
		h := []byte{1, typ, 0, 1, byte(n >> 8), byte(n), byte(pad), 0}
		if _, err := w.Write(append(append(h, content[:n]...), make([]byte, pad)...)); err != nil {
			return err
		}
		content = content[n:]
		if len(content) == 0 {
			return nil
		}
	}
}

func fcgiLen(b *bytes.Buffer, n int) {
	if n < 128 {
		b.WriteByte(byte(n))
		return
	}
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], uint32(n)|1<<31)
	b.Write(x[:])
}

// fcgiGet runs one request against the FastCGI server at the UNIX socket
// path and returns what the script wrote to stdout and stderr.
func fcgiGet(path string, params map[string]string) (stdout, stderr []byte, err error) {
	conn, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := fcgiRecord(conn, fcgiBeginRequest, []byte{0, fcgiResponder, 0, 0, 0, 0, 0, 0}); err != nil {
		return nil, nil, err
	}
	var p bytes.Buffer
	for k, v := range params {
		fcgiLen(&p, len(k))
		fcgiLen(&p, len(v))
		p.WriteString(k)
		p.WriteString(v)
	}
	if err := fcgiRecord(conn, fcgiParams, p.Bytes()); err != nil {
		return nil, nil, err
	}
	if err := fcgiRecord(conn, fcgiParams, nil); err != nil {
		return nil, nil, err
	}
	if err := fcgiRecord(conn, fcgiStdin, nil); err != nil {
		return nil, nil, err
	}
	var out, errb bytes.Buffer
	for {
		var h [8]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return out.Bytes(), errb.Bytes(), fmt.Errorf("fastcgi: reading a record: %w", err)
		}
		n := int(binary.BigEndian.Uint16(h[4:6])) + int(h[6])
		body := make([]byte, n)
		if _, err := io.ReadFull(conn, body); err != nil {
			return out.Bytes(), errb.Bytes(), fmt.Errorf("fastcgi: reading a record: %w", err)
		}
		content := body[:binary.BigEndian.Uint16(h[4:6])]
		switch h[1] {
		case fcgiStdout:
			out.Write(content)
		case fcgiStderr:
			errb.Write(content)
		case fcgiEndRequest:
			return out.Bytes(), errb.Bytes(), nil
		}
	}
}
