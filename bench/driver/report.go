package driver

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Row is one line of the benchmark table.
type Row struct {
	Name   string // the measurement
	RefFor string // the reference measured in the same run ("—" if none)
	Unit   string // "ms", "msg/s", "MB", "s", "µs/msg"
	Subj   Stats
	Ref    *Stats
	Ratio  string // e.g. "1.21× (p99 1.50×)"
	Target string
	// Verdict is "met", "MISSED: ...", "not measured: ..." or "info".
	Verdict string
	Note    string
}

// Report is a whole run of the driver.
type Report struct {
	Machine  Machine
	Started  time.Time
	Duration time.Duration
	Smoke    bool
	Runs     int
	Rows     []Row
	Notes    []string
}

func (r Row) cell(v float64) string {
	switch r.Unit {
	case "ms":
		return fmtMS(v)
	case "msg/s":
		return fmt.Sprintf("%.0f/s", v)
	case "MB":
		return fmt.Sprintf("%.1f MB", v)
	case "s":
		return fmt.Sprintf("%.2f s", v)
	default:
		return fmt.Sprintf("%.0f %s", v, r.Unit)
	}
}

func (r Row) cells() []string {
	if r.Subj.N == 0 {
		return []string{r.Name, "—", "—", "—", "—", r.RefFor, "—", r.Target, r.Verdict}
	}
	ref := r.RefFor
	if r.Ref != nil && r.Ref.N > 0 {
		ref = fmt.Sprintf("%s: %s (p99 %s)", r.RefFor, r.cell(r.Ref.Median), r.cell(r.Ref.P99))
	}
	v := r.Verdict
	if r.Note != "" {
		v += "; " + r.Note
	}
	return []string{r.Name, r.cell(r.Subj.Median), r.cell(r.Subj.P90), r.cell(r.Subj.P99),
		r.cell(r.Subj.Min) + " – " + r.cell(r.Subj.Max) + fmt.Sprintf(" (n=%d)", r.Subj.N), ref, r.Ratio, r.Target, v}
}

var header = []string{"measurement", "median", "p90", "p99", "min – max", "reference (same run)", "ratio", "target", "verdict"}

// WriteText prints the table for a terminal.
func (rep *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "mailshim bench (%s, %d runs) on %s\n\n", map[bool]string{true: "smoke", false: "full"}[rep.Smoke], rep.Runs, rep.Machine)
	for _, r := range rep.Rows {
		c := r.cells()
		fmt.Fprintf(w, "%-44s median %-10s p90 %-10s p99 %-10s %s\n", c[0], c[1], c[2], c[3], c[4])
		fmt.Fprintf(w, "%-44s ref %s  ratio %s  target %s  => %s\n\n", "", c[5], c[6], c[7], c[8])
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// WriteMarkdown writes the table section of docs/BENCHMARKS.md.
func (rep *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "Measured %s UTC in %s (%s run, %d runs per measurement).\n\n",
		rep.Started.UTC().Format("2006-01-02 15:04"), rep.Duration.Round(time.Second), map[bool]string{true: "smoke", false: "full"}[rep.Smoke], rep.Runs)
	m := rep.Machine
	fmt.Fprintf(w, "Machine: %d CPUs (`%s`), %d MB RAM, kernel `%s`, spool file system %s, %s, driver running as %s.\n\n",
		m.NProc, m.CPU, m.MemMB, m.Kernel, m.SpoolFS, m.Go, map[bool]string{true: "root", false: "non-root"}[m.Root])
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for _, r := range rep.Rows {
		c := r.cells()
		for i := range c {
			c[i] = strings.ReplaceAll(c[i], "|", "\\|")
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(c, " | "))
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range rep.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// latencyRow builds a row comparing subject and reference wall times.
func latencyRow(name, refFor, target string, p *Pair, maxMedian, maxP99 float64) Row {
	s := Summarise(durations(walls(p.Subject)))
	r := Summarise(durations(walls(p.Ref)))
	rm, r99 := s.Median/r.Median, s.P99/r.P99
	row := Row{Name: name, RefFor: refFor, Unit: "ms", Subj: s, Ref: &r, Target: target,
		Ratio: fmt.Sprintf("%.2f× (p99 %.2f×)", rm, r99)}
	var miss []string
	if rm > maxMedian {
		miss = append(miss, fmt.Sprintf("median %.2f× > %.1f×", rm, maxMedian))
	}
	if maxP99 > 0 && r99 > maxP99 {
		miss = append(miss, fmt.Sprintf("p99 %.2f× > %.1f×", r99, maxP99))
	}
	row.Verdict = verdict(miss)
	return row
}

func verdict(miss []string) string {
	if len(miss) == 0 {
		return "met"
	}
	return "MISSED: " + strings.Join(miss, ", ")
}

func notMeasured(name, refFor, target, why string) Row {
	return Row{Name: name, RefFor: refFor, Target: target, Verdict: "not measured: " + why}
}
