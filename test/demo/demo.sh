#!/usr/bin/env bash
# make demo: mailshim's main job end to end, no root, no network.
#
# Builds sendmail and relayd, starts a local test upstream (STARTTLS with a
# generated certificate, AUTH), runs relayd on a private spool through
# MAILSHIM_CONFIG, pipes a message through `sendmail -t -i`, waits for the
# upstream to receive it, prints the delivered message and relayd's log
# lines, and cleans up.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
GO=${GO:-go}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND until it succeeds.
wait_for() {
	local what=$1 limit=$2; shift 2
	local deadline=$((SECONDS + limit))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			echo "demo: timed out after ${limit}s waiting for $what" >&2
			return 1
		fi
		sleep 0.1
	done
}

say "building bin/sendmail and bin/relayd"
make --no-print-directory build
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mailshim-demo.XXXXXX")
chmod 0755 "$TMP"
UP_PID= RELAYD_PID=
cleanup() {
	local rc=$?
	if [ "$rc" != 0 ] && [ -s "$TMP/relayd.log" ]; then
		echo "demo: FAILED (exit $rc); relayd's log:" >&2
		cat "$TMP/relayd.log" >&2
	fi
	[ -n "$RELAYD_PID" ] && kill "$RELAYD_PID" 2>/dev/null && wait "$RELAYD_PID" 2>/dev/null || true
	[ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
CGO_ENABLED=0 $GO build -o "$TMP/upstream" ./test/demo/upstream

say "starting the test upstream (STARTTLS, AUTH PLAIN/LOGIN, generated CA)"
umask 077
printf 'demo-password-%s\n' "$RANDOM$RANDOM" >"$TMP/upstream.secret"
umask 022
"$TMP/upstream" -dir "$TMP/delivered" -user relay@demo.invalid \
	-password-file "$TMP/upstream.secret" -info "$TMP/upstream.env" &
UP_PID=$!
wait_for "the upstream to listen" 20 test -s "$TMP/upstream.env"
# shellcheck disable=SC1091
. "$TMP/upstream.env"
echo "upstream listening on $HOST:$PORT, CA in $CA_FILE"

mkdir -p "$TMP/spool"
chmod 0711 "$TMP/spool"
cat >"$TMP/mailshim.conf" <<CONF
hostname = "web1.demo.invalid"
spool = "$TMP/spool"
# No control_socket/submit_socket: a private spool gets them inside it.

[[upstream]]
host = "$HOST"
port = $PORT
tls = "starttls"
ca_file = "$CA_FILE"
username = "relay@demo.invalid"
password_file = "$TMP/upstream.secret"

[queue]
scan_interval = "5s"

[aliases]
root = "ops@demo.invalid"
CONF
export MAILSHIM_CONFIG="$TMP/mailshim.conf"
echo "private config: $MAILSHIM_CONFIG"
bin/relayd check-config >/dev/null

say "starting relayd on the private spool"
bin/relayd 2>"$TMP/relayd.log" &
RELAYD_PID=$!
wait_for "relayd's control socket" 20 test -S "$TMP/spool/control.sock"

say "sending a message with: sendmail -t -i"
SCRIPT_FILENAME="$ROOT/test/demo/demo.sh" bin/sendmail -t -i <<MSG
To: alice@example.org, root
Subject: mailshim demo $(date -u +%FT%TZ)

Hello from the mailshim demo.
This message went sendmail -> maildrop -> relayd -> STARTTLS+AUTH upstream.
MSG
echo "sendmail exit status: $?"

wait_for "the upstream to receive the message" 30 test -s "$TMP/delivered/001.eml"

say "delivered message, as the upstream received it"
tr -d '\r' <"$TMP/delivered/001.eml"
say "envelope seen by the upstream"
cat "$TMP/delivered/001.env"

# Let relayd log the delivery line before showing the log.
wait_for "relayd's delivery log line" 10 grep -q 'event=removed' "$TMP/relayd.log"
say "relayd log lines"
cat "$TMP/relayd.log"

say "mailq (through the control socket)"
bin/relayd queue mailq || true

kill -TERM "$RELAYD_PID"
wait "$RELAYD_PID" && echo "relayd stopped cleanly (exit 0)"
RELAYD_PID=
say "demo passed"
