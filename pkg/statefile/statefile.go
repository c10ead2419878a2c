// Package statefile replaces small state files atomically: relayd's
// stats, the rotated OAuth 2 refresh tokens, and
// the local CA's files written by relayd tls-init.
//
// Write follows the commit protocol of the spool (a temporary file in
// the same directory, written, fsync'd, renamed over the file, then the
// directory fsync'd), so that a crash or a power loss leaves the old
// content or the new one, never a mix and never nothing. The message
// spool does not use it: its files are written once and never replaced.
//
// Its Go API is not stable.
package statefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Options say how Write makes the file.
type Options struct {
	// Perm is the file's mode, set with fchmod (whatever the umask).
	Perm fs.FileMode
	// Group, if SetGroup, is the group the file is given (fchown; its
	// owner stays the writer).
	Group    int
	SetGroup bool
	// NoSync leaves out both fsyncs: for a file that may be lost to a
	// power loss (relayd's stats, written again every second; a crash of
	// relayd alone loses nothing, the kernel has the write).
	NoSync bool
}

// Write replaces path with data: the temporary file "." + base name +
// ".tmp" beside it, created exclusively, given o's mode and group,
// written, fsync'd, renamed over path (rename(2) is atomic), then the
// directory fsync'd so that the rename survives a power loss. A
// temporary file left by a crash is replaced; so the writers of one
// path must not run at once (each caller serialises its own). On an
// error path keeps its old content and the temporary file is removed.
func Write(path string, data []byte, o Options) error {
	dir := filepath.Dir(path)
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Left by a crash: ours to replace.
		os.Remove(tmp)
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return err
	}
	err = f.Chmod(o.Perm)
	if err == nil && o.SetGroup {
		err = f.Chown(-1, o.Group)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil && !o.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if o.NoSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
