// Package driver is mailshim's benchmark driver: it builds the real
// binaries, installs them into a private site (setgid when root), measures
// each figure of docs/BENCHMARKS.md's table against a reference measured
// in the same run, and renders the table for the terminal and for
// docs/BENCHMARKS.md.
package driver

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Options select what to run and how much.
type Options struct {
	Smoke   bool   // seconds-long run that checks the driver works
	Runs    int    // runs per measurement (each run is a batch of samples)
	WorkDir string // where spools live (on the file system to measure)
	Log     io.Writer
	// Symbols keeps the binaries' symbol tables (for perf record -p).
	Symbols bool
	// MemN overrides the number of messages queued for the memory rows.
	MemN int
	// DrainN overrides the number of messages in each drain run.
	DrainN int
	// Only, when non-empty, limits the run to these groups: "sendmail",
	// "drain", "load", "memory", "loopback".
	Only map[string]bool
}

type sizes struct {
	small, large, huge   int   // samples per run
	bsMessages, bsRounds int   // -bs: messages per session, sessions per run
	drainN               int   // messages in a drain
	drainConc            []int // concurrency levels
	loadFor              time.Duration
	loadCallers          int
	memN                 int // messages queued for the memory/scan row
	loopbackN            int // messages per loopback listener run
}

func (o Options) sizes() sizes {
	if o.Smoke {
		return sizes{small: 5, large: 2, huge: 0, bsMessages: 10, bsRounds: 1, drainN: 200, drainConc: []int{1, 4},
			loadFor: 2 * time.Second, loadCallers: 4, memN: 1000, loopbackN: 80}
	}
	return sizes{small: 100, large: 10, huge: 2, bsMessages: 100, bsRounds: 10, drainN: 10000, drainConc: []int{1, 2, 4, 8},
		loadFor: 60 * time.Second, loadCallers: 8, memN: 100000, loopbackN: 4000}
}

func (o Options) want(group string) bool { return len(o.Only) == 0 || o.Only[group] }

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "bench: "+format+"\n", args...)
	}
}

