package robust

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/config"
	"github.com/mailshim/mailshim/pkg/spool"
)

func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("MAILSHIM_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MAILSHIM_SEED=%q: %v", v, err)
		}
		s = n
	}
	t.Logf("seed %d (replay with MAILSHIM_SEED=%d)", s, s)
	return s
}

// TestCrashRelayd kills relayd with SIGKILL at random points of a drain
// (seeded), restarts it each time, and checks that every message arrives
// and the spool ends empty, and that each kill costs no more duplicates
// than the design allows: at-least-once delivery re-sends what the
// upstream took and relayd had not recorded as done when it died, which
// is at most one message per upstream session ([queue] concurrency: a
// session's message is done — its del line written — before the next
// one's data goes out). After each kill the test counts those copies
// exactly (the upstream's arrivals against the queue relayd left) and
// checks that every duplicate is one of them.
func TestCrashRelayd(t *testing.T) {
	n, kills := size(300, 5000), size(5, 20)
	e := newEnv(t, upstream.Options{})
	sd := seed(t)
	rng := rand.New(rand.NewPCG(sd, 0x5eed))
	// The number of sessions, 1 to 4, so that the bound is checked both
	// at the default (4) and at one session, where it is one per kill.
	e.queueConf = quickQueue + fmt.Sprintf("concurrency = %d\n", 1+rng.IntN(4))
	e.rewriteConfig()
	cfg, err := config.Load(e.site.Config)
	if err != nil {
		t.Fatal(err)
	}
	sessions := cfg.Queue.Concurrency
	if err := driver.FillMaildrop(e.site.Maildrop, n, 2<<10, 0); err != nil {
		t.Fatal(err)
	}
	seqOf := maildropSeqs(t, e.site.Maildrop)
	// Kill points: some by progress (messages delivered), some right after
	// start (during pickup and recovery), chosen by the seeded generator.
	var points []int
	for i := 0; i < kills; i++ {
		points = append(points, 1+rng.IntN(n-1))
	}
	slices.Sort(points)
	e.startRelayd()
	early, unrecorded, worst := 0, 0, 0
	counted := map[int]int{} // seq: copies already counted as unrecorded
	for i, p := range points {
		if rng.IntN(4) == 0 {
			// Early kill: after a random number of polls of the spool,
			// i.e. somewhere in start-up, pickup or the first session.
			polls := rng.IntN(20)
			for j := 0; j < polls && !e.r.Exited(); j++ {
				_ = e.site.Queued()
			}
			early++
		} else {
			e.waitFor(fmt.Sprintf("kill point %d: %d deliveries", i, p), 5*time.Minute, func() bool {
				return e.up.Delivered() >= int64(p) || e.r.Exited()
			})
		}
		e.relaydAlive()
		e.kill()
		k, which := e.unrecorded(seqOf, counted)
		t.Logf("kill %d (%d sessions): %d delivered so far, %d of them not recorded as done: %v", i, sessions, e.up.Delivered(), k, which)
		if k > sessions {
			t.Fatalf("kill %d: %d messages delivered but not recorded as done, more than one per session (%d sessions): %v\nrelayd log:\n%s",
				i, k, sessions, which, e.r.Tail(40))
		}
		unrecorded += k
		worst = max(worst, k)
		e.startRelayd()
	}
	e.waitFor("every message", 10*time.Minute, func() bool {
		missing, _, _ := e.up.Check(n)
		return missing == 0
	})
	e.waitFor("an empty spool", 2*time.Minute, e.spoolEmpty)
	missing, dups, unknown := e.up.Check(n)
	if missing != 0 || unknown != 0 {
		t.Errorf("after %d kills: %d messages lost, %d unknown deliveries", kills, missing, unknown)
	}
	// Every duplicate is a copy a kill left unrecorded: that copy's
	// message was still queued, so it went out once more. A duplicate
	// not counted at a kill came from something else.
	if dups != unrecorded {
		t.Errorf("%d duplicates, but the kills left %d delivered messages unrecorded", dups, unrecorded)
	}
	if dups > kills*sessions {
		t.Errorf("%d duplicates after %d kills with %d sessions (at most one per session per kill)", dups, kills, sessions)
	}
	e.relaydAlive()
	record(t, fmt.Sprintf("drain of %d messages, %d sessions, %d SIGKILLs of relayd (%d during start-up/pickup), seed %d", n, sessions, kills, early, sd),
		fmt.Sprintf("lost %d, unknown %d; duplicates %d, each a delivery a kill left unrecorded (at most %d at one kill ≤ %d sessions); spool empty", missing, unknown, dups, worst, sessions))
}

