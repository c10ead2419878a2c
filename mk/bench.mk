# Benchmarks and the robustness suite (issue 5).
#
#   make bench        full benchmark run (~10 min): prints the table and
#                     rewrites the generated part of docs/BENCHMARKS.md
#   make bench-smoke  seconds-long run that checks the driver still works
#   make robust       the robustness suite (part of make test)
#   make stress       the robustness suite's heavy variants
#
# The driver needs root for the setgid figures (it enters a private mount
# namespace to show the setgid sendmail a private /etc/mailshim); as another
# user it runs sendmail unprivileged and says so in the table.

.PHONY: bench bench-smoke bench-inproc robust stress

BENCH_RUNS ?= 3

bench: bench-inproc
	$(GO) run ./bench/cmd/mailbench --runs $(BENCH_RUNS) --out docs/BENCHMARKS.md

# In-process parts with Go's own harness (benchstat-compatible output).
bench-inproc:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./bench/inproc | tee bench/inproc.txt
	$(GO) test -run '^$$' -bench WireSafety -benchmem -count 5 ./pkg/relay | tee -a bench/inproc.txt

bench-smoke:
	$(GO) run ./bench/cmd/mailbench --smoke --runs 1
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 10x ./bench/inproc
	$(GO) test -count=1 -run '^$$' -bench WireSafety -benchtime 10x ./pkg/relay

robust:
	$(GO) test -count=1 -timeout 20m ./test/robust/

stress:
	MAILSHIM_STRESS=1 MAILSHIM_ROBUST_REPORT=$(CURDIR)/docs/ROBUSTNESS.md $(GO) test -count=1 -timeout 120m -v ./test/robust/

TEST_TARGETS += bench-smoke robust
