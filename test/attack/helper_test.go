package attack

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// helperMain is this test binary run again, as an attacker's UID, to do
// what the test process (root) cannot do under another UID. Modes:
//
// SOCK is a unix socket's path, or "tcp:HOST:PORT".
//
//	hold SOCK N PREFIX   open N connections to SOCK, write (PREFIX "@FILE":
//	                     FILE's bytes)
//	                     PREFIX on each, print "ready", and keep them open
//	                     (sending nothing more) until stdin is closed.
//	raw SOCK FILE        connect to SOCK, send FILE's bytes, shut down the
//	                     write side, and print what comes back (at most
//	                     1 MiB).
func helperMain(mode string, args []string) int {
	switch mode {
	case "hold":
		if len(args) != 3 {
			fmt.Fprintln(os.Stderr, "hold: SOCK N PREFIX")
			return 2
		}
		n, _ := strconv.Atoi(args[1])
		prefix := args[2]
		if f, ok := strings.CutPrefix(prefix, "@"); ok {
			b, err := os.ReadFile(f)
			if err != nil {
				fmt.Println(err)
				return 1
			}
			prefix = string(b)
		}
		var conns []net.Conn
		for i := 0; i < n; i++ {
			c, err := dial(args[0])
			if err != nil {
				fmt.Printf("dial %d: %v\n", i, err)
				return 1
			}
			if prefix != "" {
				c.Write([]byte(prefix))
			}
			conns = append(conns, c)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		for _, c := range conns {
			c.Close()
		}
		return 0
	}
	if mode == "raw" {
		if len(args) != 2 {
			fmt.Fprintln(os.Stderr, "raw: SOCK FILE")
			return 2
		}
		data, err := os.ReadFile(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c, err := dial(args[0])
		if err != nil {
			fmt.Printf("dial: %v\n", err)
			return 1
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		c.Write(data)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		io.Copy(os.Stdout, io.LimitReader(c, 1<<20))
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

func dial(sock string) (net.Conn, error) {
	if a, ok := strings.CutPrefix(sock, "tcp:"); ok {
		return net.Dial("tcp", a)
	}
	return net.Dial("unix", sock)
}
