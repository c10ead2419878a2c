package robust

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// spoolFile returns a valid maildrop file for message seq whose header
// claims uid, and its queue ID.
func spoolFile(seq, uid int) ([]byte, string) {
	body := msg(seq, 2<<10)
	id := spool.NewID(time.Now())
	crc := spool.NewCRC()
	crc.Write(body)
	m := &spool.Meta{ID: id, Time: time.Now(),
		Env:    spool.Envelope{Sender: "sender@bench.example", Recipients: []string{"rcpt@bench.example"}},
		Origin: spool.Origin{UID: uid, GID: uid, User: "claimed", Via: "maildrop", Mode: "t"},
		Size:   int64(len(body)), CRC: crc.Sum32()}
	hdr, _ := spool.EncodeHeader(m)
	return append(hdr, body...), id
}

// plant puts one of each kind of hostile file into maildrop/ and returns
// the names that must be quarantined or removed (never delivered), plus
// the queue ID of a valid message owned by nobody whose header claims
// another UID (delivered as nobody's). goodSeq numbers that message;
// bad messages are numbered from badSeq.
func plant(t *testing.T, e *env, goodSeq, badSeq int) (bad []string, otherUID string) {
	t.Helper()
	md := e.site.Maildrop
	outside := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(md, name), data, 0o440); err != nil {
			t.Fatal(err)
		}
		bad = append(bad, name)
	}
	newID := func() string { return spool.NewID(time.Now()) }

	// A valid file, owned by nobody, claiming uid 0 in its header.
	if os.Geteuid() == 0 {
		data, id := spoolFile(goodSeq, 0)
		// Staged outside maildrop/ (same file system), then renamed in
		// complete, as a writer would.
		stage := filepath.Join(e.site.Dir, id)
		if err := os.WriteFile(stage, data, 0o440); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(stage, 65534, driver.DropGID); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(stage, filepath.Join(md, id)); err != nil {
			t.Fatal(err)
		}
		otherUID = id
	}
	// Symbolic links: to a secret file, and to a valid message outside.
	secret := filepath.Join(outside, "secret")
	os.WriteFile(secret, []byte("SECRET-SYMLINK-TARGET\n"), 0o600)
	id := newID()
	os.Symlink(secret, filepath.Join(md, id))
	bad = append(bad, id)
	data, _ := spoolFile(badSeq, os.Getuid())
	os.WriteFile(filepath.Join(outside, "valid"), data, 0o440)
	id = newID()
	os.Symlink(filepath.Join(outside, "valid"), filepath.Join(md, id))
	bad = append(bad, id)
	// A hard link to a valid message outside maildrop/.
	data, _ = spoolFile(badSeq+1, os.Getuid())
	os.WriteFile(filepath.Join(outside, "linked"), data, 0o440)
	id = newID()
	if err := os.Link(filepath.Join(outside, "linked"), filepath.Join(md, id)); err != nil {
		t.Fatal(err)
	}
	bad = append(bad, id)
	// A FIFO (opening it for reading would block a naive reader forever).
	id = newID()
	if err := syscall.Mkfifo(filepath.Join(md, id), 0o640); err != nil {
		t.Fatal(err)
	}
	bad = append(bad, id)
	// A directory.
	id = newID()
	os.Mkdir(filepath.Join(md, id), 0o750)
	bad = append(bad, id)
	// Truncated, bad version, bad checksum, 0-byte, garbage, bad name.
	data, _ = spoolFile(badSeq+2, os.Getuid())
	write(newID(), data[:len(data)-100])
	data, _ = spoolFile(badSeq+3, os.Getuid())
	write(newID(), bytes.Replace(data, []byte("MAILSHIM-SPOOL 1\n"), []byte("MAILSHIM-SPOOL 99\n"), 1))
	data, _ = spoolFile(badSeq+4, os.Getuid())
	data[len(data)-30] ^= 0x20
	write(newID(), data)
	write(newID(), nil)
	write(newID(), bytes.Repeat([]byte{0xff, 0x00, '\n', 'M'}, 1000))
	data, _ = spoolFile(badSeq+5, os.Getuid())
	write("not-a-queue-id", data)
	// A valid header whose id differs from the file name.
	data, _ = spoolFile(badSeq+6, os.Getuid())
	write(newID(), data)
	return bad, otherUID
}

