package relay

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mailshim/mailshim/pkg/config"
)

// A server that never finishes its greeting (a slowloris one sends it a
// byte at a time, or nothing at all) is a connect-stage timeout, not a TLS
// problem: nothing has been sent yet when it stalls.
func TestStalledGreetingIsConnectStage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("220-slow")) // never ends the line
				<-done
			}()
		}
	}()
	up := config.Upstream{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, TLS: "starttls"}
	opts := testOpts()
	opts.CommandTimeout = 500 * time.Millisecond
	_, err = Dial(context.Background(), up, opts)
	e := asError(t, err)
	if e.Stage != StageConnect || e.Class != Temporary {
		t.Fatalf("stage %q class %v: %v", e.Stage, e.Class, e)
	}
}
