package robust

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailshim/mailshim/bench/driver"
	"github.com/mailshim/mailshim/bench/upstream"
	"github.com/mailshim/mailshim/pkg/spool"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

// TestDiskFullSmallMessages fills the spool (a tmpfs, root only) with
// thousands of 1 KB messages from concurrent sendmail callers while the
// upstream is unreachable, until sendmail exits 73; then the upstream
// comes back while a trickle of callers goes on. The full disk must not
// stop the deliveries that free it: every message sendmail accepted
// (exit 0) is delivered, none it refused, the queue drains, and intake
// works again. A queue of that many small messages in one segment used
// to free nothing until its last message was gone, while the journal's
// reserve ran out after a few thousand transitions: deliveries stalled
// for good on a full disk.
func TestDiskFullSmallMessages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root to mount a small tmpfs under the spool (CI runs as root)")
	}
	fsSize := size(10, 32) // MiB
	e := newEnv(t, upstream.Options{})
	p := startProxy(t, e.up.Addr, 0)
	e.upConf = e.upstreamTOML(p.port, "starttls", e.up.CAFile, e.up.Username, e.up.Password)
	e.queueConf = engineQueue
	e.rewriteConfig()
	sp := e.tmpfsSpool(fsSize)
	e.probe()
	p.down()
	e.startRelayd()

	// The flood: 4 callers until sendmail has refused for 3 s on end.
	var (
		mu       sync.Mutex
		accepted = map[int]bool{}
		refused  = map[int]bool{}
		other    []string
		seq      atomic.Int64
	)
	send := func() int {
		s := int(seq.Add(1) - 1)
		code, stderr := e.sendmail(msg(s, 1<<10))
		mu.Lock()
		defer mu.Unlock()
		switch code {
		case 0:
			accepted[s] = true
		case 73:
			refused[s] = true
		default:
			other = append(other, fmt.Sprintf("seq %d: exit %d: %s", s, code, strings.TrimSpace(stderr)))
		}
		return code
	}
	var lastOK atomic.Int64
	lastOK.Store(time.Now().UnixNano())
	limit := time.Now().Add(5 * time.Minute)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(time.Unix(0, lastOK.Load())) < 3*time.Second && time.Now().Before(limit) {
				if send() == 0 {
					lastOK.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	wg.Wait()
	var st unix.Statfs_t
	unix.Statfs(sp, &st)
	nAcc, nRef := len(accepted), len(refused)
	t.Logf("flood: %d accepted, %d refused, %d other; %d KiB free on the spool", nAcc, nRef, len(other), st.Bavail*uint64(st.Bsize)>>10)
	if nRef == 0 {
		t.Fatalf("the spool never filled (%d accepted)", nAcc)
	}
	if len(other) > 0 {
		t.Errorf("sendmail exits other than 0 and 73 on a filling disk:\n%s", strings.Join(other[:min(len(other), 10)], "\n"))
	}

	// The upstream comes back; a caller goes on every 50 ms meanwhile.
	p.up(t)
	stop := make(chan struct{})
	trickle := make(chan struct{})
	go func() {
		defer close(trickle)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			send()
		}
	}()
	delivered := func() (missing int) {
		got := e.up.Seqs()
		mu.Lock()
		defer mu.Unlock()
		for s := range accepted {
			if got[s] == 0 {
				missing++
			}
		}
		return missing
	}
	ok := waitfor.Poll(3*time.Minute, func() bool { return delivered() == 0 })
	close(stop)
	<-trickle
	if !ok {
		var stt unix.Statfs_t
		unix.Statfs(sp, &stt)
		q, _ := spool.Snapshot(sp)
		t.Fatalf("%d of %d accepted messages not delivered within 3 minutes after the upstream came back (%d queued, %d files in maildrop/, %d KiB free): deliveries stalled on the full disk; relayd log:\n%s",
			delivered(), len(accepted), len(q), driver.CountFiles(e.site.Maildrop), stt.Bavail*uint64(stt.Bsize)>>10, lastLines(e.log(), 15))
	}
	e.waitFor("an empty spool", time.Minute, e.spoolEmpty)
	// Intake works again.
	if code := send(); code != 0 {
		t.Errorf("sendmail after the queue drained: exit %d", code)
	}
	e.waitFor("the last message", time.Minute, func() bool { return delivered() == 0 })
	e.relaydAlive()

	got := e.up.Seqs()
	mu.Lock()
	defer mu.Unlock()
	var wrong []int
	dups := 0
	for s, c := range got {
		if !accepted[s] {
			wrong = append(wrong, s)
		}
		dups += c - 1
	}
	sort.Ints(wrong)
	if len(wrong) > 0 {
		t.Errorf("%d messages delivered that sendmail did not accept: %v", len(wrong), wrong[:min(len(wrong), 10)])
	}
	record(t, fmt.Sprintf("%d MiB tmpfs spool: 4 sendmail callers of 1 KB messages behind an unreachable upstream until sendmail refused for 3 s (%d accepted, %d refused with 73); then the upstream back, a caller every 50 ms", fsSize, nAcc, nRef),
		fmt.Sprintf("every accepted message delivered (%d in all), %d refused ones delivered, %d duplicates; queue drained; intake worked again", len(accepted), len(wrong), dups))
}
