package spool

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newMaildrop(t *testing.T) (string, *os.File) {
	t.Helper()
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, DirMaildrop), 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := OpenDir(root, DirMaildrop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	return filepath.Join(root, DirMaildrop), dir
}

// An existing name — a file or a symbolic link — is never replaced or
// followed: Commit fails and leaves it alone.
func TestDropNeverReplaces(t *testing.T) {
	md, dir := newMaildrop(t)
	id := NewID(time.Now())
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	for _, plant := range []func(string) error{
		func(p string) error { return os.WriteFile(p, []byte("existing"), 0o600) },
		func(p string) error { return os.Symlink(victim, p) },
		func(p string) error { return os.Symlink("/nonexistent/dangling", p) },
	} {
		p := filepath.Join(md, id)
		os.Remove(p)
		if err := plant(p); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Lstat(p)
		d, err := NewDrop(dir, &Meta{ID: id, Time: time.Now()}, 0)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(d, "Subject: x\n\nnew\n")
		if err := d.Commit(); err == nil {
			t.Fatal("Commit replaced an existing name")
		}
		after, _ := os.Lstat(p)
		if !os.SameFile(before, after) {
			t.Fatal("existing name replaced")
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Fatal("symlink followed")
		}
		ents, _ := os.ReadDir(md)
		if len(ents) != 1 {
			t.Fatalf("left behind: %v", ents)
		}
	}
}

// A setgid sendmail holds maildrop/ through an O_PATH descriptor (1730: not
// readable). Commit works through it and makes the file durable.
func TestDropPathDescriptor(t *testing.T) {
	md, _ := newMaildrop(t)
	fd, err := unix.Open(md, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := os.NewFile(uintptr(fd), md)
	defer dir.Close()
	if !isPathFD(dir) {
		t.Fatal("not an O_PATH descriptor")
	}
	m := &Meta{ID: NewID(time.Now()), Time: time.Now(), Env: Envelope{Recipients: []string{"a@b"}}}
	d, err := NewDrop(dir, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("line\n", 1000)
	io.WriteString(d, body)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(md, m.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	got, err := Decode(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(got.Body(f))
	if err != nil || string(b) != body {
		t.Fatalf("body %d bytes, %v", len(b), err)
	}
}

// Abort, at any point, leaves nothing behind; so does a writer that never
// commits (the O_TMPFILE file has no name).
func TestDropAbortLeavesNothing(t *testing.T) {
	md, dir := newMaildrop(t)
	d, err := NewDrop(dir, &Meta{ID: NewID(time.Now()), Time: time.Now()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(d, "partial")
	d.Abort()
	d.Abort()
	if err := d.Commit(); err == nil {
		t.Fatal("commit after abort")
	}
	d2, _ := NewDrop(dir, &Meta{ID: NewID(time.Now()), Time: time.Now()}, 0)
	io.WriteString(d2, "never committed")
	if ents, _ := os.ReadDir(md); len(ents) != 0 {
		t.Fatalf("visible before commit: %v", ents)
	}
	d2.Abort()
}

func TestOpenDirRefusesSymlink(t *testing.T) {
	root := t.TempDir()
	other := t.TempDir()
	os.Symlink(other, filepath.Join(root, DirMaildrop))
	if _, err := OpenDir(root, DirMaildrop); err == nil {
		t.Fatal("symlinked maildrop opened")
	}
}
