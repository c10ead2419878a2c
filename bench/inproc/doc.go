// Package inproc holds the in-process benchmarks of the paths every message
// takes (spool writing and decoding, header scanning, line-end
// normalisation), run with Go's own harness so that `benchstat` can compare
// runs: `make bench-inproc` writes bench/inproc.txt, with relayd's wire
// safety (BenchmarkWireSafety in pkg/relay, which uses the package's
// unexported transformer) appended.
package inproc
