package pickup

import (
	"errors"
	"io"
	"sync"

	"golang.org/x/sys/unix"
)

// smallDrop is the size up to which a maildrop file is read whole, with
// one pread(2), and decoded and copied from memory; a bigger one is read
// in pieces, streamed.
const smallDrop = 16 << 10

// smallBufs recycles the buffers small maildrop files are read into.
var smallBufs = sync.Pool{New: func() any { b := make([]byte, smallDrop); return &b }}

// dropFile is an open maildrop file: a bare descriptor read with pread(2)
// (as sendmail reads its input). Not an *os.File: os.NewFile asks for
// the descriptor's flags (fcntl) and offers it to the netpoller
// (epoll_ctl, which refuses a regular file with EPERM) — two system calls
// per picked-up message for nothing, since reads of a regular file never
// wait for readiness. A file of at most smallDrop bytes is read once,
// whole, at open; its header, body and bounce excerpt are then read from
// that copy.
type dropFile struct {
	fd    int
	size  int64
	small *[]byte // the whole file when it is small (pooled)
	data  []byte  // the bytes of small that were read
}

// openDrop reads the small file fd of size bytes whole, or prepares it
// for reads in place. The caller closes the dropFile, which closes fd.
func openDrop(fd int, size int64) (*dropFile, error) {
	f := &dropFile{fd: fd, size: size}
	if size <= smallDrop {
		f.small = smallBufs.Get().(*[]byte)
		n, err := f.pread((*f.small)[:size], 0)
		if err != nil && err != io.EOF {
			f.Close()
			return nil, err
		}
		f.data = (*f.small)[:n]
	}
	return f, nil
}

// pread reads len(p) bytes at off, or up to the end of the file (io.EOF).
func (f *dropFile) pread(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(f.fd, p[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

// ReadAt reads from the copy of a small file, else from the file.
func (f *dropFile) ReadAt(p []byte, off int64) (int, error) {
	if f.small == nil {
		return f.pread(p, off)
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close closes the descriptor and gives the buffer back.
func (f *dropFile) Close() error {
	if f.small != nil {
		smallBufs.Put(f.small)
		f.small, f.data = nil, nil
	}
	if f.fd < 0 {
		return nil
	}
	err := unix.Close(f.fd)
	f.fd = -1
	return err
}
