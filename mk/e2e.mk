# mk/e2e.mk — the end-to-end suite (issue 4), included by the top-level
# Makefile. Needs root: it runs a real Postfix from Debian as the upstream
# (test/e2e/postfix/upstream.sh), installs Debian packages and mailshim's
# .deb, and runs real callers as unprivileged users.
#
#   make e2e               the whole suite (go test -tags e2e ./test/e2e/)
#   make upstream-start    a Postfix upstream in $(E2E_UPSTREAM) for poking by hand
#   make upstream-stop

E2E_UPSTREAM ?= /tmp/mailshim-e2e-upstream
E2E_GO ?= go
E2E_FLAGS ?= -count=1 -timeout 30m
E2E_RUN ?=

.PHONY: e2e upstream-start upstream-stop

e2e:
	@if [ "$$(id -u)" != 0 ]; then echo "e2e: skipped, needs root (CI runs as root)"; exit 0; fi; \
	$(E2E_GO) test -tags e2e $(E2E_FLAGS) $(if $(E2E_RUN),-run '$(E2E_RUN)') -v ./test/e2e/

upstream-start:
	bash test/e2e/postfix/upstream.sh start $(E2E_UPSTREAM)
	@echo "port: $$(cat $(E2E_UPSTREAM)/port)  user: $$(cat $(E2E_UPSTREAM)/user)  password: $(E2E_UPSTREAM)/password  CA: $(E2E_UPSTREAM)/ca.pem"

upstream-stop:
	bash test/e2e/postfix/upstream.sh stop $(E2E_UPSTREAM)
