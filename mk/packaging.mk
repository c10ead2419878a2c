# mk/packaging.mk — the Debian package, `make install`, the man pages and
# the packaging checks. Included by the top-level Makefile.
#
#   make deb             dist/mailshim_<version>_<arch>.deb (dpkg-deb, no debhelper)
#   make install         DESTDIR=, PREFIX=/usr: for systems without the .deb
#   make rpm             dist/*.rpm with rpmbuild from `git archive HEAD`
#                        (not in CI; RPMBUILD_FLAGS for extra --define's)
#   make install-accounts  the users and groups (systemd-sysusers or useradd)
#   make man             roff from man/*.scd into man/ (committed)
#   make man-check       fails when the committed roff is stale or groff warns
#   make lintian         lintian on the .deb; overrides are justified in
#                        packaging/debian/lintian-overrides
#   make systemd-verify  systemd-analyze verify and security --offline on the unit
#   make packaging-test  man-check lintian systemd-verify (run by `make test`)
#   make deb-test        root only, run by `make test` when root:
#                        in a Debian 12 chroot (debootstrap, cached in
#                        /var/tmp/mailshim-deb-chroot): install, every path,
#                        relayd picking up nobody's mail, upgrade with queued
#                        mail, remove, purge, reinstall, the adduser path;
#                        then in a container booted with systemd as PID 1
#                        (systemd-nspawn): relayd.service for real
#   make deb-test-host   the same on THIS system (refuses if mailshim is
#                        installed; leaves it purged)
#
# Every path's owner, group and mode comes from packaging/layout.txt,
# through packaging/layout.sh.

VERSION     ?= $(shell cat packaging/VERSION)
DEB_REVISION ?= 1
DEB_VERSION ?= $(VERSION)-$(DEB_REVISION)
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEB_MAINTAINER ?= mailshim maintainers <maintainers@mailshim.example>
DEB_DIR     ?= dist
DEB         := $(DEB_DIR)/mailshim_$(DEB_VERSION)_$(DEB_ARCH).deb
PREFIX      ?= /usr
DESTDIR     ?=

PKG_BUILD   := build/packaging
# PKG_BIN: where the programs are taken from (stand-ins can be packaged
# with `make -o build deb PKG_BIN=dir` while the real ones do not build).
PKG_BIN     ?= $(CURDIR)/$(BIN)
PKG_LAYOUT  := BINDIR=$(PKG_BIN) packaging/layout.sh
# The .deb follows Debian 12: units in /lib/systemd/system (debhelper's
# choice in bookworm), the rest under /usr.
PKG_DEB_ENV := PREFIX=/usr UNITDIR=/lib/systemd/system SYSUSERSDIR=/usr/lib/sysusers.d TMPFILESDIR=/usr/lib/tmpfiles.d

