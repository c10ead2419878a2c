package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareCreatesLayout(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	o := CurrentOwner()
	if err := Prepare(root, o); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{"": ModeRoot, DirMaildrop: ModeMaildrop}
	for _, d := range PrivateDirs {
		want[d] = ModePrivate
	}
	for d, mode := range want {
		fi, err := os.Lstat(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSticky); got != mode {
			t.Errorf("%s: mode %v, want %v", d, got, mode)
		}
	}
	// Idempotent, and Check agrees.
	if err := Prepare(root, o); err != nil {
		t.Fatal(err)
	}
	if err := Check(root, o); err != nil {
		t.Fatal(err)
	}
}

func TestCheckRefusesUnsafe(t *testing.T) {
	o := CurrentOwner()
	for _, tc := range []struct {
		name   string
		break_ func(root string)
		want   string
	}{
		{"world-writable maildrop", func(r string) { os.Chmod(filepath.Join(r, DirMaildrop), 0o733|os.ModeSticky) }, "maildrop: mode 1733 gives other users access"},
		{"readable queue", func(r string) { os.Chmod(filepath.Join(r, DirQueue), 0o755) }, "queue: mode 0755 gives others access"},
		{"group-readable segment dir", func(r string) { os.Chmod(filepath.Join(r, DirSeg), 0o750) }, "seg: mode 0750"},
		{"maildrop without sticky bit", func(r string) { os.Chmod(filepath.Join(r, DirMaildrop), 0o730) }, "without the sticky bit"},
		{"symlinked queue dir", func(r string) {
			p := filepath.Join(r, DirTmp)
			os.Remove(p)
			os.Symlink("/tmp", p)
		}, "tmp: is a symbolic link"},
		{"file instead of dir", func(r string) {
			p := filepath.Join(r, DirQuarantine)
			os.Remove(p)
			os.WriteFile(p, nil, 0o600)
		}, "quarantine: is not a directory"},
		{"writable root", func(r string) { os.Chmod(r, 0o777) }, "lets others write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "spool")
			if err := Prepare(root, o); err != nil {
				t.Fatal(err)
			}
			tc.break_(root)
			for _, f := range []func(string, Owner) error{Check, Prepare} {
				err := f(root, o)
				var le *LayoutError
				if !errors.As(err, &le) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error containing %q", err, tc.want)
				}
			}
		})
	}
}

func TestCheckOtherOwner(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	o := CurrentOwner()
	if err := Prepare(root, o); err != nil {
		t.Fatal(err)
	}
	other := o
	other.UID = o.UID + 12345
	err := Check(root, other)
	if err == nil || !strings.Contains(err.Error(), "not by relayd's uid") {
		t.Fatalf("Check as another uid: %v", err)
	}
}

func TestCheckMissingIsFine(t *testing.T) {
	if err := Check(filepath.Join(t.TempDir(), "nope"), CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	if err := Check("relative/spool", CurrentOwner()); err == nil {
		t.Fatal("relative spool path accepted")
	}
}

func TestLock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "spool")
	if err := Prepare(root, CurrentOwner()); err != nil {
		t.Fatal(err)
	}
	l, err := Lock(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(root); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	l.Close()
	l2, err := Lock(root)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	l2.Close()
}