// Run builds, measures and returns the report.
func Run(o Options) (*Report, error) {
	if o.Runs < 1 {
		o.Runs = 3
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	if o.WorkDir == "" {
		o.WorkDir = os.TempDir()
	}
	work, err := os.MkdirTemp(o.WorkDir, "mailbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	rep := &Report{Machine: Describe(work), Started: time.Now(), Smoke: o.Smoke, Runs: o.Runs}
	o.logf("building into %s", work)
	build := Build
	if o.Symbols {
		build = BuildWithSymbols
	}
	bins, err := build(root, filepath.Join(work, "bin"))
	if err != nil {
		return nil, err
	}
	refPath = bins.Refwrite
	for name, why := range bins.Missing {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s did not build: %s", name, why))
	}
	sz := o.sizes()
	if o.DrainN > 0 {
		sz.drainN = o.DrainN
	}
	if o.MemN > 0 {
		sz.memN = o.MemN
	}
	if o.want("sendmail") {
		rows, notes, err := sendmailRows(o, sz, work, bins)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, rows...)
		rep.Notes = append(rep.Notes, notes...)
	}
	if o.want("drain") || o.want("load") || o.want("memory") || o.want("loopback") {
		rows, notes, err := relaydRows(o, sz, work, bins)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, rows...)
		rep.Notes = append(rep.Notes, notes...)
	}
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

func sendmailRows(o Options, sz sizes, work string, bins *Binaries) ([]Row, []string, error) {
	site, err := NewSite(filepath.Join(work, "site"), bins, "")
	if err != nil {
		return nil, nil, err
	}
	defer site.Close()
	const (
		t2k   = "median ≤ 1.3×, p99 ≤ 2×"
		tbig  = "median ≤ 1.3×"
		tbs   = "median ≤ 1.5×"
		kb2   = 2 << 10
		mb1   = 1 << 20
		mb100 = 100 << 20
	)
	in := func(name string, size int64) (string, error) {
		p := filepath.Join(work, name)
		return p, writeMessage(p, size, 1)
	}
	f2k, err := in("m2k.eml", kb2)
	if err != nil {
		return nil, nil, err
	}
	f1m, err := in("m1m.eml", mb1)
	if err != nil {
		return nil, nil, err
	}
	var notes []string
	who := "as nobody"
	if site.Cred == nil {
		who = "as the invoking user"
	}
	name2k := "sendmail -t -i, 2 KB, " + site.Note
	if site.Sendmail == "" {
		why := "cmd/sendmail does not build yet"
		// Still measure the reference, so that the driver is exercised.
		var refs []Sample
		for i := 0; i < sz.small; i++ {
			x, err := site.ref(f2k).Run()
			if err != nil {
				return nil, nil, err
			}
			refs = append(refs, x)
			if err := site.Clean(); err != nil {
				return nil, nil, err
			}
		}
		rs := Summarise(durations(walls(refs)))
		notes = append(notes, fmt.Sprintf("reference alone (refwrite 2 KB %s): median %s, p99 %s, n=%d", who, fmtMS(rs.Median), fmtMS(rs.P99), rs.N))
		return []Row{
			notMeasured("sendmail -t -i, 2 KB", "refwrite 2 KB "+who, t2k, why),
			notMeasured("sendmail -t -i, 1 MB", "refwrite 1 MB", tbig, why),
			notMeasured("sendmail -t -i, 100 MB (peak RSS ≤ 20 MB)", "refwrite 100 MB", tbig, why),
			notMeasured(fmt.Sprintf("sendmail -bs, %d messages in one session", sz.bsMessages), "refwrite, same messages in one process", tbs, why),
		}, notes, nil
	}
	var rows []Row
	// Warm the page cache and check that the thing works at all.
	if note, err := site.Probe(); err != nil {
		return nil, nil, err
	} else if note != "" {
		notes = append(notes, note)
	}
	if _, err := measurePair(site, 1, site.ref(f2k), site.sendmail(f2k, "-t", "-i"), 1); err != nil {
		return nil, nil, fmt.Errorf("sendmail does not work in the bench site: %w", err)
	}
	o.logf("sendmail -t -i 2 KB: %d runs × %d", o.Runs, sz.small)
	pair, runs, err := runs(o.Runs, func() (*Pair, error) {
		return measurePair(site, sz.small, site.ref(f2k), site.sendmail(f2k, "-t", "-i"), 1)
	})
	if err != nil {
		return nil, nil, err
	}
	r := latencyRow(name2k, "refwrite 2 KB "+who, t2k, pair, 1.3, 2)
	r.Note = runs
	rows = append(rows, r)

	o.logf("sendmail -t -i 1 MB: %d runs × %d", o.Runs, sz.large)
	pair, runs, err = runsOf(o.Runs, sz.large, func(n int) (*Pair, error) {
		return measurePair(site, n, sampled(site.ref(f1m)), sampled(site.sendmail(f1m, "-t", "-i")), 1)
	})
	if err != nil {
		return nil, nil, err
	}
	r = latencyRow("sendmail -t -i, 1 MB", "refwrite 1 MB", tbig, pair, 1.3, 0)
	r.Note = fmt.Sprintf("peak RSS (VmHWM sampled) %.1f MB; %s", float64(maxRSS(pair.Subject))/1024, runs)
	rows = append(rows, r)

	if sz.huge > 0 {
		f100, err := in("m100m.eml", mb100)
		if err != nil {
			return nil, nil, err
		}
		o.logf("sendmail -t -i 100 MB: %d runs × %d", o.Runs, sz.huge)
		pair, runs, err = runsOf(o.Runs, sz.huge, func(n int) (*Pair, error) {
			return measurePair(site, n, sampled(site.ref(f100)), sampled(site.sendmail(f100, "-t", "-i")), 1)
		})
		os.Remove(f100)
		if err != nil {
			return nil, nil, err
		}
		r = latencyRow("sendmail -t -i, 100 MB (peak RSS ≤ 20 MB)", "refwrite 100 MB", tbig+"; RSS ≤ 20 MB", pair, 1.3, 0)
		rss := float64(maxRSS(pair.Subject)) / 1024
		r.Note = fmt.Sprintf("peak RSS (VmHWM sampled every 0.2 ms) %.1f MB (reference %.1f MB); %s", rss, float64(maxRSS(pair.Ref))/1024, runs)
		if rss > 20 {
			if r.Verdict == "met" {
				r.Verdict = fmt.Sprintf("MISSED: peak RSS %.1f MB > 20 MB", rss)
			} else {
				r.Verdict += fmt.Sprintf(", peak RSS %.1f MB > 20 MB", rss)
			}
		}
		rows = append(rows, r)
	} else {
		rows = append(rows, notMeasured("sendmail -t -i, 100 MB (peak RSS ≤ 20 MB)", "refwrite 100 MB", tbig, "skipped in the smoke run"))
	}

	bs := filepath.Join(work, "session.smtp")
	if err := writeSMTPSession(bs, sz.bsMessages, kb2); err != nil {
		return nil, nil, err
	}
	cat := filepath.Join(work, "concat.eml")
	if err := writeConcat(cat, sz.bsMessages, kb2); err != nil {
		return nil, nil, err
	}
	o.logf("sendmail -bs: %d runs × %d sessions of %d messages", o.Runs, sz.bsRounds, sz.bsMessages)
	pair, runs, err = runsOf(o.Runs, sz.bsRounds, func(n int) (*Pair, error) {
		return measurePair(site, n, site.ref(cat, fmt.Sprint(sz.bsMessages), fmt.Sprint(kb2)), site.sendmail(bs, "-bs"), sz.bsMessages)
	})
	if err != nil {
		return nil, nil, err
	}
	r = latencyRow(fmt.Sprintf("sendmail -bs, %d × 2 KB in one session", sz.bsMessages), fmt.Sprintf("refwrite, %d × 2 KB in one process", sz.bsMessages), tbs, pair, 1.5, 0)
	r.Note = runs
	rows = append(rows, r)
	if !site.Setgid {
		notes = append(notes, "sendmail ran "+site.Note+": run `make bench` as root for the setgid figures")
	}
	return rows, notes, nil
}

// sampled turns on peak-RSS sampling for p (see Proc.SampleRSS).
func sampled(p Proc) Proc {
	p.SampleRSS = true
	return p
}

// runs repeats a measurement and pools the samples; the note lists each
// run's median ratio (subject / reference) to show the spread between runs.
func runs(n int, f func() (*Pair, error)) (*Pair, string, error) {
	all := &Pair{}
	note := "run median ratios:"
	for i := 0; i < n; i++ {
		p, err := f()
		if err != nil {
			return nil, "", err
		}
		s, r := Summarise(durations(walls(p.Subject))), Summarise(durations(walls(p.Ref)))
		note += fmt.Sprintf(" %.2f", s.Median/r.Median)
		all.Subject = append(all.Subject, p.Subject...)
		all.Ref = append(all.Ref, p.Ref...)
	}
	return all, note, nil
}

func runsOf(n, per int, f func(int) (*Pair, error)) (*Pair, string, error) {
	return runs(n, func() (*Pair, error) { return f(per) })
}
