// Command drainab compares relayd binaries on the drain of a pre-filled
// queue: each drains the same number of messages in turn (A B A B ...)
// against one in-process STARTTLS+AUTH upstream, and relayd's CPU per
// message (user+sys from wait4) and the rate of every run are printed.
//
//	go build -o /tmp/a ./cmd/relayd  (before the change)
//	go build -o /tmp/b ./cmd/relayd  (after)
//	go run ./bench/cmd/drainab --n 10000 --conc 1 --rounds 3 /tmp/a /tmp/b
package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/mailshim/mailshim/bench/driver"
)

func main() {
	n := pflag.Int("n", 10000, "messages per drain")
	conc := pflag.Int("conc", 1, "[queue] concurrency")
	rounds := pflag.Int("rounds", 3, "runs of each binary")
	maildrop := pflag.Bool("maildrop", false, "time pickup from maildrop/ and delivery together (from exec) instead of the drain of a pre-filled queue")
	pflag.Parse()
	if pflag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: drainab [--n N] [--conc C] [--rounds R] [--maildrop] RELAYD...")
		os.Exit(2)
	}
	if err := driver.DrainAB(os.Stdout, pflag.Args(), *conc, *n, *rounds, !*maildrop); err != nil {
		fmt.Fprintln(os.Stderr, "drainab:", err)
		os.Exit(1)
	}
}
