package submitsock

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submit/submittest"
	"github.com/mailshim/mailshim/pkg/sysexits"
)

// server serves a Server on a socket in a temp dir; unless the Server has
// a Store, it stores into a real spool.Drop in another, as relayd does.
type server struct {
	sock string
	dir  string
	errs chan error // what Serve returned, one per connection
}

// newServer serves srv, whose Store, if unset, stores messages of at most
// max bytes.
func newServer(t *testing.T, srv *Server, max int64) *server {
	t.Helper()
	tmp := t.TempDir()
	s := &server{sock: filepath.Join(tmp, "submit.sock"), dir: filepath.Join(tmp, "store"), errs: make(chan error, 64)}
	os.Mkdir(s.dir, 0o700)
	if srv.Store == nil {
		srv.Store = submittest.DropStore(s.dir, max)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go func() { s.errs <- srv.Serve(c) }()
		}
	}()
	return s
}

// refused checks that Serve returned an error to log for the last
// connection and that nothing was stored.
func (s *server) refused(t *testing.T) {
	t.Helper()
	if err := <-s.errs; err == nil {
		t.Error("Serve returned no error to log")
	}
	if f := s.files(t); len(f) != 0 {
		t.Fatalf("stored: %v", f)
	}
}

// stored opens and decodes the stored file of queue ID id (closed at the
// end of the test).
func (s *server) stored(t *testing.T, id string) (*spool.Meta, *os.File) {
	t.Helper()
	f, err := os.Open(filepath.Join(s.dir, id))
	if err != nil {
		t.Fatalf("stored file: %v (have %v)", err, s.files(t))
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	m, err := spool.Decode(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return m, f
}

func (s *server) files(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestSendServe(t *testing.T) {
	s := newServer(t, &Server{}, 1<<20)
	m := &spool.Meta{ID: spool.NewID(time.Now()), Time: time.Now(),
		Env:    spool.Envelope{Sender: "a@example.org", Recipients: []string{"b@example.org"}},
		Origin: spool.Origin{UID: 0, GID: 0, User: "forged-root", Via: "maildrop", Script: "/x.php", ScriptSource: "SCRIPT_FILENAME", Mode: "t"},
	}
	body := strings.Repeat("line of body\n", 20000) // several chunks
	id, err := Send(context.Background(), s.sock, m, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-s.errs; err != nil {
		t.Fatal(err)
	}
	got, f := s.stored(t, id)
	// Identity from the kernel, not from the client.
	if got.Origin.UID != os.Getuid() || got.Origin.GID != os.Getgid() || got.Origin.Via != "socket" || got.Origin.User == "forged-root" && os.Getuid() != 0 {
		t.Errorf("origin %+v", got.Origin)
	}
	if got.Origin.Script != "/x.php" || got.Env.Sender != "a@example.org" || got.Env.Recipients[0] != "b@example.org" {
		t.Errorf("meta %+v", got)
	}
	b, err := io.ReadAll(got.Body(f))
	if err != nil || string(b) != body {
		t.Errorf("body: %d bytes, %v", len(b), err)
	}
}

func TestSendTooLarge(t *testing.T) {
	s := newServer(t, &Server{}, 100)
	// Small (fits the socket buffers) and large (the server stops reading
	// long before the client stops writing): both get the server's answer.
	for _, n := range []int{1000, 100 << 20} {
		m := &spool.Meta{ID: spool.NewID(time.Now()), Env: spool.Envelope{Recipients: []string{"b@x.org"}}}
		_, err := Send(context.Background(), s.sock, m, strings.NewReader(strings.Repeat("x", n)))
		var e *submit.Error
		if !errors.As(err, &e) || e.Code != sysexits.DataErr {
			t.Fatalf("%d bytes: got %v, want EX_DATAERR", n, err)
		}
		<-s.errs
		if f := s.files(t); len(f) != 0 {
			t.Errorf("left %v", f)
		}
	}
}

// A client that disconnects before the final chunk stores nothing.
func TestServeIncomplete(t *testing.T) {
	s := newServer(t, &Server{}, 1<<20)
	c, err := net.Dial("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	m := &spool.Meta{ID: spool.NewID(time.Now()), Env: spool.Envelope{Recipients: []string{"b@x.org"}}}
	hdr, _ := spool.EncodeHeader(m)
	io.WriteString(c, greeting)
	c.Write(hdr)
	io.WriteString(c, "5\nhello")
	c.(*net.UnixConn).CloseWrite()
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "error 74 ") {
		t.Errorf("answer %q", line)
	}
	s.refused(t)
}

func TestServeGarbage(t *testing.T) {
	s := newServer(t, &Server{}, 1<<20)
	for _, in := range []string{"HELO x\r\n", greeting + "not a header\n\n", greeting + "MAILSHIM-SPOOL 1\nid 0006270A1B2C3D4E5F60\n\n"} {
		c, err := net.Dial("unix", s.sock)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, in)
		c.(*net.UnixConn).CloseWrite()
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "error ") {
			t.Errorf("%q: answer %q", in, line)
		}
		<-s.errs
	}
	if f := s.files(t); len(f) != 0 {
		t.Errorf("stored %v", f)
	}
}

func TestSendNoServer(t *testing.T) {
	_, err := Send(context.Background(), filepath.Join(t.TempDir(), "none.sock"), &spool.Meta{}, strings.NewReader("x"))
	var e *submit.Error
	if err == nil || errors.As(err, &e) {
		t.Fatalf("got %v", err)
	}
}

// A server that answers the end of the message with a line that does not
// end (or no line of its protocol) has given no valid answer: Send reads
// at most maxAnswer bytes of it and says that the message may have been
// stored (ErrNoAnswer), without waiting for the line's end.
func TestSendEndlessAnswer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c)
		junk := []byte(strings.Repeat("x", 4096))
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for {
			if _, err := c.Write(junk); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := &spool.Meta{Version: spool.Version, ID: spool.NewID(time.Now()), Time: time.Now(),
		Env: spool.Envelope{Recipients: []string{"a@example.org"}}}
	_, err = Send(ctx, sock, m, strings.NewReader("Subject: x\n\nbody\n"))
	if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("got %v; want ErrNoAnswer for an answer longer than %d bytes", err, maxAnswer)
	}
}
