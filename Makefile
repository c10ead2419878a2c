# mailshim — top-level Makefile.
#
#   make demo    build everything and run the main job end to end, no root
#   make test    every test (installs the Debian packages it needs when root)
#   make build   static binaries in bin/
#   make bench   benchmarks, writes docs/BENCHMARKS.md
#
# Fragments in mk/*.mk add targets (packaging, e2e, demo, bench).

GO       ?= go
BIN      := bin
VERSION  ?= $(shell cat packaging/VERSION 2>/dev/null || git describe --tags --always 2>/dev/null || echo 0.0.0)
# The release, for mailshim_build_info (pkg/metrics.Version).
LDFLAGS  := -s -w -X github.com/mailshim/mailshim/pkg/metrics.Version=$(VERSION)
GOBUILD  := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'

.PHONY: all build test unit vet fmt-check deps bench stress clean help
.DEFAULT_GOAL := build

all: build

build: $(BIN)/sendmail $(BIN)/relayd

# Always rebuilt: go's own cache makes this cheap, and it cannot go stale.
$(BIN)/sendmail: FORCE
	@mkdir -p $(BIN)
	$(GOBUILD) -o $@ ./cmd/sendmail

$(BIN)/relayd: FORCE
	@mkdir -p $(BIN)
	$(GOBUILD) -o $@ ./cmd/relayd

FORCE:

# Debian packages the tests need (php, postfix's libraries, scdoc, lintian,
# ...). Installs only what is missing; a no-op when not root.
deps:
	@scripts/install-deps.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Unit and integration tests (including the fuzz targets' seed corpora and
# the setgid tests, which run when root and say so when skipped). The
# robustness and attacker suites have their own targets (mk/bench.mk,
# mk/attack.mk), so they run once.
unit: build
	$(GO) test -count=1 $$($(GO) list ./... | grep -v -e '/test/robust$$' -e '/test/attack$$')

# `make test` is what CI runs (.ci/run). Each fragment adds its part to
# TEST_TARGETS (packaging checks, e2e when root).
TEST_TARGETS := fmt-check vet unit

include $(wildcard mk/*.mk)

test: deps
	@$(MAKE) --no-print-directory $(TEST_TARGETS)
	@echo "make test: all passed ($(TEST_TARGETS))"

clean:
	rm -rf $(BIN) dist build

help:
	@sed -n '2,9p' Makefile
