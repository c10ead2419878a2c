#!/usr/bin/env bash
# packaging/test-deb.sh DEB — install mailshim's .deb on THIS system and
# check what the package promises, then leave it purged:
#
#   install (accounts through systemd-sysusers), every path of layout.txt
#   with its owner and mode, the statoverride, the links, the conffile;
#   an upgrade keeps queued mail, the spool's modes and an admin's own
#   statoverride; remove keeps spool and config; purge removes them and
#   the statoverride, and keeps the accounts; a reinstall onto the kept
#   accounts; an install with the accounts made by adduser (systemd-sysusers
#   diverted away for the test).
#
# Root only. Changes the system: it installs and purges package mailshim
# (replacing any installed mail-transport-agent). Refuses to run when
# mailshim is already installed, so it never takes away someone's install.
# Does not need systemd as PID 1 (it is written for containers and CI).
set -euo pipefail

deb=${1:?usage: test-deb.sh path/to/mailshim_VERSION_ARCH.deb}
deb=$(realpath "$deb")
here=$(cd "$(dirname "$0")" && pwd)
fails=0
checks=0

if [ "$(id -u)" != 0 ]; then
	echo "test-deb: SKIP: needs root (it installs and purges the package)"
	exit 0
fi
if dpkg-query -W -f='${Status}' mailshim 2>/dev/null | grep -q 'installed'; then
	echo "test-deb: SKIP: package mailshim is already installed; purge it first (apt-get purge mailshim)"
	exit 0
fi