// TestCrashSendmail kills sendmail callers with SIGKILL at random points of
// 1 MB writes (and some right after their input ended, during the commit),
// then lets relayd clean up and deliver: no half message is ever delivered,
// every message whose sendmail exited 0 arrives, nothing is left behind.
func TestCrashSendmail(t *testing.T) {
	tries := size(20, 200)
	e := newEnv(t, upstream.Options{KeepData: true})
	e.probe()
	sd := seed(t)
	rng := rand.New(rand.NewPCG(sd, 0xca11))
	const big = 1 << 20
	var accepted, killedMid, killedCommit []int
	for i := 0; i < tries; i++ {
		seq := 1000 + i
		data := msg(seq, big)
		cmd := exec.Command(e.site.Sendmail, "-t", "-i")
		cmd.Env = e.site.Env
		cmd.Dir = "/"
		if e.site.Cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.site.Cred}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		switch kind := rng.IntN(4); kind {
		case 0: // complete: must be accepted
			in.Write(data)
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("sendmail #%d: %v: %s", i, err, stderr.String())
			}
			accepted = append(accepted, seq)
		case 1: // killed after its input ended: committed or not, never half
			in.Write(data)
			in.Close()
			cmd.Process.Signal(syscall.SIGKILL)
			err := cmd.Wait()
			var ee *exec.ExitError
			if err == nil {
				accepted = append(accepted, seq)
			} else if errors.As(err, &ee) {
				killedCommit = append(killedCommit, seq)
			}
		default: // killed mid-write: never delivered
			k := rng.IntN(len(data))
			in.Write(data[:k])
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			in.Close()
			killedMid = append(killedMid, seq)
		}
	}
	e.startRelayd()
	e.waitFor("the accepted messages", 5*time.Minute, func() bool {
		seqs := e.up.Seqs()
		for _, s := range accepted {
			if seqs[s] == 0 {
				return false
			}
		}
		return true
	})
	// relayd's cleanup: the maildrop ends empty (no temp file survives).
	e.waitFor("an empty spool", 2*time.Minute, e.spoolEmpty)
	seqs := e.up.Seqs()
	for _, s := range killedMid {
		if seqs[s] != 0 {
			t.Errorf("message %d was killed mid-write but delivered %d times", s, seqs[s])
		}
	}
	half := 0
	for _, m := range e.up.Messages() {
		if !bytes.Contains(m.Data, []byte(fmt.Sprintf("END-OF-MESSAGE %d", m.Seq))) || len(m.Data) < big-200 {
			half++
			t.Errorf("message %d delivered incomplete (%d bytes)", m.Seq, len(m.Data))
		}
	}
	committedAnyway := 0
	for _, s := range killedCommit {
		committedAnyway += min(seqs[s], 1)
	}
	e.relaydAlive()
	record(t, fmt.Sprintf("%d sendmail callers with 1 MB: %d complete, %d SIGKILLed mid-write, %d SIGKILLed after input (during commit), seed %d",
		tries, len(accepted), len(killedMid), len(killedCommit), sd),
		fmt.Sprintf("every exit-0 message delivered; %d half messages delivered; %d of the mid-write kills delivered; %d of %d commit-time kills had committed (whole); spool empty after cleanup",
			half, countDelivered(seqs, killedMid), committedAnyway, len(killedCommit)))
}

func countDelivered(seqs map[int]int, list []int) int {
	n := 0
	for _, s := range list {
		if seqs[s] > 0 {
			n++
		}
	}
	return n
}

// maildropSeqs maps the queue ID of each message in dir (its file name)
// to its sequence number.
func maildropSeqs(t *testing.T, dir string) map[string]int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int, len(ents))
	key := []byte(upstream.SeqHeader + ": ")
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, key)
		if i < 0 {
			t.Fatalf("%s: no %s header", ent.Name(), upstream.SeqHeader)
		}
		rest := b[i+len(key):]
		n, err := strconv.Atoi(string(rest[:bytes.IndexByte(rest, '\n')]))
		if err != nil {
			t.Fatal(err)
		}
		out[ent.Name()] = n
	}
	return out
}

// unrecorded waits until the upstream has counted everything the killed
// relayd sent (each of its sessions closed), then counts the copies the
// upstream took of messages that relayd's queue (or maildrop/) still
// holds, less those counted at an earlier kill: each is a delivery
// relayd had not recorded as done, and its message goes out again.
// which names them (queue ID, sequence number, state).
func (e *env) unrecorded(seqOf map[string]int, counted map[int]int) (k int, which []string) {
	e.t.Helper()
	e.waitFor("the upstream's sessions to end", 30*time.Second, func() bool { return e.up.Live() == 0 })
	snap, err := spool.Snapshot(e.site.Spool)
	if err != nil {
		e.t.Fatal(err)
	}
	seqs := e.up.Seqs()
	note := func(id string, state string) {
		s, ok := seqOf[id]
		if !ok || seqs[s] <= counted[s] {
			return
		}
		k += seqs[s] - counted[s]
		which = append(which, fmt.Sprintf("%s(seq %d, %s, %d copies)", id, s, state, seqs[s]))
		counted[s] = seqs[s]
	}
	for id, se := range snap {
		note(id, se.State)
	}
	ents, _ := os.ReadDir(e.site.Maildrop)
	for _, ent := range ents {
		note(ent.Name(), "maildrop")
	}
	slices.Sort(which)
	return k, which
}
