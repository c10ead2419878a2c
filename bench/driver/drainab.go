package driver

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mailshim/mailshim/pkg/smtptest"
)

// DrainAB has each relayd binary in turn deliver n messages, rounds
// times (A B A B ...), at concurrency conc, to one in-process upstream,
// and writes each run's rate, relayd's CPU (user+sys from wait4) per
// message and peak RSS to out, then the medians. It is the before/after
// measurement of a change to the drain path: the binaries alternate, so
// both see the same machine. prefill is drainOnce's: the messages are in
// relayd's queue before the timed run (timed from event=start), or
// (false) in maildrop/ (timed from exec, pickup included).
func DrainAB(out io.Writer, bins []string, conc, n, rounds int, prefill bool) error {
	srv, err := smtptest.Start(smtptest.Options{Username: benchUser, Password: benchPass, NoStore: true, SMTPUTF8: true, DSN: true, BatchReplies: true})
	if err != nil {
		return err
	}
	defer srv.Close()
	work, err := os.MkdirTemp("", "drainab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	rates := make([][]float64, len(bins))
	cpus := make([][]float64, len(bins))
	for r := 0; r < rounds; r++ {
		for i, bin := range bins {
			dir := filepath.Join(work, fmt.Sprintf("d-%d-%d", r, i))
			rate, cpuUS, rss, err := drainOnce(Options{}, dir, &Binaries{Relayd: bin}, srv, conc, n, prefill)
			if err != nil {
				return fmt.Errorf("%s: %w", bin, err)
			}
			rates[i] = append(rates[i], rate)
			cpus[i] = append(cpus[i], cpuUS)
			fmt.Fprintf(out, "round %d %-40s %6.0f msg/s %6.1f µs/msg  peak RSS %5.1f MB  load %s\n", r+1, bin, rate, cpuUS, float64(rss)/1024, loadAvg())
		}
	}
	for i, bin := range bins {
		s, c := Summarise(rates[i]), Summarise(cpus[i])
		fmt.Fprintf(out, "median %-40s %6.0f msg/s (%.0f–%.0f) %6.1f µs/msg (%.1f–%.1f)\n", bin, s.Median, s.Min, s.Max, c.Median, c.Min, c.Max)
	}
	return nil
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil || len(b) < 14 {
		return "?"
	}
	return string(b[:14])
}
