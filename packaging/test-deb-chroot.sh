#!/usr/bin/env bash
# packaging/test-deb-chroot.sh DEB [CHROOT] — run packaging/test-deb.sh in a
# minimal Debian 12 chroot instead of on this system, so that installing,
# upgrading, removing and purging the package never touches the host (where
# other tests may have mailshim installed) and always starts from a system
# that has never seen it.
#
# The chroot (default /var/tmp/mailshim-deb-chroot/bookworm: outside the
# repository, where `go test ./...` would walk it) is made once with debootstrap
# from the Debian archive (about 2 minutes) and reused; systemd is installed
# in it so that both ways of making the accounts are tested
# (systemd-sysusers, and adduser with systemd-sysusers diverted away).
# Before each run the accounts are deleted so the first install makes them.
# Root only; skips (exit 0, saying so) otherwise.
set -euo pipefail

deb=${1:?usage: test-deb-chroot.sh path/to/mailshim.deb [chroot-dir]}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
root=${2:-${TMPDIR:-/var/tmp}/mailshim-deb-chroot/bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
	echo "test-deb-chroot: SKIP: needs root (debootstrap, chroot)"
	exit 0
fi

if ! command -v debootstrap >/dev/null; then
	echo "test-deb-chroot: installing debootstrap"
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends debootstrap >/dev/null
fi

if [ ! -x "$root/usr/bin/systemd-sysusers" ]; then
	rm -rf "$root"
	mkdir -p "$(dirname "$root")"
	echo "test-deb-chroot: debootstrap bookworm into $root"
	for try in 1 2 3; do
		if debootstrap --variant=minbase --include=systemd,adduser,procps bookworm "$root" "$mirror" >"$root.log" 2>&1; then
			break
		fi
		echo "test-deb-chroot: debootstrap failed (attempt $try):"
		tail -5 "$root.log"
		rm -rf "$root"
		[ "$try" = 3 ] && exit 1
		sleep 10
	done
fi

cp /etc/resolv.conf "$root/etc/resolv.conf"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true' EXIT

rm -rf "$root/src"
mkdir -p "$root/src"
cp -r "$here" "$root/src/packaging"
cp -r "$top/man" "$root/src/man"
cp "$deb" "$root/src/"

chroot "$root" sh -c 'apt-get update -qq >/dev/null 2>&1 || true
	userdel mailshim >/dev/null 2>&1 || true
	groupdel mailshim-drop >/dev/null 2>&1 || true
	groupdel mailshim >/dev/null 2>&1 || true
	dpkg --purge mailshim >/dev/null 2>&1 || true'
chroot "$root" bash /src/packaging/test-deb.sh "/src/$(basename "$deb")"
