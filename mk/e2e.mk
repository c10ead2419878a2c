# mk/e2e.mk — the end-to-end suite (issue 4), included by the top-level
# Makefile. Needs root: it runs a real Postfix from Debian as the upstream
# (test/e2e/postfix/upstream.sh), installs Debian packages and mailshim's
# .deb, creates users, and runs real callers as unprivileged users. It
# changes the machine it runs on (CI's is thrown away).
#
#   make e2e             build the .deb (make deb), then the whole suite
#                        against it (go test -tags e2e ./test/e2e/)
#   make e2e-dev         the suite without the .deb: binaries from go build,
#                        installed by the suite with PRODUCT.md's modes
#   make upstream-start  a Postfix upstream in $(E2E_UPSTREAM), to poke by hand
#   make upstream-stop
#
# E2E_RUN=regexp selects tests (go test -run); MAILSHIM_E2E_KEEP=1 keeps
# Postfix's directory (Maildir, log) for a look afterwards.

E2E_UPSTREAM ?= /tmp/mailshim-e2e-upstream
E2E_FLAGS ?= -count=1 -timeout 30m
E2E_RUN ?=
E2E_GOTEST = $(GO) test -tags e2e $(E2E_FLAGS) $(if $(E2E_RUN),-run '$(E2E_RUN)') -v ./test/e2e/

TEST_TARGETS += e2e

.PHONY: e2e e2e-dev upstream-start upstream-stop

e2e:
	@if [ "$$(id -u)" != 0 ]; then echo "e2e: skipped, needs root (CI runs as root)"; exit 0; fi; \
	set -e; $(MAKE) --no-print-directory deb; \
	MAILSHIM_E2E_DEB=$(CURDIR)/$(DEB) MAILSHIM_E2E_REQUIRE_DEB=1 $(E2E_GOTEST)

e2e-dev:
	@if [ "$$(id -u)" != 0 ]; then echo "e2e: skipped, needs root"; exit 0; fi; \
	MAILSHIM_E2E_DEB=none $(E2E_GOTEST)

upstream-start:
	bash test/e2e/postfix/upstream.sh start $(E2E_UPSTREAM)
	@echo "port: $$(cat $(E2E_UPSTREAM)/port)  user: $$(cat $(E2E_UPSTREAM)/user)  password: $(E2E_UPSTREAM)/password  CA: $(E2E_UPSTREAM)/ca.pem"

upstream-stop:
	bash test/e2e/postfix/upstream.sh stop $(E2E_UPSTREAM)
