package robust

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
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
// (seeded), restarts it each time, and checks that every message arrives,
// duplicates are at most the number of kills, and the spool ends empty.
func TestCrashRelayd(t *testing.T) {
	n, kills := size(300, 5000), size(5, 20)
	e := newEnv(t, upstream.Options{})
	sd := seed(t)
	rng := rand.New(rand.NewPCG(sd, 0x5eed))
	if err := driver.FillMaildrop(e.site.Maildrop, n, 2<<10, 0); err != nil {
		t.Fatal(err)
	}
	// Kill points: some by progress (messages delivered), some right after
	// start (during pickup and recovery), chosen by the seeded generator.
	var points []int
	for i := 0; i < kills; i++ {
		points = append(points, 1+rng.IntN(n-1))
	}
	slices.Sort(points)
	e.startRelayd()
	early := 0
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
	if dups > kills {
		t.Errorf("%d duplicates after %d kills (at most one per kill allowed)", dups, kills)
	}
	e.relaydAlive()
	record(t, fmt.Sprintf("drain of %d messages, %d SIGKILLs of relayd (%d during start-up/pickup), seed %d", n, kills, early, sd),
		fmt.Sprintf("lost %d, unknown %d, duplicates %d ≤ %d kills, spool empty", missing, unknown, dups, kills))
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