# Man pages: every man/*.scd has its roff beside it. Their date is that of
# the newest packaging/debian/changelog entry (the release), so the roff
# does not change with the day it is generated.
MAN_SCD     := $(wildcard man/*.scd)
MAN_ROFF    := $(MAN_SCD:.scd=)
MAN_EPOCH   := $(shell date -d "$$(sed -n 's/^ -- .*>  //p' packaging/debian/changelog | head -n1)" +%s)

.PHONY: rpm deb install install-accounts man man-check lintian systemd-verify packaging-test deb-test deb-test-host pkg-files

TEST_TARGETS += packaging-test
ifeq ($(shell id -u),0)
TEST_TARGETS += deb-test
endif

# --- generated packaging files -------------------------------------------

# The conffile: packaging/mailshim.conf (the config owner's), or while that
# does not exist yet a placeholder that points at the manual.
$(PKG_BUILD)/mailshim.conf: FORCE
	@mkdir -p $(@D)
	@if [ -f packaging/mailshim.conf ]; then cp packaging/mailshim.conf $@.tmp; \
	else echo "packaging: note: packaging/mailshim.conf missing, shipping a placeholder" >&2; \
	  printf '%s\n' '# /etc/mailshim/mailshim.conf — mailshim configuration (TOML).' \
	    '# Every key and its default: mailshim.conf(5). Check with: relayd check-config' \
	    '' '#[[upstream]]' '#host = "smtp.example.com"' '#port = 587' '#tls = "starttls"' \
	    '#username = "relay@example.com"' '#password_file = "/etc/mailshim/upstream.secret"' >$@.tmp; fi
	@cmp -s $@.tmp $@ 2>/dev/null && rm -f $@.tmp || mv $@.tmp $@

$(PKG_BUILD)/tmpfiles.conf: packaging/layout.txt packaging/layout.sh
	@mkdir -p $(@D)
	$(PKG_DEB_ENV) $(PKG_LAYOUT) tmpfiles >$@

pkg-files: $(PKG_BUILD)/mailshim.conf $(PKG_BUILD)/tmpfiles.conf

# --- the Debian package --------------------------------------------------
#
# Besides packaging/layout.txt's files: the copyright, the changelog, the
# lintian overrides, and the link through which ca-certificates trusts the
# local listener's CA (/usr/share/ca-certificates/mailshim/, the place for
# a package's certificates; postinst lists it in /etc/ca-certificates.conf)
# to the copy relayd tls-init writes, /etc/mailshim/local-ca.crt.

deb: build pkg-files
	@rm -rf $(PKG_BUILD)/deb && mkdir -p $(PKG_BUILD)/deb/DEBIAN $(DEB_DIR)
	$(PKG_DEB_ENV) $(PKG_LAYOUT) stage $(PKG_BUILD)/deb
	@set -e; d=$(PKG_BUILD)/deb; doc=$$d/usr/share/doc/mailshim; \
	install -d -m 0755 $$doc; \
	install -m 0644 packaging/debian/copyright $$doc/copyright; \
	{ top=$$(sed -n '1s/^mailshim (\([^)]*\)).*/\1/p' packaging/debian/changelog); \
	  if [ "$$top" != "$(DEB_VERSION)" ]; then \
	    printf 'mailshim (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n\n' \
	      "$(DEB_VERSION)" "$$(git describe --always --dirty 2>/dev/null || echo a work tree)" \
	      "$(DEB_MAINTAINER)" "$$(date -R)"; fi; \
	  cat packaging/debian/changelog; } | gzip -9n >$$doc/changelog.Debian.gz; \
	chmod 0644 $$doc/changelog.Debian.gz; \
	install -d -m 0755 $$d/usr/share/lintian/overrides; \
	cp packaging/debian/lintian-overrides $$d/usr/share/lintian/overrides/mailshim; \
	chmod 0644 $$d/usr/share/lintian/overrides/mailshim; \
	install -d -m 0755 $$d/usr/share/ca-certificates/mailshim; \
	ln -s /etc/mailshim/local-ca.crt $$d/usr/share/ca-certificates/mailshim/mailshim-local-ca.crt; \
	$(PKG_DEB_ENV) $(PKG_LAYOUT) conffiles >$$d/DEBIAN/conffiles; \
	for s in postinst prerm postrm; do \
	  case $$s in postinst) gen=postinst ;; postrm) gen=postrm ;; *) gen= ;; esac; \
	  if [ -n "$$gen" ]; then $(PKG_DEB_ENV) $(PKG_LAYOUT) $$gen >$(PKG_BUILD)/$$s.layout; \
	  else : >$(PKG_BUILD)/$$s.layout; fi; \
	  awk -v f=$(PKG_BUILD)/$$s.layout '$$0 == "@LAYOUT@" { while ((getline l < f) > 0) print l; next } { print }' \
	    packaging/debian/$$s.in | sed 's|@SYSUSERSDIR@|/usr/lib/sysusers.d|g' >$$d/DEBIAN/$$s; \
	  chmod 0755 $$d/DEBIAN/$$s; sh -n $$d/DEBIAN/$$s; \
	done; \
	size=$$(du -sk --exclude=DEBIAN $$d | cut -f1); \
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' \
	    -e 's|@MAINTAINER@|$(DEB_MAINTAINER)|' -e "s|@SIZE@|$$size|" \
	    packaging/debian/control.in >$$d/DEBIAN/control; \
	(cd $$d && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum) >$$d/DEBIAN/md5sums; \
	chmod 0644 $$d/DEBIAN/control $$d/DEBIAN/conffiles $$d/DEBIAN/md5sums; \
	find $$d -type d -exec chmod 0755 {} +; \
	find $$d -exec touch -h -d @$(MAN_EPOCH) {} +; \
	SOURCE_DATE_EPOCH=$(MAN_EPOCH) dpkg-deb --root-owner-group -Zxz --build $$d $(DEB) >/dev/null
	@echo "deb: $(DEB)"

lintian: deb
	@command -v lintian >/dev/null || { echo "lintian: not installed (apt-get install lintian; make deps)"; exit 1; }
	lintian --fail-on error,warning --display-info --pedantic $(DEB)
	@echo "lintian: $(DEB) clean (overrides: packaging/debian/lintian-overrides)"

# --- RPM (packaging/rpm/mailshim.spec, same layout) ------------------------

RPMBUILD_FLAGS ?=
rpm:
	@command -v rpmbuild >/dev/null || { echo "rpm: rpmbuild is not installed"; exit 1; }
	@set -e; top=$(CURDIR)/$(PKG_BUILD)/rpm; rm -rf $$top; mkdir -p $$top/SOURCES $(DEB_DIR); \
	git archive --prefix=mailshim-$(VERSION)/ -o $$top/SOURCES/mailshim-$(VERSION).tar.gz HEAD; \
	rpmbuild -bb --define "_topdir $$top" --define "mailshim_version $(VERSION)" $(RPMBUILD_FLAGS) packaging/rpm/mailshim.spec; \
	cp $$top/RPMS/*/mailshim-$(VERSION)-*.rpm $(DEB_DIR)/; ls $(DEB_DIR)/mailshim-$(VERSION)-*.rpm

# --- make install --------------------------------------------------------

install: build pkg-files
	PREFIX=$(PREFIX) DESTDIR=$(DESTDIR) $(PKG_LAYOUT) install

# The accounts, for `make install` on a live system (the .deb makes them in
# postinst): systemd-sysusers when present, else useradd/groupadd.
install-accounts:
	@if command -v systemd-sysusers >/dev/null 2>&1; then \
	  systemd-sysusers packaging/systemd/sysusers.conf; \
	else \
	  getent group mailshim >/dev/null || groupadd --system mailshim; \
	  getent passwd mailshim >/dev/null || useradd --system --gid mailshim --no-create-home \
	    --home-dir /var/spool/mailshim --shell /usr/sbin/nologin --comment "mailshim relay daemon" mailshim; \
	  getent group mailshim-drop >/dev/null || groupadd --system mailshim-drop; \
	  usermod -a -G mailshim-drop mailshim; \
	fi

# --- man pages -----------------------------------------------------------

man: $(MAN_ROFF)

man/%: man/%.scd packaging/debian/changelog
	@command -v scdoc >/dev/null || { echo "man: scdoc is not installed (apt-get install scdoc)"; exit 1; }
	SOURCE_DATE_EPOCH=$(MAN_EPOCH) scdoc <$< >$@.tmp && mv $@.tmp $@

man-check:
	@command -v scdoc >/dev/null || { echo "man-check: scdoc is not installed (apt-get install scdoc)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; bad=0; \
	for scd in $(MAN_SCD); do \
	  roff=$${scd%.scd}; \
	  SOURCE_DATE_EPOCH=$(MAN_EPOCH) scdoc <$$scd >$$tmp/out; \
	  if ! cmp -s $$tmp/out $$roff; then echo "man-check: $$roff is stale or missing: run make man and commit it"; bad=1; continue; fi; \
	  LC_ALL=C.UTF-8 groff -t -ww -man -z -Tutf8 $$roff 2>$$tmp/warn || true; \
	  LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z $$roff 2>>$$tmp/warn >/dev/null || true; \
	  if [ -s $$tmp/warn ]; then echo "man-check: $$roff has warnings:"; cat $$tmp/warn; bad=1; fi; \
	done; \
	[ $$bad = 0 ] && echo "man-check: $(words $(MAN_SCD)) pages current, no groff warnings"; exit $$bad

# --- systemd -------------------------------------------------------------

# systemd-analyze verify wants ExecStart's binary to exist: verify a copy of
# the unit whose paths point at the built binaries. The security score runs
# offline on the file (no systemd needs to be running).
systemd-verify: build
	@command -v systemd-analyze >/dev/null || { echo "systemd-verify: systemd-analyze missing (apt-get install systemd)"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	sed "s|/usr/sbin/relayd|$(PKG_BIN)/relayd|g" packaging/systemd/relayd.service >$$tmp/relayd.service; \
	cp packaging/systemd/relayd.socket $$tmp/relayd.socket; \
	rc=0; systemd-analyze verify --man=no $$tmp/relayd.service $$tmp/relayd.socket >$$tmp/verify 2>&1 || rc=$$?; \
	if [ $$rc != 0 ] || [ -s $$tmp/verify ]; then \
	  cat $$tmp/verify; echo "systemd-verify: systemd-analyze verify complained (exit $$rc)"; exit 1; fi; \
	systemd-analyze security --offline=true --no-pager $$tmp/relayd.service >$$tmp/security; \
	score=$$(sed -n 's/.*Overall exposure level for relayd.service: \([0-9.]*\).*/\1/p' $$tmp/security); \
	if ! grep -q "^\*\*Overall exposure level: $$score " docs/SECURITY-SYSTEMD.md; then \
	  echo "systemd-verify: score is now $$score; update docs/SECURITY-SYSTEMD.md"; exit 1; fi; \
	echo "systemd-verify: relayd.service verified; security exposure $$score, as docs/SECURITY-SYSTEMD.md records"

packaging-test: man-check lintian systemd-verify

# --- the package on this system -------------------------------------------

deb-test: deb
	packaging/test-deb-chroot.sh $(DEB)
	packaging/test-deb-systemd.sh $(DEB)

deb-test-host: deb
	packaging/test-deb.sh $(DEB)
