package spool

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	md, dir := newMaildrop(t)
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
	ents, _ := os.ReadDir(md)
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// Writes of every size, small ones gathered and large ones written from
// page boundaries, store the bytes in order with their CRC.
func TestDropWriteSizes(t *testing.T) {
	md, dir := newMaildrop(t)
	var body []byte
	for i := 0; len(body) < 1<<20; i++ {
		body = append(body, byte(i*7), byte(i>>3))
	}
	for _, pieces := range [][]int{
		{1 << 20},
		{1, 100, 5000, 4*page - 1, 4 * page, 4*page + 1, 70000, 3, 200000, 64 << 10, 1},
		{page - 1, page, page + 1, 3 * page, 5*page + 7},
		// Short messages, whose header is still in the buffer at Commit
		// (size and CRC patched there), and around the buffer's size.
		{0}, {10}, {2000, 48}, {bufSize - 300}, {bufSize - 100, 99}, {bufSize + 10}, {bufSize, bufSize},
	} {
		m := &Meta{ID: NewID(time.Now()), Time: time.Now(), Env: Envelope{Recipients: []string{"b@example.org"}}}
		d, err := NewDrop(dir, m, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		rest := body
		for _, n := range pieces {
			n = min(n, len(rest))
			if k, err := d.Write(rest[:n]); k != n || err != nil {
				t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
			}
			want, rest = append(want, rest[:n]...), rest[n:]
		}
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(md, m.ID))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		got, err := Decode(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		if got.Size != int64(len(want)) || got.CRC != checksum(want) {
			t.Errorf("pieces %v: header says size %d crc %08x, want %d %08x", pieces, got.Size, got.CRC, len(want), checksum(want))
		}
		var b bytes.Buffer
		if _, err := io.Copy(&b, got.Body(f)); err != nil || !bytes.Equal(b.Bytes(), want) {
			t.Errorf("pieces %v: %d bytes back (%v), want %d", pieces, b.Len(), err, len(want))
		}
		f.Close()
	}
}

// A drop made by a process whose group is not the maildrop's (root
// running a sendmail that is not setgid) gets the directory's group, the
// one relayd reads maildrop files through.
func TestDropTakesDirectoryGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory another group")
	}
	md, dir := newMaildrop(t)
	const gid = 12345 // not this process's group
	if os.Getegid() == gid {
		t.Skip("the test's group is the process's")
	}
	if err := os.Chown(md, 0, gid); err != nil {
		t.Fatal(err)
	}
	m := &Meta{ID: NewID(time.Now()), Time: time.Now(), Env: Envelope{Recipients: []string{"b@example.org"}}}
	d, err := NewDrop(dir, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write([]byte("Subject: x\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(md, m.ID))
	if err != nil {
		t.Fatal(err)
	}
	if g := fi.Sys().(*syscall.Stat_t).Gid; g != gid {
		t.Errorf("stored file's group %d, want the directory's %d", g, gid)
	}
}
