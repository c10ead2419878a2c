package spool

// Spool directory creation and safety checks (relayd's side).
//
// relayd creates every missing directory with its owner and mode at start,
// so a private spool (tests, the demo, MAILSHIM_CONFIG) needs only an empty
// directory, and it refuses to start — naming the path — when an existing
// one is unsafe: not a directory, a symbolic link, owned by another user,
// maildrop/ open to other users, or queue/ readable by anyone but relayd.
// `relayd check-config` runs the same checks without creating anything.

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// DropGroup is the group sendmail runs setgid as; maildrop/ belongs to it.
const DropGroup = "mailshim-drop"

// Owner is who the spool belongs to: relayd's user, and the group of
// maildrop/ (mailshim-drop when it exists and relayd's user may use it,
// else relayd's own group, which is fine for a private spool).
type Owner struct {
	UID     int
	GID     int
	DropGID int
}

// CurrentOwner returns the Owner for the running process.
func CurrentOwner() Owner {
	o := Owner{UID: os.Getuid(), GID: os.Getgid(), DropGID: os.Getgid()}
	if g, err := user.LookupGroup(DropGroup); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil && memberOf(gid) {
			o.DropGID = gid
		}
	}
	return o
}

func memberOf(gid int) bool {
	if os.Getuid() == 0 || os.Getegid() == gid {
		return true
	}
	gs, _ := os.Getgroups()
	for _, g := range gs {
		if g == gid {
			return true
		}
	}
	return false
}

// LayoutError is an unsafe or unusable spool path.
type LayoutError struct {
	Path    string
	Problem string
	Fix     string
}

func (e *LayoutError) Error() string {
	s := "spool: " + e.Path + ": " + e.Problem
	if e.Fix != "" {
		s += " (fix: " + e.Fix + ")"
	}
	return s
}

type dirSpec struct {
	rel  string
	mode os.FileMode
	gid  func(Owner) int
}

func layoutSpec() []dirSpec {
	own := func(o Owner) int { return o.GID }
	specs := []dirSpec{
		{"", ModeRoot, own},
		{DirMaildrop, ModeMaildrop, func(o Owner) int { return o.DropGID }},
	}
	for _, d := range PrivateDirs {
		specs = append(specs, dirSpec{d, ModePrivate, own})
	}
	return specs
}

// Prepare creates the missing directories of the spool at root with their
// owner and mode, and checks the ones that exist. It returns every problem
// found (as *LayoutError) joined; nil means the spool is safe to use.
func Prepare(root string, o Owner) error {
	return walkLayout(root, o, true)
}

// Check is Prepare without creating anything: a missing directory is not a
// problem (relayd will create it), an unsafe existing one is.
func Check(root string, o Owner) error {
	return walkLayout(root, o, false)
}

func walkLayout(root string, o Owner, create bool) error {
	if !filepath.IsAbs(root) {
		return &LayoutError{Path: root, Problem: "the spool path is not absolute"}
	}
	var errs []error
	for _, d := range layoutSpec() {
		p := filepath.Join(root, d.rel)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			if !create {
				continue
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				errs = append(errs, &LayoutError{Path: p, Problem: "cannot create: " + errText(err), Fix: "create the parent directory, owned by the daemon user"})
				if d.rel == "" || d.rel == DirQueue {
					break
				}
				continue
			}
			if err := os.Lchown(p, o.UID, d.gid(o)); err != nil {
				errs = append(errs, &LayoutError{Path: p, Problem: "cannot set the group: " + errText(err)})
				continue
			}
			// Chmod after chown: chown clears the set-id bits, and the
			// umask applied to Mkdir.
			if err := os.Chmod(p, d.mode); err != nil {
				errs = append(errs, &LayoutError{Path: p, Problem: "cannot set the mode: " + errText(err)})
			}
			continue
		}
		if err != nil {
			errs = append(errs, &LayoutError{Path: p, Problem: errText(err)})
			continue
		}
		if e := checkDir(p, fi, d, o); e != nil {
			errs = append(errs, e)
		}
	}
	if len(errs) == 0 {
		if e := checkLockFile(filepath.Join(root, LockFile), o); e != nil {
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

func checkDir(p string, fi os.FileInfo, d dirSpec, o Owner) error {
	if fi.Mode()&os.ModeSymlink != 0 {
		return &LayoutError{Path: p, Problem: "is a symbolic link", Fix: "replace it with a real directory"}
	}
	if !fi.IsDir() {
		return &LayoutError{Path: p, Problem: "is not a directory"}
	}
	st := fi.Sys().(*syscall.Stat_t)
	uid := int(st.Uid)
	mode := fi.Mode()
	want := fmt.Sprintf("chown %d %s && chmod %s %s", o.UID, p, ModeString(d.mode), p)
	switch {
	case d.rel == "":
		// The root may be root-owned (packaging creates /var/spool/mailshim)
		// but nobody else may write to it.
		if uid != o.UID && uid != 0 {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("owned by uid %d, not by relayd's uid %d or root", uid, o.UID), Fix: want}
		}
		if mode.Perm()&0o022 != 0 {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("mode %s lets others write to it", ModeString(mode)), Fix: want}
		}
	case d.rel == DirMaildrop:
		if uid != o.UID {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("owned by uid %d, not by relayd's uid %d", uid, o.UID), Fix: want}
		}
		if mode.Perm()&0o007 != 0 {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("mode %s gives other users access (mail could be read, forged or removed)", ModeString(mode)), Fix: want}
		}
		if mode&os.ModeSticky == 0 && mode.Perm()&0o020 != 0 {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("mode %s is group-writable without the sticky bit (callers could remove each other's mail)", ModeString(mode)), Fix: want}
		}
		if int(st.Gid) != o.DropGID && int(st.Gid) != o.GID {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("group %d is neither %s (%d) nor relayd's group (%d)", st.Gid, DropGroup, o.DropGID, o.GID), Fix: fmt.Sprintf("chgrp %d %s", o.DropGID, p)}
		}
	default:
		if uid != o.UID {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("owned by uid %d, not by relayd's uid %d", uid, o.UID), Fix: want}
		}
		if mode.Perm()&0o077 != 0 {
			return &LayoutError{Path: p, Problem: fmt.Sprintf("mode %s gives others access to queued mail", ModeString(mode)), Fix: want}
		}
	}
	return nil
}

func checkLockFile(p string, o Owner) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &LayoutError{Path: p, Problem: errText(err)}
	}
	if !fi.Mode().IsRegular() {
		return &LayoutError{Path: p, Problem: "is not a regular file", Fix: "remove it"}
	}
	if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != o.UID {
		return &LayoutError{Path: p, Problem: fmt.Sprintf("owned by uid %d, not by relayd's uid %d", uid, o.UID), Fix: "remove it"}
	}
	return nil
}

// ModeString is a file mode as chmod(1) takes it, four octal digits with
// the setuid, setgid and sticky bits: "1730", "2755". relayd's layout
// checks and relayd doctor name modes so.
func ModeString(m os.FileMode) string {
	n := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// ErrLocked is returned by Lock when another relayd holds the spool.
var ErrLocked = errors.New("another relayd is running on this spool")

// Lock takes the spool's lock (flock on relayd.lock) for the life of the
// process; close the file to release it.
func Lock(root string) (*os.File, error) {
	p := filepath.Join(root, LockFile)
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s: %w (%s is locked)", root, ErrLocked, p)
		}
		return nil, &os.PathError{Op: "flock", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return f, nil
}
