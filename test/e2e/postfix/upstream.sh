#!/bin/bash
# upstream.sh — a real Postfix from Debian as the test smarthost, without
# installing the postfix package (it conflicts with mail-transport-agent,
# which mailshim's .deb provides).
#
#   upstream.sh start DIR   set DIR up on first use, then start Postfix
#   upstream.sh stop DIR    stop it; DIR (and its Maildir) stays
#   upstream.sh status DIR  exit 0 when running
#
# Must run as root. What DIR holds after start:
#   DIR/port          the TCP port on 127.0.0.1 (submission: STARTTLS required,
#                     SASL PLAIN/LOGIN only after TLS)
#   DIR/ca.pem        the test CA that signed the server certificate
#   DIR/user, DIR/password   the SASL login relayd should use
#   DIR/Maildir/      every accepted message, whatever the recipient
#   DIR/log/postfix.log      Postfix's own log
#   DIR/etc/          main.cf, master.cf, sasl/smtpd.conf, the maps
#   DIR/etc/recipient_access  texthash: "ADDRESS 550 5.1.1 ..." refuses a
#                     recipient permanently (bad@example.net by default)
#   DIR/etc/sender_owners     texthash: "ADDRESS LOGIN" makes Postfix refuse
#                     that sender to any other login (owned@example.net)
#
# Environment: PORT=N picks the port on first start (default: a free one);
# MAILSHIM_E2E_CACHE is where the postfix .deb is kept
# (default /var/cache/mailshim-e2e).
set -euo pipefail

PF_USER=pfe2e
PF_DROP=pfe2e-drop
SASL_USER=relay
SASL_REALM=e2e.test
CACHE=${MAILSHIM_E2E_CACHE:-/var/cache/mailshim-e2e}
# What the unpacked daemons link against (checked with ldd in setup), plus
# Cyrus sasldb (saslpasswd2, the auxprop plugin) and openssl for the CA.
PKGS=(libdb5.3 libicu72 libnsl2 libsasl2-2 libssl3 libsasl2-modules libsasl2-modules-db sasl2-bin netbase openssl)

die() { echo "upstream.sh: $*" >&2; exit 1; }
log() { echo "upstream.sh: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} = 0 ] && return 0
	log "installing ${missing[*]}"
	local i
	for i in $(seq 1 60); do
		# Another engineer or job may hold the dpkg lock: wait and retry.
		if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
			return 0
		fi
		if [ "$i" = 1 ]; then apt-get update -qq >&2 || true; fi
		sleep 5
	done
	die "apt-get install ${missing[*]} failed"
}

