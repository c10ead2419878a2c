package spool

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDropRoundTrip(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, DirMaildrop), 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := OpenDir(root, DirMaildrop)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	now := time.Date(2026, 11, 23, 14, 40, 0, 123, time.UTC)
	m := &Meta{ID: NewID(now), Time: now,
		Env:    Envelope{Sender: "a@example.org", Recipients: []string{"b@example.org", "root"}},
		Origin: Origin{UID: 1001, GID: 1001, User: "smtest", Script: "/home/x\nevil%.php", Ignored: []string{"-Zq"}},
	}
	d, err := NewDrop(dir, m, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: hi\n\nhello\x00\r world\n"
	io.Copy(d, strings.NewReader(body))
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, DirMaildrop, m.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Mode().Perm() != ModeDropFile.Perm() {
		t.Errorf("mode %v", st.Mode())
	}
	got, err := Decode(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin.Script != m.Origin.Script || len(got.Env.Recipients) != 2 || got.Size != int64(len(body)) || !got.Time.Equal(now) {
		t.Errorf("decoded %+v", got)
	}
	var b bytes.Buffer
	if _, err := io.Copy(&b, got.Body(f)); err != nil || b.String() != body {
		t.Errorf("body %q %v", b.String(), err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, DirMaildrop))
	if len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	// Truncation is refused.
	if _, err := Decode(f, st.Size()-1); err == nil {
		t.Error("truncated file decoded")
	}
}

func TestDropTooLarge(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, DirMaildrop), 0o700)
	dir, _ := OpenDir(root, DirMaildrop)
	m := &Meta{ID: NewID(time.Now()), Time: time.Now()}
	d, err := NewDrop(dir, m, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write(make([]byte, 11)); err != ErrTooLarge {
		t.Fatalf("err %v", err)
	}
	if err := d.Commit(); err == nil {
		t.Fatal("committed")
	}
	ents, _ := os.ReadDir(filepath.Join(root, DirMaildrop))
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
