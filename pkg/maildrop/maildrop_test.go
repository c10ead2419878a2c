package maildrop

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/submit"
	"github.com/mailshim/mailshim/pkg/submitsock"
)

type recordingGuard struct {
	writing, committed bool
}

func (g *recordingGuard) Writing(func()) { g.writing = true }
func (g *recordingGuard) Commit(c func() error) error {
	err := c()
	g.committed = err == nil
	return err
}

func TestLocalStore(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, spool.DirMaildrop), 0o700)
	g := &recordingGuard{}
	l := &Local{Spool: root, Hostname: "h.example", Guard: g}
	br := bufio.NewReader(strings.NewReader("To: jörg@exämple.org\nX-PHP-Originating-Script: 1001:c.php\n\nbody\n"))
	h, err := message.ReadHeader(br, 0)
	if err != nil {
		t.Fatal(err)
	}
	env := &spool.Envelope{Recipients: []string{"jörg@exämple.org"}, FullName: "Web App"}
	org := &spool.Origin{UID: 1001, User: "web"}
	id, err := l.Store(env, org, h, br)
	if err != nil {
		t.Fatal(err)
	}
	if !g.writing || !g.committed {
		t.Errorf("guard %+v", g)
	}
	f, err := os.Open(filepath.Join(root, spool.DirMaildrop, id))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	m, err := spool.Decode(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(m.Body(f))
	want := "To: jörg@exämple.org\nX-PHP-Originating-Script: 1001:c.php\nFrom: Web App <web@h.example>\n\nbody\n"
	if string(b) != want {
		t.Errorf("body %q\nwant %q", b, want)
	}
	if !m.Env.SMTPUTF8 || m.Origin.Via != "maildrop" || m.Origin.Script != "c.php" || m.Origin.ScriptSource != "X-PHP-Originating-Script" {
		t.Errorf("meta %+v", m)
	}
}

// serveSubmit serves the submission socket at sock (submitsock.Server)
// with store.
func serveSubmit(t *testing.T, sock string, store submit.Store) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &submitsock.Server{Intake: submit.Intake{Store: store}}
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go srv.Serve(c)
		}
	}()
}

func TestLocalSpoolMissing(t *testing.T) {
	l := &Local{Spool: filepath.Join(t.TempDir(), "nope"), Hostname: "h"}
	h := &message.Header{}
	_, err := l.Store(&spool.Envelope{Recipients: []string{"a@b"}}, &spool.Origin{}, h, strings.NewReader(""))
	var sm *SpoolMissingError
	if !errors.As(err, &sm) {
		t.Fatalf("got %v", err)
	}
}

// Not root: a maildrop without write permission sends the message to the
// socket when Fallback is set, and says both doors failed without one.
func TestLocalFallback(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("SKIPPED as root: root writes any maildrop (cmd/sendmail's TestSubmitSocket covers this as nobody)")
	}
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, spool.DirMaildrop), 0o500)
	sock := filepath.Join(t.TempDir(), "submit.sock")
	stored := make(chan string, 1)
	serveSubmit(t, sock, func(m *spool.Meta, body io.Reader) (string, error) {
		b, err := io.ReadAll(body)
		stored <- string(b)
		return m.ID, err
	})
	l := &Local{Spool: root, Hostname: "h", Socket: sock, Fallback: true}
	id, err := l.Store(&spool.Envelope{Recipients: []string{"a@b"}}, &spool.Origin{}, &message.Header{}, strings.NewReader("x"))
	if err != nil || id == "" {
		t.Fatalf("%q %v", id, err)
	}
	// The header Prepare completed (a From:), then the body, as relayd
	// stores it.
	if b := <-stored; b != "From: uid0@h\nx" {
		t.Errorf("stored %q", b)
	}
	l.Socket = filepath.Join(root, "none.sock")
	_, err = l.Store(&spool.Envelope{Recipients: []string{"a@b"}}, &spool.Origin{}, &message.Header{}, strings.NewReader("x"))
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v", err)
	}
}