fetch_deb() {
	mkdir -p "$CACHE"
	local deb
	deb=$(ls "$CACHE"/postfix_*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading postfix into $CACHE"
		(cd "$CACHE" && { apt-get download postfix >&2 2>/dev/null ||
			{ apt-get update -qq >&2 && apt-get download postfix >&2; }; })
		deb=$(ls "$CACHE"/postfix_*.deb | head -n1)
	fi
	echo "$deb"
}

ensure_users() {
	getent group "$PF_DROP" >/dev/null || groupadd --system "$PF_DROP"
	if ! getent passwd "$PF_USER" >/dev/null; then
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$PF_USER"
	fi
}

free_port() {
	local p i lo
	# Below the kernel's ephemeral range: a port in it can be taken by any
	# outgoing connection between this check and Postfix's bind, and no
	# connect test sees that (the e2e suite makes many such connections).
	lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	[ "$lo" -gt 12000 ] 2>/dev/null || lo=32768
	for i in $(seq 1 200); do
		p=$((10000 + RANDOM % (lo - 10000)))
		# Nothing answers on it: free (to within the race every such check has).
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

make_ca() {
	local d=$1
	local t="$d/tls"
	mkdir -p "$t"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$t/ca.key" -out "$d/ca.pem" -days 3650 \
		-subj "/CN=mailshim e2e test CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$t/server.key" -out "$t/server.csr" \
		-subj "/CN=upstream.e2e.test" 2>/dev/null
	printf '%s\n' \
		"basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature" \
		"extendedKeyUsage=serverAuth" \
		"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:upstream.e2e.test" >"$t/server.ext"
	openssl x509 -req -in "$t/server.csr" -CA "$d/ca.pem" -CAkey "$t/ca.key" \
		-CAcreateserial -out "$t/server.pem" -days 3650 -extfile "$t/server.ext" 2>/dev/null
	chown root:"$PF_USER" "$t/server.key"
	chmod 0640 "$t/server.key"
	chmod 0644 "$d/ca.pem" "$t/server.pem"
}

setup() {
	local d=$1
	apt_install "${PKGS[@]}"
	ensure_users
	local deb
	deb=$(fetch_deb)
	mkdir -p "$d"
	chmod 0755 "$d"
	# Every daemon runs as $PF_USER after start-up: it must reach DIR.
	setpriv --reuid="$PF_USER" --regid="$PF_USER" --clear-groups test -x "$d" ||
		die "$d is not searchable by user $PF_USER (a parent directory is private?)"

	rm -rf "$d/root"
	dpkg-deb -x "$deb" "$d/root"
	local lib="$d/root/usr/lib/postfix"
	local f
	for f in "$d/root/usr/sbin/postfix" "$lib"/sbin/*; do
		[ -f "$f" ] || continue
		if LD_LIBRARY_PATH="$lib" ldd "$f" 2>/dev/null | grep -q 'not found'; then
			die "$f: missing libraries: $(LD_LIBRARY_PATH="$lib" ldd "$f" | grep 'not found' | tr -s ' \t\n' ' ')"
		fi
	done
	cp "$d/root/usr/share/postfix/dynamicmaps.cf" "$d/root/etc/postfix/dynamicmaps.cf"
	# Postfix's own setgid programs, as postfix-script expects them (they are
	# never on anyone's PATH: this only silences its start-up warnings).
	chgrp "$PF_DROP" "$d/root/usr/sbin/postdrop" "$d/root/usr/sbin/postqueue"
	chmod 2755 "$d/root/usr/sbin/postdrop" "$d/root/usr/sbin/postqueue"

	mkdir -p "$d/etc/sasl" "$d/queue" "$d/data" "$d/log" "$d/Maildir"/{cur,new,tmp}
	chown -R "$PF_USER:$PF_USER" "$d/data" "$d/Maildir"
	chmod 0700 "$d/data"

	make_ca "$d"

	local port=${PORT:-}
	[ -n "$port" ] || port=$(free_port)
	echo "$port" >"$d/port"

	# Cyrus sasldb: PLAIN/LOGIN without a daemon.
	local pw
	pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
	echo "$SASL_USER@$SASL_REALM" >"$d/user"
	printf '%s' "$pw" >"$d/password"
	chmod 0600 "$d/password"
	rm -f "$d/sasldb"
	printf '%s' "$pw" | saslpasswd2 -f "$d/sasldb" -p -c -u "$SASL_REALM" "$SASL_USER"
	chown root:"$PF_USER" "$d/sasldb"
	chmod 0640 "$d/sasldb"
	cat >"$d/etc/sasl/smtpd.conf" <<-EOF
		pwcheck_method: auxprop
		auxprop_plugin: sasldb
		sasldb_path: $d/sasldb
		mech_list: PLAIN LOGIN
	EOF

	cat >"$d/etc/recipient_access" <<-EOF
		bad@example.net 550 5.1.1 user unknown
	EOF
	cat >"$d/etc/sender_owners" <<-EOF
		owned@example.net somebody-else@$SASL_REALM
	EOF

	cat >"$d/etc/main.cf" <<-EOF
		# Written by test/e2e/postfix/upstream.sh: a submission-only smarthost.
		compatibility_level = 3.6
		config_directory = $d/etc
		command_directory = $d/root/usr/sbin
		daemon_directory = $d/root/usr/lib/postfix/sbin
		shlib_directory = $d/root/usr/lib/postfix
		meta_directory = $d/root/etc/postfix
		queue_directory = $d/queue
		data_directory = $d/data
		mail_owner = $PF_USER
		setgid_group = $PF_DROP
		import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH=$lib
		maillog_file = $d/log/postfix.log
		maillog_file_prefixes = $d
		myhostname = upstream.e2e.test
		mydomain = e2e.test
		myorigin = \$myhostname
		inet_interfaces = 127.0.0.1
		inet_protocols = ipv4
		smtpd_banner = \$myhostname ESMTP mailshim-e2e
		biff = no
		append_dot_mydomain = no
		smtputf8_enable = yes
		smtp_dns_support_level = disabled

		# Every domain is remote, so unauthenticated clients are refused with
		# "Relay access denied"; accepted mail goes to one Maildir.
		mydestination =
		relay_domains =
		virtual_mailbox_domains =
		local_recipient_maps =
		alias_maps =
		alias_database =
		mynetworks = 127.0.0.1/32
		default_transport = virtual
		virtual_mailbox_base = $d
		virtual_mailbox_maps = static:Maildir/
		virtual_uid_maps = static:$(id -u "$PF_USER")
		virtual_gid_maps = static:$(id -g "$PF_USER")
		virtual_minimum_uid = 1

		# SASL via Cyrus sasldb, only over TLS; TLS required.
		smtpd_sasl_auth_enable = yes
		smtpd_sasl_type = cyrus
		smtpd_sasl_path = smtpd
		cyrus_sasl_config_path = $d/etc/sasl
		smtpd_sasl_local_domain = $SASL_REALM
		smtpd_sasl_security_options = noanonymous
		smtpd_tls_security_level = encrypt
		smtpd_tls_auth_only = yes
		smtpd_tls_cert_file = $d/tls/server.pem
		smtpd_tls_key_file = $d/tls/server.key
		smtpd_tls_loglevel = 1
		smtpd_tls_session_cache_database =

		smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
		smtpd_recipient_restrictions = check_recipient_access texthash:$d/etc/recipient_access
		smtpd_sender_login_maps = texthash:$d/etc/sender_owners
		smtpd_sender_restrictions = reject_known_sender_login_mismatch
	EOF

	cat >"$d/etc/master.cf" <<-EOF
		# Written by test/e2e/postfix/upstream.sh. No chroot: paths are DIR's.
		127.0.0.1:$port inet n - n - - smtpd
		pickup    unix  n       -       n       60      1       pickup
		cleanup   unix  n       -       n       -       0       cleanup
		qmgr      unix  n       -       n       300     1       qmgr
		tlsmgr    unix  -       -       n       1000?   1       tlsmgr
		rewrite   unix  -       -       n       -       -       trivial-rewrite
		bounce    unix  -       -       n       -       0       bounce
		defer     unix  -       -       n       -       0       bounce
		trace     unix  -       -       n       -       0       bounce
		verify    unix  -       -       n       -       1       verify
		flush     unix  n       -       n       1000?   0       flush
		proxymap  unix  -       -       n       -       -       proxymap
		proxywrite unix -       -       n       -       1       proxymap
		smtp      unix  -       -       n       -       -       smtp
		relay     unix  -       -       n       -       -       smtp
		showq     unix  n       -       n       -       -       showq
		error     unix  -       -       n       -       -       error
		retry     unix  -       -       n       -       -       error
		discard   unix  -       -       n       -       -       discard
		local     unix  -       n       n       -       -       local
		virtual   unix  -       n       n       -       -       virtual
		lmtp      unix  -       -       n       -       -       lmtp
		anvil     unix  -       -       n       -       1       anvil
		scache    unix  -       -       n       -       1       scache
		postlog   unix-dgram n  -       n       -       1       postlogd
	EOF
}

pf() {
	local d=$1
	shift
	LD_LIBRARY_PATH="$d/root/usr/lib/postfix" "$d/root/usr/sbin/postfix" -c "$d/etc" "$@"
}

master_pid() {
	local f="$1/queue/pid/master.pid"
	[ -r "$f" ] || return 1
	local pid
	pid=$(tr -d ' \n' <"$f")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds or the
# deadline passes.
wait_for() {
	local limit=$1
	shift
	local end=$((SECONDS + limit))
	while ! "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

banner_ok() {
	local line
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	IFS= read -r -t 2 line <&3 || { exec 3<&-; return 1; }
	printf 'QUIT\r\n' >&3 || true
	exec 3<&-
	[[ $line == 220* ]]
}

start() {
	local d=$1
	need_root
	if [ ! -f "$d/etc/main.cf" ] || [ ! -x "$d/root/usr/sbin/postfix" ]; then
		setup "$d"
	fi
	local port
	port=$(cat "$d/port")
	if master_pid "$d" >/dev/null; then
		log "already running (port $port)"
		return 0
	fi
	if port_open "$port"; then
		die "port $port is taken by another program"
	fi
	pf "$d" check >&2 || die "postfix check failed; see $d/log/postfix.log"
	pf "$d" start >&2 || die "postfix start failed; see $d/log/postfix.log"
	if ! wait_for 30 banner_ok "$port"; then
		tail -n 30 "$d/log/postfix.log" >&2 || true
		die "postfix did not answer on 127.0.0.1:$port within 30 s"
	fi
	log "postfix listening on 127.0.0.1:$port (dir $d)"
}

not_running() { ! master_pid "$1" >/dev/null; }
port_closed() { ! port_open "$1"; }

stop() {
	local d=$1
	need_root
	[ -f "$d/etc/main.cf" ] || die "$d is not an upstream directory"
	if ! master_pid "$d" >/dev/null; then
		log "not running"
		return 0
	fi
	pf "$d" stop >&2 || true
	if ! wait_for 30 not_running "$d"; then
		local pid
		pid=$(master_pid "$d" || true)
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
	fi
	wait_for 30 port_closed "$(cat "$d/port")" || die "port still open after stop"
	log "stopped"
}

status() {
	master_pid "$1" >/dev/null
}

[ $# = 2 ] || die "usage: upstream.sh start|stop|status DIR"
dir=$2
case $dir in /*) ;; *) dir="$(pwd)/$dir" ;; esac
dir=${dir%/}
case $1 in
start) start "$dir" ;;
stop) stop "$dir" ;;
status) status "$dir" ;;
*) die "usage: upstream.sh start|stop|status DIR" ;;
esac
