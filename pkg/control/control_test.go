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