tmp=$(mktemp -d)
diverted=
ours=1
cleanup() {
	if [ -n "$diverted" ]; then
		dpkg-divert --quiet --local --rename --remove /usr/bin/systemd-sysusers || true
	fi
	# Purge only what this script installed (another install is not ours).
	if [ -n "$ours" ] && dpkg-query -W -f='${Status}' mailshim 2>/dev/null | grep -q 'installed'; then
		apt_get purge -y mailshim || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

ok() { checks=$((checks + 1)); echo "ok: $*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL: $*"; }
check() { # description command...
	local what=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then ok "$what"; else fail "$what"; sed 's/^/    /' "$tmp/out"; fi
}
is() { [ "$1" = "$2" ] || { echo "got '$1', want '$2'"; return 1; }; }

# apt_get retries while another engineer's apt or dpkg holds the lock.
apt_get() {
	local i
	for i in $(seq 1 60); do
		if apt-get -o DPkg::Lock::Timeout=60 "$@" >"$tmp/apt" 2>&1; then return 0; fi
		grep -q 'lock' "$tmp/apt" || { cat "$tmp/apt"; return 1; }
		sleep 5
	done
	cat "$tmp/apt"
	return 1
}

# The .deb's paths (mk/packaging.mk's PKG_DEB_ENV).
layout_ok() {
	CHECK_RUN=1 PREFIX=/usr UNITDIR=/lib/systemd/system SYSUSERSDIR=/usr/lib/sysusers.d \
		TMPFILESDIR=/usr/lib/tmpfiles.d "$here/layout.sh" check ""
}
member() { id -nG "$1" | tr ' ' '\n' | grep -qx "$2"; }
override() { dpkg-statoverride --list /usr/sbin/sendmail; }

check_installed() { # label
	check "$1: accounts: mailshim user and group, mailshim-drop group" \
		sh -c 'getent passwd mailshim && getent group mailshim && getent group mailshim-drop'
	check "$1: mailshim is a member of mailshim-drop" member mailshim mailshim-drop
	check "$1: mailshim has no login shell" is "$(getent passwd mailshim | cut -d: -f7)" /usr/sbin/nologin
	check "$1: every path of layout.txt with its owner, group and mode" layout_ok
	check "$1: statoverride root mailshim-drop 2755 on /usr/sbin/sendmail" \
		is "$(override)" "root mailshim-drop 2755 /usr/sbin/sendmail"
	check "$1: mailq, newaliases, /usr/lib/sendmail resolve to /usr/sbin/sendmail" sh -c \
		'for l in /usr/bin/mailq /usr/bin/newaliases /usr/lib/sendmail; do [ "$(readlink -f $l)" = /usr/sbin/sendmail ] || exit 1; done'
	check "$1: /etc/mailshim/mailshim.conf is a conffile" \
		sh -c "dpkg-query -W -f='\${Conffiles}' mailshim | grep -q ' /etc/mailshim/mailshim.conf '"
	check "$1: relayd.service enabled for the next boot" \
		test -L /etc/systemd/system/multi-user.target.wants/relayd.service
}

# Queued mail: one file in the maildrop owned by a caller (nobody), one in
# relayd's private queue/ (a file of relayd's own; its layout there does
# not matter to the package, which must leave queue/ alone).
plant_mail() {
	install -d -o mailshim -g mailshim -m 0700 /var/spool/mailshim/queue
	printf 'queued in queue/\n' >/var/spool/mailshim/queue/planted-by-test-deb
	chown mailshim:mailshim /var/spool/mailshim/queue/planted-by-test-deb
	printf 'queued in maildrop/\n' >/var/spool/mailshim/maildrop/0006270A1B2C3D4E5F61
	chown nobody:mailshim-drop /var/spool/mailshim/maildrop/0006270A1B2C3D4E5F61
	chmod 0440 /var/spool/mailshim/maildrop/0006270A1B2C3D4E5F61
}
mail_kept() {
	is "$(cat /var/spool/mailshim/queue/planted-by-test-deb)" "queued in queue/" &&
		is "$(cat /var/spool/mailshim/maildrop/0006270A1B2C3D4E5F61)" "queued in maildrop/" &&
		is "$(stat -c '%U:%G %a' /var/spool/mailshim/maildrop/0006270A1B2C3D4E5F61)" "nobody:mailshim-drop 440"
}

# The same package with a higher version, for the upgrade.
dpkg-deb -R "$deb" "$tmp/up"
sed -i 's/^Version: \(.*\)$/Version: \1+upgradetest/' "$tmp/up/DEBIAN/control"
dpkg-deb --root-owner-group -b "$tmp/up" "$tmp/upgrade.deb" >/dev/null

if command -v systemd-sysusers >/dev/null 2>&1; then how=systemd-sysusers; else how="adduser (no systemd-sysusers here)"; fi
echo "== install $(basename "$deb"), accounts by $how"
check "install with apt-get" apt_get install -y --no-install-recommends "$deb"
check_installed install
# The installed sendmail, run by an unprivileged user, stores the message in
# the maildrop through its setgid bit: a file owned by that user, group
# mailshim-drop, 0440 (relayd is not running: the message waits there).
sendmail_as_nobody() {
	printf 'To: alice@example.org\nSubject: test-deb\n\nhello\n' |
		setpriv --reuid=65534 --regid=65534 --clear-groups /usr/sbin/sendmail -t -i || return 1
	local f
	f=$(find /var/spool/mailshim/maildrop -type f -user 65534 | head -n1)
	[ -n "$f" ] || { echo "no file of uid 65534 in the maildrop"; return 1; }
	is "$(stat -c '%g %a' "$f")" "$(getent group mailshim-drop | cut -d: -f3) 440" &&
		grep -q '^hello' "$f" && rm -f "$f"
}
check "install: sendmail run by nobody stores the message in the maildrop (setgid)" sendmail_as_nobody

# /etc/mailname names the host in the default sender (the shipped
# configuration sets no hostname).
mailname_used() {
	local had= f
	[ -e /etc/mailname ] && had=$(cat /etc/mailname)
	echo mailname.example >/etc/mailname
	printf 'To: alice@example.org\n\nhello\n' |
		setpriv --reuid=65534 --regid=65534 --clear-groups /usr/sbin/sendmail -t -i
	if [ -n "$had" ]; then echo "$had" >/etc/mailname; else rm -f /etc/mailname; fi
	f=$(find /var/spool/mailshim/maildrop -type f -user 65534 | head -n1)
	[ -n "$f" ] && grep -aq 'nobody@mailname.example' "$f" && rm -f "$f"
}
check "install: the default sender is user@ /etc/mailname" mailname_used
check "install: newaliases exits 0" /usr/bin/newaliases

# relayd tls-init from postinst: the loopback listener's certificate, its
# key readable by group mailshim only, its CA trusted system-wide, and
# valid for the local names through the system store alone.
check "install: /etc/mailshim/tls is root:mailshim 0750, local.key 0640" sh -c \
	'[ "$(stat -c "%U:%G %a" /etc/mailshim/tls) $(stat -c "%U:%G %a" /etc/mailshim/tls/local.key)" = "root:mailshim 750 root:mailshim 640" ]'
# The CA is trusted the way a package's CA is (Debian policy 9.1.2 leaves
# /usr/local to the administrator): the package's link in
# /usr/share/ca-certificates/mailshim/, listed in /etc/ca-certificates.conf,
# to the copy tls-init wrote in /etc/mailshim (0644: verifiers run as
# any user read it through /etc/ssl/certs).
ca_trusted() {
	cmp /etc/mailshim/local-ca.crt /etc/mailshim/tls/ca.crt &&
		is "$(stat -c '%U:%G %a' /etc/mailshim/local-ca.crt)" "root:root 644" &&
		grep -qx mailshim/mailshim-local-ca.crt /etc/ca-certificates.conf &&
		is "$(readlink -f /etc/ssl/certs/mailshim-local-ca.pem)" /etc/mailshim/local-ca.crt &&
		grep -q "$(sed -n 2p /etc/mailshim/tls/ca.crt)" /etc/ssl/certs/ca-certificates.crt
}
nothing_in_usr_local() { [ -z "$(find /usr/local -name '*mailshim*' | head -n1)" ]; }
# ca_untrusted: $ca_line is a line of the CA's PEM, saved while it existed.
ca_untrusted() {
	! grep -qs mailshim /etc/ca-certificates.conf && [ ! -e /etc/ssl/certs/mailshim-local-ca.pem ] &&
		! grep -q "$ca_line" /etc/ssl/certs/ca-certificates.crt
}
check "install: the local CA is in the system trust store, through /usr/share/ca-certificates and ca-certificates.conf" ca_trusted
check "install: nothing of mailshim's under /usr/local" nothing_in_usr_local
# nobody, through the hashed links of /etc/ssl/certs alone (no bundle).
check "install: nobody verifies the listener's certificate through /etc/ssl/certs" sh -c \
	'setpriv --reuid=65534 --regid=65534 --clear-groups openssl verify -no-CAfile -CApath /etc/ssl/certs -verify_ip 127.0.0.1 </etc/mailshim/tls/local.crt'
tls_names_ok() {
	local n
	for n in "-verify_ip 127.0.0.1" "-verify_ip ::1" "-verify_hostname localhost" "-verify_hostname $(hostname)"; do
		# shellcheck disable=SC2086
		openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt $n /etc/mailshim/tls/local.crt || return 1
	done
	! openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt -verify_hostname www.example.com /etc/mailshim/tls/local.crt
}
check "install: the listener's certificate verifies for 127.0.0.1, ::1, localhost, $(hostname), not www.example.com" tls_names_ok
check "install: relayd tls-init again has nothing to do" sh -c '/usr/sbin/relayd tls-init | grep -q "nothing to do"'

echo "== runtime: relayd as relayd.service runs it"
# User mailshim with its groups (SupplementaryGroups=mailshim-drop), UMask
# 0077, the installed paths; systemd itself is not running here. The
# upstream is a closed loopback port: the message is picked up and deferred.
cat >/etc/mailshim/mailshim.conf <<'EOF_CONF'
hostname = "test-deb.example"
[[upstream]]
host = "127.0.0.1"
port = 9
tls = "none"
EOF_CONF
as_mailshim() { setpriv --reuid=mailshim --regid=mailshim --init-groups "$@"; }
# waitfor CMD... polls CMD until it succeeds, for at most 20 s.
waitfor() {
	local i
	for i in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "timed out waiting for: $*"
	return 1
}
check "runtime: relayd check-config as mailshim accepts the installed spool" as_mailshim /usr/sbin/relayd check-config
(umask 077 && exec setpriv --reuid=mailshim --regid=mailshim --init-groups /usr/sbin/relayd) >"$tmp/relayd.log" 2>&1 &
relayd_pid=$!
check "runtime: relayd makes /run/mailshim/submit.sock and control.sock, mode 0666" sh -c \
	'for i in $(seq 1 200); do [ -S /run/mailshim/submit.sock ] && [ -S /run/mailshim/control.sock ] && break; sleep 0.1; done
	 [ "$(stat -c %a /run/mailshim/submit.sock) $(stat -c %a /run/mailshim/control.sock)" = "666 666" ]'
printf 'To: alice@example.org\nSubject: runtime\n\nhello\n' |
	setpriv --reuid=65534 --regid=65534 --clear-groups /usr/sbin/sendmail -t -i
maildrop_empty() { [ -z "$(ls -A /var/spool/mailshim/maildrop)" ]; }
picked_up() { grep -q 'event=pickup .*uid=65534 ' "$tmp/relayd.log"; }
check "runtime: relayd picks nobody's message up from the maildrop (through group mailshim-drop)" \
	sh -c "$(declare -f waitfor maildrop_empty picked_up); tmp=$tmp; waitfor maildrop_empty && waitfor picked_up"
check "runtime: mailq run by nobody lists it" sh -c \
	'setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/mailq | grep -q alice@example.org'
# The ID pickup logged, listed by relayd itself (whatever the queue's layout).
queued=$(sed -n 's/.*event=pickup .*id=\([0-9A-F]\{20\}\) .*/\1/p' "$tmp/relayd.log" | head -n1)
listed() { [ -n "$queued" ] && as_mailshim /usr/sbin/relayd queue list | grep -q "^$queued "; }
check "runtime: the message is queued in relayd's queue/" listed
kill -TERM "$relayd_pid"
if wait "$relayd_pid"; then ok "runtime: relayd exits 0 on SIGTERM"; else fail "runtime: relayd exit status $? on SIGTERM"; fi
sed 's/^/    relayd: /' "$tmp/relayd.log" | cut -c1-160
# Every file of relayd's queue/ (whatever its layout) with its checksum.
queue_sums() { find /var/spool/mailshim/queue -type f ! -path '*/tmp/*' -print0 | sort -z | xargs -0 -r sha256sum; }

echo "== upgrade with queued mail and an admin's own statoverride"
plant_mail
# As an earlier version left it: the CA in /usr/local/share/ca-certificates,
# trusted from there. The upgrade moves it to /etc/mailshim.
mv /etc/mailshim/local-ca.crt /usr/local/share/ca-certificates/mailshim-local-ca.crt
sed -i '\|^mailshim/mailshim-local-ca.crt$|d' /etc/ca-certificates.conf
update-ca-certificates >/dev/null 2>&1
dpkg-statoverride --remove /usr/sbin/sendmail >/dev/null
dpkg-statoverride --update --add root mailshim-drop 2750 /usr/sbin/sendmail
sums=$(queue_sums)
check "upgrade with apt-get" apt_get install -y --no-install-recommends "$tmp/upgrade.deb"
check "upgrade: queued mail kept, byte for byte, with its owner and mode" mail_kept
queue_kept() { [ -n "$queued" ] && [ "$(queue_sums)" = "$sums" ]; }
check "upgrade: the queue relayd left is still there, byte for byte" queue_kept
check "upgrade: the admin's statoverride (2750) kept" is "$(override)" "root mailshim-drop 2750 /usr/sbin/sendmail"
check "upgrade: /usr/sbin/sendmail has the admin's mode" is "$(stat -c '%U:%G %a' /usr/sbin/sendmail)" "root:mailshim-drop 2750"
dpkg-statoverride --remove /usr/sbin/sendmail >/dev/null
dpkg-statoverride --update --add root mailshim-drop 2755 /usr/sbin/sendmail
check "upgrade: spool modes still as layout.txt says" layout_ok
ca_moved() { ca_trusted && nothing_in_usr_local; }
check "upgrade: the CA an earlier version put in /usr/local is trusted from /etc/mailshim instead" ca_moved

echo "== remove"
ca_line=$(sed -n 2p /etc/mailshim/tls/ca.crt)
# The administrator distrusts the CA ("!" line, update-ca-certificates(8)):
# remove keeps that decision for a reinstall, purge forgets it.
sed -i 's|^mailshim/mailshim-local-ca.crt$|!&|' /etc/ca-certificates.conf
update-ca-certificates --fresh >/dev/null 2>&1
distrust_kept() {
	grep -qx '!mailshim/mailshim-local-ca.crt' /etc/ca-certificates.conf &&
		! grep -qx mailshim/mailshim-local-ca.crt /etc/ca-certificates.conf &&
		[ ! -e /etc/ssl/certs/mailshim-local-ca.pem ] &&
		! grep -q "$ca_line" /etc/ssl/certs/ca-certificates.crt
}
echo '# an admin edit' >>/etc/mailshim/mailshim.conf
check "remove with apt-get" apt_get remove -y mailshim
check "remove: programs gone" sh -c '! test -e /usr/sbin/sendmail && ! test -e /usr/sbin/relayd && ! test -L /usr/bin/mailq'
check "remove: queued mail kept" mail_kept
check "remove: edited configuration kept" grep -q '^# an admin edit' /etc/mailshim/mailshim.conf
check "remove: the statoverride of the removed sendmail is gone (another MTA's must not inherit it)" \
	sh -c '! dpkg-statoverride --list /usr/sbin/sendmail'
check "remove: the local CA is no longer trusted, the administrator's distrust line kept" distrust_kept

echo "== purge"
check "purge with apt-get" apt_get purge -y mailshim
check "purge: spool gone" test ! -e /var/spool/mailshim
check "purge: /etc/mailshim gone" test ! -e /etc/mailshim
ca_gone() { ca_untrusted && nothing_in_usr_local; }
check "purge: the local CA is no longer trusted, nothing left under /usr/local" ca_gone
check "purge: statoverride gone" sh -c '! dpkg-statoverride --list /usr/sbin/sendmail'
check "purge: accounts kept (Debian practice)" sh -c 'getent passwd mailshim && getent group mailshim-drop'

echo "== reinstall onto the kept accounts"
check "reinstall with apt-get" apt_get install -y --no-install-recommends "$deb"
check_installed reinstall
check "purge again" apt_get purge -y mailshim

echo "== install with adduser (no systemd-sysusers)"
userdel mailshim >/dev/null 2>&1 || true
groupdel mailshim-drop >/dev/null 2>&1 || true
groupdel mailshim >/dev/null 2>&1 || true
if [ -e /usr/bin/systemd-sysusers ]; then
	dpkg-divert --quiet --local --rename --add /usr/bin/systemd-sysusers
	diverted=1
fi
check "install with apt-get, accounts by adduser" apt_get install -y --no-install-recommends "$deb"
check_installed adduser
if [ -n "$diverted" ]; then
	dpkg-divert --quiet --local --rename --remove /usr/bin/systemd-sysusers
	diverted=
fi
check "final purge" apt_get purge -y mailshim

echo "test-deb: $((checks - fails)) passed, $fails failed (mailshim left purged; accounts kept)"
[ "$fails" = 0 ]
