#!/usr/bin/env bash
# packaging/test-deb-systemd.sh DEB — boot a Debian 12 container with
# systemd as PID 1 (systemd-nspawn -b on a copy of test-deb-chroot.sh's
# chroot) and run test-deb-systemd-inner.sh in it: relayd.service for real
# (postinst start, sandbox, sockets, pickup, reload, NoNewPrivileges
# fallback, upgrade restart, remove, purge). Neither this machine nor CI
# runs systemd as PID 1, so this is where the unit is exercised.
#
# Root only; skips (exit 0, saying so) when not root. Installs
# systemd-container (systemd-nspawn) when missing.
set -euo pipefail

deb=$(realpath "${1:?usage: test-deb-systemd.sh path/to/mailshim.deb}")
here=$(cd "$(dirname "$0")" && pwd)
base=${TMPDIR:-/var/tmp}/mailshim-deb-chroot/bookworm
box=${TMPDIR:-/var/tmp}/mailshim-deb-nspawn

if [ "$(id -u)" != 0 ]; then
	echo "test-deb-systemd: SKIP: needs root (systemd-nspawn)"
	exit 0
fi
if ! command -v systemd-nspawn >/dev/null; then
	echo "test-deb-systemd: installing systemd-container"
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends systemd-container >/dev/null
fi
if [ ! -x "$base/usr/bin/systemd-sysusers" ]; then
	# test-deb-chroot.sh makes (and caches) the base chroot.
	"$here/test-deb-chroot.sh" "$deb" >/dev/null
fi
# The container runs with its own network (nothing to reach outside, the
# test's upstream is its own loopback): the package's dependencies must be
# in the base already.
mountpoint -q "$base/proc" || mount -t proc proc "$base/proc"
# swaks (with its TLS and IPv6 modules) is the loopback listener's client;
# ca-certificates and openssl are the package's and tls-init's.
chroot "$base" sh -c 'pkgs="procps adduser ca-certificates openssl swaks libnet-ssleay-perl libio-socket-ssl-perl libio-socket-inet6-perl"
	dpkg -s $pkgs >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends $pkgs >/dev/null'
umount "$base/proc" 2>/dev/null || true

rm -rf "$box"
cp -a "$base" "$box"
trap 'rm -rf "$box"' EXIT
rm -rf "$box/src" "$box/test-result.txt"
mkdir -p "$box/src"
cp "$deb" "$box/src/"
install -m 0755 "$here/test-deb-systemd-inner.sh" "$box/src/inner.sh"
# The smarthost inside the container (it has no network): a static build
# of packaging/testsink.
(cd "$here/.." && CGO_ENABLED=0 go build -o "$box/src/testsink" ./packaging/testsink)
cat >"$box/etc/systemd/system/mailshim-package-test.service" <<'EOF'
[Unit]
Description=mailshim package test (packaging/test-deb-systemd-inner.sh)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/src/inner.sh
[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$box/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/mailshim-package-test.service "$box/etc/systemd/system/multi-user.target.wants/"
# The inner test's own failure keeps the container up: bound it.
if ! timeout 600 systemd-nspawn --quiet --register=no --keep-unit --private-network --boot --directory="$box" >"$box.log" 2>&1; then
	echo "test-deb-systemd: the container did not finish cleanly; its console:"
	tail -30 "$box.log"
fi
if [ ! -s "$box/test-result.txt" ]; then
	echo "test-deb-systemd: FAIL: no result from inside the container"
	tail -30 "$box.log"
	exit 1
fi
cat "$box/test-result.txt"
passed=$(grep -c '^ok:' "$box/test-result.txt" || true)
failed=$(grep -c '^FAIL:' "$box/test-result.txt" || true)
echo "test-deb-systemd: $passed passed, $failed failed"
[ "$failed" = 0 ] && grep -q '^result: 0 failed' "$box/test-result.txt"
