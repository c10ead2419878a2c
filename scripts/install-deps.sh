#!/usr/bin/env bash
# Installs the Debian packages that `make test` needs, when they are missing.
# CI runs as root on a fresh Debian 12 with the Debian archive reachable.
# Never installs an MTA: the e2e suite installs mailshim's own .deb (which
# provides mail-transport-agent) and runs Postfix unpacked.
set -euo pipefail

pkgs=(
	scdoc groff-base man-db lintian          # man pages, package checks
	php-cli php-cgi php-fpm                  # real callers: PHP mail()
	libphp-phpmailer php-symfony-mailer      # PHPMailer, Symfony Mailer
	cron git git-email                       # cron, git send-email
	ruby-actionmailer swaks python3          # loopback SMTP clients (e2e)
	libio-socket-inet6-perl                  # swaks over ::1
	wordpress mariadb-server php-mysql       # WordPress's wp_mail() (e2e)
	sasl2-bin libsasl2-modules               # the Postfix upstream's SASL
	openssl ca-certificates util-linux procps iproute2
	nftables                                 # relayd doctor e2e: a DROP rule in a network namespace
	systemd                                  # systemd-analyze verify/security
	strace                                   # fsync order of state files (pkg/oauth)
	debootstrap systemd-container            # deb-test: Debian chroot, booted container
)

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: not root, not installing packages (tests that need them skip)"
	exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Services must not start from maintainer scripts (php-fpm, cron): tests
# start what they need themselves.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
for i in 1 2 3; do
	apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" && exit 0
	echo "install-deps: apt failed (attempt $i), retrying" >&2
	sleep 10
done
exit 1
