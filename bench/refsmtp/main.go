// Command refsmtp is the drain benchmarks' reference client: a bare
// go-smtp client that sends COUNT 2 KB messages to an upstream over CONNS
// authenticated STARTTLS connections at once and prints messages/s. It
// runs as a process of its own, as relayd does, so that both talk to the
// driver's in-process upstream across the same process boundary.
//
//	refsmtp HOST PORT CAFILE COUNT CONNS
//
// It is built static (CGO_ENABLED=0) by the benchmark driver.
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/mailshim/mailshim/bench/driver"
)

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: refsmtp HOST PORT CAFILE COUNT CONNS")
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
