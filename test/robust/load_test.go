package robust

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/control"
)

// TestLoadManyRecipients sends one message to 10,000 recipients given on
// the command line: every recipient is delivered exactly once.
func TestLoadManyRecipients(t *testing.T) {
	const n = 10000
	e := newEnv(t, upstream.Options{KeepData: true})
	e.probe()
	var rcpts []string
	for i := 0; i < n; i++ {
		rcpts = append(rcpts, fmt.Sprintf("user%05d@bench.example", i))
	}
	body := msg(0, 2<<10)
	var stderr strings.Builder
	p := e.site.SendmailProc(body, append([]string{"-i", "--"}, rcpts...)...)
	p.Stderr = &stderr
	if _, err := p.Run(); err != nil {
		t.Fatalf("sendmail with %d recipients: %v", n, err)
	}
	e.startRelayd()
	e.waitFor("every recipient", 5*time.Minute, func() bool { return e.up.Recipients() >= n })
	e.waitFor("an empty spool", time.Minute, e.spoolEmpty)
	seen := map[string]int{}
	for _, m := range e.up.Messages() {
		for _, r := range m.To {
			seen[r]++
		}
	}
	missing, dup := 0, 0
	for _, r := range rcpts {
		switch c := seen[r]; {
		case c == 0:
			missing++
		case c > 1:
			dup += c - 1
		}
	}
	if missing != 0 || dup != 0 || len(seen) != n {
		t.Errorf("%d recipients: %d missing, %d duplicated, %d distinct delivered", n, missing, dup, len(seen))
	}
	record(t, fmt.Sprintf("1 message to %d command-line recipients", n),
		fmt.Sprintf("%d distinct recipients delivered in %d transaction(s), %d missing, %d duplicated", len(seen), len(e.up.Messages()), missing, dup))
}

// TestLoadConcurrentCallers runs many sendmail callers at once while
// relayd drains: every message that was accepted arrives exactly once.
func TestLoadConcurrentCallers(t *testing.T) {
	total, callers := size(300, 1000), size(30, 50)
	e := newEnv(t, upstream.Options{})
	e.probe()
	e.startRelayd()
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seq := int(next.Add(1) - 1)
				if seq >= total {
					return
				}
				if _, err := e.site.SendmailProc(msg(seq, 2<<10), "-t", "-i").Run(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d sendmail calls failed, first: %v", f, total, firstErr.Load())
	}
	e.waitFor("every message", 5*time.Minute, func() bool { m, _, _ := e.up.Check(total); return m == 0 })
	e.waitFor("an empty spool", time.Minute, e.spoolEmpty)
	missing, dups, unknown := e.up.Check(total)
	if missing != 0 || dups != 0 || unknown != 0 {
		t.Errorf("%d lost, %d duplicated, %d unknown", missing, dups, unknown)
	}
	e.relaydAlive()
	record(t, fmt.Sprintf("%d messages from %d concurrent sendmail callers while relayd drains", total, callers),
		fmt.Sprintf("all exited 0; %d lost, %d duplicated, %d unknown; spool empty", missing, dups, unknown))
}

// TestLoadRestartQueued queues many messages behind an unreachable
// upstream, restarts relayd with the upstream repaired, and checks that all
// of them are delivered once (100,000 under make stress).
func TestLoadRestartQueued(t *testing.T) {
	n := size(2000, 100000)
	e := newEnv(t, upstream.Options{})
	good := e.upConf
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	e.upConf = e.upstreamTOML(port, "starttls", e.up.CAFile, e.up.Username, e.up.Password)
	e.queueConf = strings.Replace(quickQueue, `retry = ["1s"]`, `retry = ["10m"]`, 1)
	e.rewriteConfig()
	if err := driver.FillMaildrop(e.site.Maildrop, n, 2<<10, 0); err != nil {
		t.Fatal(err)
	}
	e.startRelayd()
	e.waitFor("pickup of every message", 30*time.Minute, func() bool { return driver.CountFiles(e.site.Maildrop) == 0 })
	_, peak1, _ := e.r.RSS()
	if _, err := e.r.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	e.upConf, e.queueConf = good, quickQueue
	e.rewriteConfig()
	t0 := time.Now()
	e.startRelayd()
	// The messages were deferred for 10 minutes before the restart: ask
	// for a flush, as an operator would after repairing the upstream.
	sock := filepath.Join(e.site.Dir, "control.sock")
	e.waitFor("relayd's control socket to accept a flush", time.Minute, func() bool {
		return control.Request(sock, control.VerbFlush, nil, io.Discard) == nil
	})
	e.waitFor("every message after the restart", 60*time.Minute, func() bool { m, _, _ := e.up.Check(n); return m == 0 })
	drain := time.Since(t0)
	_, peak2, _ := e.r.RSS()
	e.waitFor("an empty spool", 5*time.Minute, e.spoolEmpty)
	missing, dups, unknown := e.up.Check(n)
	if missing != 0 || dups != 0 || unknown != 0 {
		t.Errorf("%d lost, %d duplicated, %d unknown", missing, dups, unknown)
	}
	e.relaydAlive()
	record(t, fmt.Sprintf("%d messages queued behind an unreachable upstream, relayd restarted with it repaired", n),
		fmt.Sprintf("%d lost, %d duplicated, %d unknown; drained in %v; relayd peak RSS %.1f MB before, %.1f MB after the restart", missing, dups, unknown, drain.Round(time.Second), float64(peak1)/1024, float64(peak2)/1024))
}
