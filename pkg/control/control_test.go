package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/sockserve"
	"github.com/mailshim/mailshim/pkg/waitfor"
)

func TestRequestRoundTrip(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := sockserve.Listen(sock, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v, want 0666", fi.Mode().Perm())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- (&Server{Handler: func(p Peer, verb string, args []string, out io.Writer) error {
			if p.UID != os.Getuid() || !p.Admin {
				return fmt.Errorf("peer %+v", p)
			}
			if verb == "fail" {
				return errors.New("no such message")
			}
			fmt.Fprintf(out, "%s %s\n", verb, strings.Join(args, ","))
			return nil
		}}).Serve(ctx, ln)
	}()
	var out bytes.Buffer
	if err := Request(sock, VerbHold, []string{"A", "B C"}, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "hold A,B C\n" {
		t.Errorf("output %q", got)
	}
	if err := Request(sock, "fail", nil, io.Discard); err == nil || !strings.Contains(err.Error(), "no such message") {
		t.Errorf("error %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := Request(sock, VerbMailq, nil, io.Discard); !errors.Is(err, ErrUnavailable) {
		t.Errorf("after close: %v, want ErrUnavailable", err)
	}
}

func TestAdminOnly(t *testing.T) {
	for verb, want := range map[string]bool{VerbMailq: false, VerbFlush: false, VerbList: true, VerbShow: true, VerbHold: true, VerbRelease: true, VerbDelete: true, "other": true} {
		if AdminOnly(verb) != want {
			t.Errorf("AdminOnly(%q) = %v", verb, !want)
		}
	}
}

// A client that connects and sends nothing is answered "bad request" and
// dropped after RequestTimeout (not Timeout), and its slot goes to the
// next client, which was waiting for it.
func TestIdleClientDropped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := sockserve.Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	srv := &Server{
		Handler: func(p Peer, verb string, args []string, out io.Writer) error {
			fmt.Fprintln(out, verb)
			return nil
		},
		Limiter: &sockserve.Limiter{Global: 1, PerUID: 1, MaxWaiting: 1, MaxWaitingPerUID: 1, Wait: Timeout},
	}
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	waitfor.True(t, "the idle client to hold the one slot", 10*time.Second, func() bool { a, _ := srv.Limiter.InUse(); return a == 1 })
	start := time.Now()
	var out bytes.Buffer
	if err := Request(sock, VerbMailq, nil, &out); err != nil || out.String() != "mailq\n" {
		t.Fatalf("request behind an idle client: %v, output %q", err, out.String())
	}
	if d := time.Since(start); d > RequestTimeout+5*time.Second {
		t.Errorf("served after %v: the idle client held the slot longer than RequestTimeout (%v)", d, RequestTimeout)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	var a answer
	if err := json.NewDecoder(idle).Decode(&a); err != nil || !strings.HasPrefix(a.Error, "bad request: ") {
		t.Errorf("the idle client's answer: %+v, %v; want a bad request", a, err)
	}
}

// A non-admin UID may flush once per FlushEvery; others are not affected.
func TestFlushGate(t *testing.T) {
	g := &flushGate{every: time.Minute}
	t0 := time.Unix(1000, 0)
	if !g.allow(1, t0) || g.allow(1, t0.Add(59*time.Second)) || !g.allow(2, t0.Add(time.Second)) || !g.allow(1, t0.Add(61*time.Second)) {
		t.Fatal("flush gate")
	}
}

// reports records FlushThrottled calls.
type reports struct{ throttled [][2]int }

func (r *reports) ControlAcceptFailed(error, int) {}
func (r *reports) ControlBusy(int, ...any)        {}
func (r *reports) FlushThrottled(uid, refused int) {
	r.throttled = append(r.throttled, [2]int{uid, refused})
}

// The flush gate refuses a user's flush within FlushEvery of the last and
// reports the refusals at most once a minute per user, each line with the
// count since the last: the first at once, the rest a minute later.
func TestFlushGateRateLimitsItsLog(t *testing.T) {
	var r reports
	g := &flushGate{every: FlushEvery, log: &r}
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	if !g.allow(1000, t0) {
		t.Fatal("the first flush refused")
	}
	for i := 1; i <= 20; i++ {
		if g.allow(1000, t0.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("flush %d s after the first allowed", i)
		}
	}
	if g.allow(2000, t0) != true || g.allow(2000, t0.Add(time.Second)) {
		t.Fatal("uid 2000's flushes")
	}
	if fmt.Sprint(r.throttled) != "[[1000 1] [2000 1]]" {
		t.Fatalf("reports %v, want one per user", r.throttled)
	}
	// A minute after the first line, the next refusal reports the 19
	// counted since and itself.
	g.allow(1000, t0.Add(61*time.Second)) // allowed: a minute has passed
	if g.allow(1000, t0.Add(62*time.Second)) {
		t.Fatal("a second flush within the minute allowed")
	}
	if fmt.Sprint(r.throttled) != "[[1000 1] [2000 1] [1000 20]]" {
		t.Errorf("reports %v, want [1000 20] last", r.throttled)
	}
}