// TestSpoolTampering plants hostile files in maildrop/ before relayd
// starts (start-up scan) and while it runs (inotify): each is quarantined
// or removed with a log line, never followed, never delivered, never fatal,
// and the good mail around them is delivered. A file claiming another UID
// is delivered as its owner's.
func TestSpoolTampering(t *testing.T) {
	e := newEnv(t, upstream.Options{KeepData: true})
	const good = 3
	if err := driver.FillMaildrop(e.site.Maildrop, good, 2<<10, 0); err != nil {
		t.Fatal(err)
	}
	bad1, other1 := plant(t, e, good, 100)
	e.startRelayd()
	e.waitFor("the first batch to leave maildrop/", 60*time.Second, func() bool { return driver.CountFiles(e.site.Maildrop) == 0 })
	bad2, other2 := plant(t, e, good+1, 200)
	e.waitFor("the second batch to leave maildrop/", 60*time.Second, func() bool { return driver.CountFiles(e.site.Maildrop) == 0 })
	n := good
	if other1 != "" {
		n += 2
	}
	e.waitFor("the good messages", 60*time.Second, func() bool { m, _, _ := e.up.Check(n); return m == 0 })
	e.relaydAlive()
	missing, dups, unknown := e.up.Check(n)
	if missing != 0 || dups != 0 || unknown != 0 {
		t.Errorf("good messages: %d lost, %d duplicated; %d planted messages delivered", missing, dups, unknown)
	}
	for _, m := range e.up.Messages() {
		if bytes.Contains(m.Data, []byte("SECRET-SYMLINK-TARGET")) {
			t.Errorf("a symlink was followed: the secret was delivered")
		}
	}
	bad := append(bad1, bad2...)
	// relayd moves a file out of maildrop/ before it logs the move: give
	// the last log lines the time to be written.
	waitfor.Poll(10*time.Second, func() bool {
		log := e.log()
		for _, name := range bad {
			if !strings.Contains(log, name) {
				return false
			}
		}
		return true
	})
	log := e.log()
	unlogged := 0
	for _, name := range bad {
		if !strings.Contains(log, name) {
			unlogged++
			t.Errorf("no log line names planted file %s", name)
		}
	}
	if _, err := os.Stat(filepath.Join(e.site.Spool, spool.DirQuarantine)); err != nil {
		t.Errorf("no quarantine directory: %v", err)
	}
	quarantined := driver.CountFiles(filepath.Join(e.site.Spool, spool.DirQuarantine))
	uidHeld := "not root: other-UID plant skipped"
	if other1 != "" {
		checked := 0
		for _, m := range e.up.Messages() {
			if m.Seq == good || m.Seq == good+1 {
				checked++
				if !bytes.Contains(m.Data, []byte("65534")) {
					t.Errorf("message planted as nobody claiming uid 0 was not attributed to uid 65534:\n%s", firstLines(m.Data, 12))
				}
			}
		}
		if !strings.Contains(log, "uid-mismatch") {
			t.Errorf("no uid-mismatch log line for the file claiming another UID")
		}
		uidHeld = fmt.Sprintf("the 2 files owned by nobody claiming uid 0 were delivered as uid 65534 (%d checked)", checked)
	}
	_ = other2
	record(t, fmt.Sprintf("%d hostile files in two batches (one before start, one while running) of: symlink to a secret, symlink to a valid message, hard link, FIFO, directory, truncated, bad version, bad CRC, 0-byte, garbage, bad name, id/name mismatch; among %d good messages", len(bad), n),
		fmt.Sprintf("none delivered or followed, %d in quarantine/, %d without a log line, relayd alive, good mail delivered once; %s", quarantined, unlogged, uidHeld))
}

func firstLines(b []byte, n int) string {
	l := strings.SplitN(string(b), "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}
