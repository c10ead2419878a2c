// Command refsmtp is the SMTP benchmarks' reference, run as a process of
// its own as relayd is, so that the reference and relayd talk to the
// driver across the same process boundary:
//
//	refsmtp HOST PORT CAFILE COUNT CONNS
//
// is the drain's bare go-smtp client: it sends COUNT 2 KB messages to an
// upstream over CONNS authenticated STARTTLS connections at once and
// prints messages/s;
//
//	refsmtp serve
//
// is the loopback row's bare go-smtp server: it listens on a free loopback
// port, prints its address, and discards every message until its standard
// input ends.
//
// It is built static (CGO_ENABLED=0) by the benchmark driver.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/mailshim/mailshim/bench/driver"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "serve" {
		serve()
		return
	}
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: refsmtp HOST PORT CAFILE COUNT CONNS | refsmtp serve")
		os.Exit(64)
	}
	port, err1 := strconv.Atoi(os.Args[2])
	n, err2 := strconv.Atoi(os.Args[4])
	conns, err3 := strconv.Atoi(os.Args[5])
	if err1 != nil || err2 != nil || err3 != nil || n < 1 || conns < 1 {
		fmt.Fprintln(os.Stderr, "refsmtp: PORT, COUNT and CONNS must be positive numbers")
		os.Exit(64)
	}
	rate, err := driver.BareClient(os.Args[1], port, os.Args[3], n, conns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "refsmtp:", err)
		os.Exit(1)
	}
	fmt.Printf("%.1f\n", rate)
}

func serve() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "refsmtp:", err)
		os.Exit(1)
	}
	go driver.ServeDiscard(ln)
	fmt.Println(ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	ln.Close()
}
