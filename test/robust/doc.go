// Package robust is mailshim's robustness suite: the real
// sendmail and relayd binaries, built once, are crashed, starved of disk,
// pointed at broken upstreams, fed a tampered spool and loaded, and every
// case checks the two invariants — nothing accepted is lost, nothing is
// accepted that should not be — and counts what it tried.
//
// `make robust` runs the quick sizes (part of `make test`); `make stress`
// sets MAILSHIM_STRESS=1 for the heavy ones and writes the results into
// docs/ROBUSTNESS.md (MAILSHIM_ROBUST_REPORT names the file). Set
// MAILSHIM_SEED to replay a run's random kill points.
package robust
