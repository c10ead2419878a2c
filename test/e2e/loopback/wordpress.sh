#!/usr/bin/env bash
# test/e2e/loopback/wordpress.sh start|stop STATEDIR — a minimal WordPress
# (Debian's wordpress package) for the e2e suite, installed without a web
# server: MariaDB started by hand (the suite's policy-rc.d keeps the
# package's service down), a database and user, Debian's per-host config
# /etc/wordpress/config-wp-e2e.test.php, and wp_install() run from php-cli.
# PHP scripts load it with $_SERVER['HTTP_HOST'] = 'wp-e2e.test' and
# require /usr/share/wordpress/wp-load.php.
#
# start is idempotent: it reuses a running MariaDB and an installed site.
# stop ends only the MariaDB this script started (its pid in STATEDIR).
set -euo pipefail

cmd=${1:?usage: wordpress.sh start|stop STATEDIR}
state=${2:?usage: wordpress.sh start|stop STATEDIR}
host=wp-e2e.test
db=wp_e2e
dbuser=wp_e2e
sock=/run/mysqld/mysqld.sock
conf=/etc/wordpress/config-$host.php
mkdir -p "$state"
chmod 0755 "$state"

sql() { mariadb --protocol=socket -S "$sock" -u root "$@"; }

case $cmd in
start)
	if ! sql -e 'select 1' >/dev/null 2>&1; then
		install -d -o mysql -g mysql -m 0755 /run/mysqld
		# No TCP: WordPress reaches it through the socket (DB_HOST localhost).
		# The daemon outlives this script: it must not inherit any file
		# descriptor beyond 0-2 (the suite runs under `flock`, whose lock
		# would stay held by MariaDB for as long as it runs).
		(
			for fd in /proc/$BASHPID/fd/*; do
				fd=${fd##*/}
				[ "$fd" -gt 2 ] && eval "exec $fd>&-"
			done 2>/dev/null
			exec setsid /usr/sbin/mariadbd --user=mysql --skip-networking --socket="$sock" \
				--pid-file=/run/mysqld/mailshim-e2e.pid >"$state/mariadb.log" 2>&1 </dev/null
		) &
		echo $! >"$state/mariadb.started"
		for _ in $(seq 1 300); do
			sql -e 'select 1' >/dev/null 2>&1 && break
			sleep 0.1
		done
		sql -e 'select 1' >/dev/null || { tail -20 "$state/mariadb.log"; exit 1; }
	fi
	if [ ! -s "$state/dbpass" ]; then
		head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$state/dbpass"
	fi
	pass=$(cat "$state/dbpass")
	sql <<SQL
CREATE DATABASE IF NOT EXISTS $db;
CREATE USER IF NOT EXISTS '$dbuser'@'localhost' IDENTIFIED BY '$pass';
ALTER USER '$dbuser'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL PRIVILEGES ON $db.* TO '$dbuser'@'localhost';
FLUSH PRIVILEGES;
SQL
	# Readable by the test users: their scripts load WordPress as they are.
	cat >"$conf.tmp" <<PHP
<?php
// Written by mailshim's e2e suite (test/e2e/loopback/wordpress.sh).
define('DB_NAME', '$db');
define('DB_USER', '$dbuser');
define('DB_PASSWORD', '$pass');
define('DB_HOST', 'localhost');
define('WP_HOME', 'http://$host');
define('WP_SITEURL', 'http://$host');
define('WP_CONTENT_DIR', '$state/wp-content');
define('DISABLE_WP_CRON', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
PHP
	chmod 0644 "$conf.tmp"
	mv "$conf.tmp" "$conf"
	install -d -m 0755 "$state/wp-content"
	php -r '
$_SERVER["HTTP_HOST"] = "'"$host"'";
define("WP_INSTALLING", true);
require "/usr/share/wordpress/wp-load.php";
// No "new site" mail to the admin: the suite counts what arrives.
function wp_new_blog_notification() {}
require_once ABSPATH . "wp-admin/includes/upgrade.php";
if (is_blog_installed()) { echo "wordpress: installed already\n"; exit(0); }
$r = wp_install("mailshim e2e", "admin", "admin@example.com", false, "", wp_generate_password(20));
echo "wordpress: installed, admin user " . $r["user_id"] . "\n";
'
	;;
stop)
	if [ -s "$state/mariadb.started" ]; then
		pid=$(cat "$state/mariadb.started")
		if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = mariadbd ]; then
			kill "$pid"
			for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
		rm -f "$state/mariadb.started"
	fi
	;;
*)
	echo "usage: wordpress.sh start|stop STATEDIR" >&2
	exit 64
	;;
esac
