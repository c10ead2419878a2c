package attack

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

// fakeUpstream is a plain-text SMTP upstream that answers with raw bytes
// chosen by the case: what a hostile or broken smarthost may send
// (multi-line replies, CR, control characters, invalid UTF-8, huge
// replies). Replies hold their own CRLFs.
type fakeUpstream struct {
	Greeting string // default "220 fake ESMTP\r\n"
	Rcpt     func(rcpt string) string
	DataEnd  string // reply after the data (default "250 2.0.0 queued as FAKE1\r\n")

	port int
	mu   sync.Mutex
	msgs []string // the data of each message received
	rcpt int      // RCPT commands seen
}

func (f *fakeUpstream) start(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f.port = ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
}

func (f *fakeUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	w := func(s string) bool { _, err := c.Write([]byte(s)); return err == nil }
	g := f.Greeting
	if g == "" {
		g = "220 fake ESMTP\r\n"
	}
	if !w(g) {
		return
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO", "HELO":
			w("250-fake\r\n250 8BITMIME\r\n")
		case "MAIL", "RSET", "NOOP":
			w("250 2.0.0 Ok\r\n")
		case "RCPT":
			f.mu.Lock()
			f.rcpt++
			f.mu.Unlock()
			r := "250 2.1.5 Ok\r\n"
			if f.Rcpt != nil {
				_, a, _ := strings.Cut(line, ":")
				r = f.Rcpt(strings.Trim(strings.TrimSpace(a), "<>"))
			}
			w(r)
		case "DATA":
			w("354 go on\r\n")
			var b strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			f.mu.Lock()
			f.msgs = append(f.msgs, b.String())
			f.mu.Unlock()
			r := f.DataEnd
			if r == "" {
				r = "250 2.0.0 queued as FAKE1\r\n"
			}
			w(r)
		case "QUIT":
			w("221 bye\r\n")
			return
		default:
			w("502 5.5.1 no\r\n")
		}
	}
}

func (f *fakeUpstream) rcpts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rcpt
}

func (f *fakeUpstream) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.msgs...)
}
