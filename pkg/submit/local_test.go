package submit

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailshim/mailshim/pkg/message"
	"github.com/mailshim/mailshim/pkg/spool"
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
	s := newServer(t, 1<<20)
	l := &Local{Spool: root, Hostname: "h", Socket: s.sock, Fallback: true}
	id, err := l.Store(&spool.Envelope{Recipients: []string{"a@b"}}, &spool.Origin{}, &message.Header{}, strings.NewReader("x"))
	if err != nil || id == "" {
		t.Fatalf("%q %v", id, err)
	}
	<-s.errs
	l.Socket = filepath.Join(root, "none.sock")
	_, err = l.Store(&spool.Envelope{Recipients: []string{"a@b"}}, &spool.Origin{}, &message.Header{}, strings.NewReader("x"))
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v", err)
	}
}
