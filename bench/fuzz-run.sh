#!/usr/bin/env bash
# Runs one fuzz target for a while and copies the corpus it built (from
# go's cache) into the package's testdata/fuzz/, so that `go test` (and so
# `make test`) replays it. Prints the last progress line (execs, corpus).
#
#   bench/fuzz-run.sh PKGDIR FuzzName [DURATION]     e.g. ./pkg/spool FuzzDecode 10m
set -euo pipefail
pkg=$1 name=$2 dur=${3:-10m}
mod=$(go list -m)
imp=$(go list "$pkg")
log=$(mktemp)
echo "fuzz: $imp $name for $dur"
if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$dur" -parallel 1 "$pkg" >"$log" 2>&1; then
	echo "fuzz: $name FAILED:"; tail -30 "$log"; exit 1
fi
grep -E 'elapsed: ' "$log" | tail -1 || true
src="$(go env GOCACHE)/fuzz/$imp/$name"
dst="$pkg/testdata/fuzz/$name"
mkdir -p "$dst"
n=0
if [ -d "$src" ]; then
	for f in "$src"/*; do
		[ -e "$dst/$(basename "$f")" ] || { cp "$f" "$dst/"; n=$((n+1)); }
	done
fi
echo "fuzz: $name: $n new corpus files in $dst ($(ls "$dst" | wc -l) in all); module $mod"
rm -f "$log"
