package statefile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Write creates and replaces the file with the mode asked for, whatever
// the umask, and leaves no temporary file behind.
func TestWriteReplaces(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o077))
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	for i, data := range []string{"one", "two, longer", "3"} {
		perm := os.FileMode(0o600)
		if i == 1 {
			perm = 0o644
		}
		if err := Write(path, []byte(data), Options{Perm: perm, NoSync: i == 2}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != data {
			t.Fatalf("after writing %q: %q, %v", data, b, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), perm)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %d files, want 1: %v", len(ents), ents)
	}
}

// A temporary file a crash left behind does not stop the next Write.
func TestWriteReplacesLeftoverTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := os.WriteFile(filepath.Join(dir, ".state.tmp"), []byte("half"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("whole"), Options{Perm: 0o600}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "whole" {
		t.Errorf("state holds %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, ".state.tmp")); !os.IsNotExist(err) {
		t.Errorf("the temporary file is still there: %v", err)
	}
}

// A Write that fails (here its rename: path is a directory that is not
// empty) leaves path as it was and removes its temporary file.
func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := os.MkdirAll(filepath.Join(path, "old"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), Options{Perm: 0o600}); err == nil {
		t.Fatal("Write succeeded")
	}
	if _, err := os.Stat(filepath.Join(path, "old")); err != nil {
		t.Errorf("path changed by a failed Write: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".state.tmp")); !os.IsNotExist(err) {
		t.Errorf("the temporary file is still there: %v", err)
	}
}

// The group is set when asked for: a group other than the process's,
// which the file would have had anyway (root may give any group; another
// user one of its supplementary groups).
func TestWriteGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	gid := -1
	if os.Geteuid() == 0 {
		gid = 12345
	} else if groups, err := os.Getgroups(); err == nil {
		for _, g := range groups {
			if g != os.Getgid() {
				gid = g
				break
			}
		}
	}
	if gid == -1 {
		t.Skip("needs root or a supplementary group (CI runs as root)")
	}
	if err := Write(path, []byte("x"), Options{Perm: 0o640, SetGroup: true, Group: gid}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := int(fi.Sys().(*syscall.Stat_t).Gid); got != gid {
		t.Errorf("group %d, want %d", got, gid)
	}
}
