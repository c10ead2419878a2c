# The local-attacker suite (test/attack), included by the top-level
# Makefile and run by `make test`. Each case is an unprivileged user (nobody
# or a bare UID) attacking the real sendmail (setgid), relayd and their
# sockets; it needs root to run the attackers under other UIDs and skips,
# saying so, without it. Each case prints one "attack: CASE: tried ...;
# held: ..." line, and the last line counts the cases tried and held
# (docs/SECURITY.md quotes it). A failing run prints the whole output.
#
#   make attack                     the suite
#   make attack ATTACK_RUN=regexp   only the cases matching regexp

ATTACK_RUN ?=

.PHONY: attack

attack:
	@out=$$(mktemp); \
	$(GO) test -count=1 -timeout 20m $(if $(ATTACK_RUN),-run '$(ATTACK_RUN)') -v ./test/attack/ >$$out 2>&1; rc=$$?; \
	if [ $$rc = 0 ]; then grep -E '(^|: )attack: |SKIPPED|^(ok|PASS|FAIL)' $$out; else cat $$out; fi; \
	rm -f $$out; exit $$rc

TEST_TARGETS += attack
