// Command refwrite is the benchmarks' physical-limit reference: the least a
// program can do to store a message durably. It is exec'd like sendmail,
// copies stdin into a temporary file in DIR, fsyncs it, renames it into
// place and fsyncs DIR — the same durability steps sendmail takes, with no
// parsing, no identity, no configuration.
//
//	refwrite DIR            one message: all of stdin
//	refwrite DIR COUNT SIZE COUNT messages of SIZE bytes each, read in turn
//
// It is built static (CGO_ENABLED=0) by the benchmark driver.
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 2 && len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: refwrite DIR [COUNT SIZE]")
		os.Exit(64)
	}
	dir := os.Args[1]
	count, size := 1, int64(-1)
	if len(os.Args) == 4 {
		var err error
		if count, err = strconv.Atoi(os.Args[2]); err != nil || count < 1 {
			fail(fmt.Errorf("bad COUNT %q", os.Args[2]))
		}
		if size, err = strconv.ParseInt(os.Args[3], 10, 64); err != nil || size < 0 {
			fail(fmt.Errorf("bad SIZE %q", os.Args[3]))
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		fail(err)
	}
	buf := make([]byte, 64<<10)
	pid := os.Getpid()
	for i := 0; i < count; i++ {
		tmp := fmt.Sprintf("%s/tmp.%d.%d", dir, pid, i)
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o440)
		if err != nil {
			fail(err)
		}
		var src io.Reader = os.Stdin
		if size >= 0 {
			src = io.LimitReader(os.Stdin, size)
		}
		if _, err := io.CopyBuffer(f, src, buf); err != nil {
			fail(err)
		}
		if err := f.Sync(); err != nil {
			fail(err)
		}
		if err := f.Close(); err != nil {
			fail(err)
		}
		if err := os.Rename(tmp, fmt.Sprintf("%s/msg.%d.%d", dir, pid, i)); err != nil {
			fail(err)
		}
		if err := d.Sync(); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "refwrite:", err)
	os.Exit(74)
}
