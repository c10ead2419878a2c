#!/bin/bash
# packaging/test-deb-systemd-inner.sh — runs INSIDE a booted systemd
# container (see test-deb-systemd.sh), as a oneshot service after
# multi-user.target: installs the .deb with systemd as PID 1 and checks
# relayd.service for real — the postinst's start, the sandbox, the sockets,
# pickup, reload, the security score, sendmail confined by
# NoNewPrivileges= falling back to the submission socket, upgrade restart
# and remove. Writes ok:/FAIL: lines to /test-result.txt, then powers off.
set -u
exec >/test-result.txt 2>&1
deb=$(ls /src/*.deb | head -n1)
fails=0

ok() { echo "ok: $*"; }
fail() { fails=$((fails + 1)); echo "FAIL: $*"; }
check() {
	local what=$1
	shift
	if out=$("$@" 2>&1); then ok "$what"; else fail "$what"; printf '%s\n' "$out" | sed 's/^/    /' | head -20; fi
}
# waitfor CMD... polls CMD until it succeeds, for at most 30 s.
waitfor() {
	local i
	for i in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "timed out waiting for: $*"
	return 1
}
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
# queue_ids lists the IDs of the messages relayd holds queued (asked
# through its control socket, whatever the queue's layout on disk).
queue_ids() { /usr/sbin/relayd queue list | cut -d' ' -f1 | grep -E '^[0-9A-F]{20}$' | sort; }
has_queued() { [ -n "$(queue_ids)" ]; }
# smtp_queued PORT SUBJECT: nobody sends one message over bash's /dev/tcp
# to the loopback listener (no client package needed), claiming root in
# AUTH; succeeds when the reply to the data is "250 ... queued as".
smtp_script='
exec 3<>/dev/tcp/127.0.0.1/$1 || exit 1
reply() { local l; while read -r -t 10 l <&3; do echo "$l"; case $l in ???-*) ;; *) return 0 ;; esac; done; return 1; }
reply
for c in "EHLO client.example" "AUTH PLAIN $(printf "\0root\0anything" | base64)" "MAIL FROM:<nobody@test-deb.example>" "RCPT TO:<carol@example.org>" DATA; do
	printf "%s\r\n" "$c" >&3; reply
done
printf "Subject: %s\r\n\r\nover the loopback listener\r\n.\r\n" "$2" >&3; reply
printf "QUIT\r\n" >&3; reply'
smtp_queued() { as_nobody bash -c "$smtp_script" smtp "$@" | tee /dev/stderr | grep -q "^250 2.0.0 Ok: queued as "; }

echo "systemd $(systemctl --version | head -n1 | cut -d' ' -f2), PID 1: $(cat /proc/1/comm)"

# A fresh install: postinst enables relayd and tries to start it; without
# an [[upstream]] it refuses (78) and is not restarted in a loop.
apt-get install -y --no-install-recommends "$deb" >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "install"; }
check "install: relayd.service is enabled" systemctl is-enabled relayd.service
check "install: relayd.socket is enabled and listening" sh -c \
	'systemctl is-enabled -q relayd.socket && systemctl is-active -q relayd.socket'
check "install: postinst said how to configure relayd" grep -q 'relayd cannot start yet' /tmp/apt.log
# That start fails, as said just before: no bare "Could not execute
# systemctl" from deb-systemd-invoke after it, which reads as broken.
check "install: no systemctl error after the explanation" sh -c \
	'! grep -n "Could not execute systemctl" /tmp/apt.log'
# (Type=notify: the start fails when relayd exits before READY=1.)
check "install: unconfigured relayd exits 78" waitfor sh -c \
	'[ "$(systemctl show -P ExecMainStatus relayd)" = 78 ] && systemctl is-failed -q relayd'
check "install: and is not restarted (RestartPreventExitStatus=78)" \
	test "$(systemctl show -P NRestarts relayd)" = 0

cat >/etc/mailshim/mailshim.conf <<'EOF'
hostname = "test-deb.example"
[[upstream]]
host = "127.0.0.1"
port = 9
tls = "none"
EOF
systemctl reset-failed relayd
systemctl start relayd
check "start: relayd.service is active" waitfor systemctl is-active -q relayd
check "start: Type=notify, and relayd reported READY=1 with its status" sh -c \
	'[ "$(systemctl show -P Type relayd)" = notify ] && systemctl show -P StatusText relayd | grep -q "^relaying from /var/spool/mailshim"'
check "start: the watchdog is armed (WatchdogSec=) and relayd feeds it" sh -c \
	'[ "$(systemctl show -P WatchdogUSec relayd)" = 1min ] && sleep 31 && systemctl is-active -q relayd && [ "$(systemctl show -P NRestarts relayd)" = 0 ]'
runs_as() {
	local pid uid gid groups
	pid=$(systemctl show -P MainPID relayd)
	uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
	gid=$(awk '/^Gid:/ { print $2 }' "/proc/$pid/status")
	groups=" $(awk '/^Groups:/ { $1 = ""; print }' "/proc/$pid/status") "
	echo "pid=$pid uid=$uid gid=$gid groups=[$groups]"
	[ "$uid" = "$(id -u mailshim)" ] && [ "$gid" = "$(id -g mailshim)" ] &&
		case $groups in *" $(getent group mailshim-drop | cut -d: -f3) "*) true ;; *) false ;; esac
}
check "start: /run/mailshim is mailshim 0755 (RuntimeDirectory=)" \
	test "$(stat -c '%U %a' /run/mailshim)" = "mailshim 755"
check "start: the sockets are there, mode 0666" waitfor sh -c \
	'[ "$(stat -c %a /run/mailshim/submit.sock) $(stat -c %a /run/mailshim/control.sock)" = "666 666" ]'
# (Type=notify: "active" comes after relayd's READY=1, so its IDs are set.)
check "start: runs as mailshim:mailshim with group mailshim-drop" runs_as

printf 'To: alice@example.org\nSubject: systemd\n\nhello from nobody\n' | as_nobody /usr/sbin/sendmail -t -i
check "pickup: nobody's message is picked up under the sandbox" waitfor sh -c \
	'journalctl -u relayd -o cat | grep -q "event=pickup .*uid=65534 .*via=maildrop"'
check "pickup: mailq run by nobody lists it" sh -c \
	'setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/mailq | grep -q alice@example.org'

# Confined like a hardened service: no setgid, so the submission socket.
printf 'To: bob@example.org\nSubject: nnp\n\nconfined\n' >/tmp/nnp.eml
cat >/etc/systemd/system/nnp-sendmail.service <<'EOF'
[Service]
Type=oneshot
User=nobody
NoNewPrivileges=yes
StandardInput=file:/tmp/nnp.eml
ExecStart=/usr/sbin/sendmail -t -i
EOF
systemctl daemon-reload
check "confined: sendmail in a NoNewPrivileges=yes service stores through submit.sock (exit 0)" \
	systemctl start nnp-sendmail.service
check "confined: relayd took it from the socket as uid 65534" waitfor sh -c \
	'journalctl -u relayd -o cat | grep -q "event=pickup .*uid=65534 .*via=socket"'

# The loopback SMTP listener: ports 25 and 587 from relayd.socket (relayd,
# user mailshim, cannot bind them), the client's UID from the kernel and
# its process through /proc under the sandbox (CAP_DAC_READ_SEARCH and
# CAP_SYS_PTRACE on the scan's thread only, /proc read-only).
check "listen: relayd got ports 25 and 587 and smtp.sock from systemd" waitfor sh -c \
	'j=$(journalctl -u relayd -o cat); for a in 127.0.0.1:25 "\[::1\]:25" 127.0.0.1:587 "\[::1\]:587" /run/mailshim/smtp.sock; do
		echo "$j" | grep -q "event=listen addr=$a from=systemd" || exit 1; done'
check "listen: every configured socket came from systemd (none bound by relayd, none unavailable)" sh -c \
	'! journalctl -u relayd -o cat | grep -Eq "event=listen (addr=[^ ]* from=bound|status=)"'
check "listen: STARTTLS with the certificate relayd tls-init made" sh -c \
	'journalctl -u relayd -o cat | grep -q "event=listen tls=on cert=/etc/mailshim/tls/local.crt"'
check "listen: nobody sends over 127.0.0.1:25, claiming root in AUTH" smtp_queued 25 loopback
check "listen: recorded as uid 65534 via=smtp with the client's process" waitfor sh -c \
	'journalctl -u relayd -o cat | grep -Eq "event=pickup .*uid=65534 user=nobody .*via=smtp .*client=127\.0\.0\.1:[0-9]+ pid=[0-9]+ process=[^ ]*bash auth_claim=root"'

# Delivery through the loopback listener: swaks run by nobody submits to
# relayd.socket's 127.0.0.1:587 with STARTTLS verified against the system
# store (relayd tls-init's CA, trusted by postinst) and to [::1]:25 in
# clear; relayd relays both to packaging/testsink over STARTTLS + AUTH.
if [ -e /lib/systemd/system/relayd.socket ]; then
	/src/testsink /tmp/sink >/tmp/sink.log 2>&1 &
	sink=$!
	waitfor test -s /tmp/sink/port
	# relayd has a private /tmp (PrivateTmp=yes): its files go to /etc.
	install -m 0644 /tmp/sink/upstream-ca.pem /etc/mailshim/sink-ca.pem
	install -o mailshim -g mailshim -m 0600 /tmp/sink/password /etc/mailshim/sink.secret
	cat >/etc/mailshim/mailshim.conf <<EOF_CONF
hostname = "test-deb.example"
[[upstream]]
host = "127.0.0.1"
port = $(cat /tmp/sink/port)
tls = "starttls"
ca_file = "/etc/mailshim/sink-ca.pem"
username = "$(cat /tmp/sink/user)"
password_file = "/etc/mailshim/sink.secret"
EOF_CONF
	systemctl restart relayd
	waitfor systemctl is-active -q relayd
	check "listen: swaks as nobody to 127.0.0.1:587, STARTTLS verified by the system store" \
		as_nobody swaks --server 127.0.0.1 --port 587 --tls --tls-verify --from nobody@test-deb.example \
		--to listener@example.org --header "Subject: listener-587" --body "through relayd.socket"
	check "listen: swaks as nobody to [::1]:25 without TLS" \
		as_nobody swaks --server ::1 --port 25 -6 --from nobody@test-deb.example \
		--to listener@example.org --header "Subject: listener-25" --body "through relayd.socket"
	check "listen: relayd picked both up as uid 65534 via=smtp" waitfor sh -c \
		'[ "$(journalctl -u relayd -o cat | grep -c "event=pickup .*uid=65534 .*via=smtp")" -ge 2 ]'
	check "listen: the upstream got both, relayd's Received: naming uid 65534" waitfor sh -c \
		'grep -l "Subject: listener-587" /tmp/sink/msg-*.eml | xargs -r grep -q "from uid 65534" &&
		 grep -l "Subject: listener-25" /tmp/sink/msg-*.eml | xargs -r grep -q "from uid 65534"'
	kill "$sink" 2>/dev/null || true
	# Back to the unreachable upstream, with a message queued behind it,
	# for the upgrade and remove checks below.
	cat >/etc/mailshim/mailshim.conf <<'EOF_CONF'
hostname = "test-deb.example"
[[upstream]]
host = "127.0.0.1"
port = 9
tls = "none"
EOF_CONF
	systemctl restart relayd
	printf 'To: carol@example.org\nSubject: queued\n\nqueued\n' | as_nobody /usr/sbin/sendmail -t -i
	waitfor has_queued
else
	fail "listen: the package has no relayd.socket"
fi

pid=$(systemctl show -P MainPID relayd)
systemctl reload relayd
check "reload: relayd logs the reload" waitfor sh -c 'journalctl -u relayd -o cat | grep -q "event=reload"'
check "reload: relayd still active with the same PID" sh -c \
	"systemctl is-active -q relayd && [ \"\$(systemctl show -P MainPID relayd)\" = $pid ]"

systemd-analyze security --no-pager relayd.service >/tmp/security.txt 2>&1
echo "security: $(grep 'Overall exposure' /tmp/security.txt)"

# An upgrade restarts relayd and keeps the queue.
mkdir -p /tmp/up
dpkg-deb -R "$deb" /tmp/up
sed -i 's/^Version: \(.*\)$/Version: \1+systemdtest/' /tmp/up/DEBIAN/control
dpkg-deb --root-owner-group -b /tmp/up /tmp/upgrade.deb >/dev/null
before=$(queue_ids)
pid=$(systemctl show -P MainPID relayd)
apt-get install -y --no-install-recommends /tmp/upgrade.deb >/tmp/apt-up.log 2>&1 || { cat /tmp/apt-up.log; fail "upgrade"; }
check "upgrade: relayd restarted (new PID) and active" sh -c \
	"systemctl is-active -q relayd && [ \"\$(systemctl show -P MainPID relayd)\" != $pid ]"
same_queue() { [ -n "$before" ] && [ "$(queue_ids)" = "$before" ]; }
check "upgrade: the queued messages are all still there" waitfor same_queue
check "upgrade: the listener serves port 587 after the restart" smtp_queued 587 after-upgrade
check "upgrade: /run/mailshim/smtp.sock outlived the restart" test -S /run/mailshim/smtp.sock

# The queue still holds messages; the remove must keep them: each queued
# ID is still written in relayd's queue/ (in a file's name today; in its
# record whatever the layout), the relayd binary being gone.
kept=$(queue_ids)
[ -n "$kept" ] || fail "remove: nothing queued before the remove"
apt-get remove -y mailshim >/tmp/apt-rm.log 2>&1 || { cat /tmp/apt-rm.log; fail "remove"; }
stopped_queue_kept() {
	! systemctl is-active -q relayd && [ -n "$kept" ] || return 1
	for id in $kept; do
		grep -rqs --exclude-dir=tmp -e "$id" /var/spool/mailshim/queue || { echo "lost: $id"; return 1; }
	done
}
check "remove: relayd stopped, spool kept" stopped_queue_kept
# ... and says so: how many stay, and that a purge deletes them.
check "remove: apt's output counts the queued messages and warns of purge" \
	grep -E "mailshim: $(echo $kept | wc -w) message\(s\) still queued .*purging deletes them" /tmp/apt-rm.log
check "remove: relayd.socket stopped, port 25 closed" bash -c '! systemctl is-active -q relayd.socket && ! (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null'
apt-get purge -y mailshim >/tmp/apt-purge.log 2>&1 || { cat /tmp/apt-purge.log; fail "purge"; }
check "purge: spool, configuration, unit enablement gone" sh -c \
	'[ ! -e /var/spool/mailshim ] && [ ! -e /etc/mailshim ] && [ ! -e /etc/systemd/system/multi-user.target.wants/relayd.service ]'

echo "relayd journal:"
journalctl -u relayd -o cat --no-pager | cut -c1-200 | sed 's/^/    /' | tail -25
echo "result: $fails failed"
systemctl poweroff
