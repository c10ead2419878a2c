#!/usr/bin/env bash
# packaging/layout.sh — the one reader of packaging/layout.txt.
#
#   layout.sh stage ROOT        files, links and man pages into ROOT for a
#                               package (modes only; no owners, no setgid:
#                               those come from the maintainer scripts)
#   layout.sh install           `make install`: everything into $DESTDIR,
#                               owners and special bits applied when root
#                               and the accounts exist, else said so
#   layout.sh postinst          shell code for postinst: statoverrides and
#                               the spool and runtime directories
#   layout.sh tmpfiles          tmpfiles.d(5) lines for the d and r entries
#   layout.sh conffiles         the conffile list (DEBIAN/conffiles)
#   layout.sh rpm-files         an RPM %files list with %attr for every path
#   layout.sh check ROOT        verify an installed tree against the layout:
#                               types, owners, groups, modes, link targets
#
# Environment: PREFIX (default /usr), UNITDIR, SYSUSERSDIR, TMPFILESDIR
# (defaults under PREFIX; the .deb passes UNITDIR=/lib/systemd/system),
# SRCDIR (the repository, default: this script's parent), BINDIR (the built
# programs, default SRCDIR/bin), DESTDIR.
set -euo pipefail

SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
LAYOUT=${LAYOUT:-$SRCDIR/packaging/layout.txt}
PREFIX=${PREFIX:-/usr}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-$PREFIX/lib/sysusers.d}
TMPFILESDIR=${TMPFILESDIR:-$PREFIX/lib/tmpfiles.d}
DESTDIR=${DESTDIR:-}
# BINDIR holds the built programs (layout sources bin/*).
BINDIR=${BINDIR:-$SRCDIR/bin}

die() { echo "layout.sh: $*" >&2; exit 1; }

# entries prints the layout, one entry a line, placeholders expanded and
# comments dropped: type path owner group mode source.
entries() {
	local type path owner group mode src
	while read -r type path owner group mode src; do
		case $type in '' | '#'*) continue ;; esac
		case $type in f | c | m | l | d | r) ;; *) die "$LAYOUT: unknown type '$type' for $path" ;; esac
		path=${path//@PREFIX@/$PREFIX}
		path=${path//@UNITDIR@/$UNITDIR}
		path=${path//@SYSUSERSDIR@/$SYSUSERSDIR}
		path=${path//@TMPFILESDIR@/$TMPFILESDIR}
		case $path in /*) ;; *) die "$LAYOUT: path '$path' is not absolute" ;; esac
		if [ "$type" != l ]; then
			case $mode in [0-7][0-7][0-7][0-7]) ;; *) die "$LAYOUT: mode '$mode' of $path is not 4 octal digits" ;; esac
		fi
		printf '%s %s %s %s %s %s\n' "$type" "$path" "$owner" "$group" "$mode" "${src:--}"
	done <"$LAYOUT"
}

# mkparent makes the directory holding path, 0755, when it is missing; it
# never changes an existing directory's mode.
mkparent() {
	local dir
	dir=$(dirname "$1")
	[ -d "$dir" ] || install -d -m 0755 "$dir"
}

# source_of prints the repository file for src, or nothing when an optional
# ("?") source is missing; a missing required source is an error.
source_of() {
	local src=$1 opt= full
	case $src in '?'*) opt=1 src=${src#\?} ;; esac
	case $src in
	bin/*) full=$BINDIR/${src#bin/} ;;
	*) full=$SRCDIR/$src ;;
	esac
	if [ -e "$full" ]; then
		printf '%s\n' "$full"
	elif [ -z "$opt" ]; then
		die "$src is missing (build it first: make build man)"
	else
		echo "layout.sh: note: optional $src is missing, not installed" >&2
	fi
}

# special reports whether an entry needs owners or bits a package cannot
# carry in its data (applied after the accounts exist).
special() { # owner group mode
	[ "$1:$2" != root:root ] || [ "${3:0:1}" != 0 ]
}

# put copies one f/c/m entry under root with mode (plain bits when the
# special ones are applied later).
put() { # root type path mode src
	local root=$1 type=$2 path=$3 mode=$4 src
	src=$(source_of "$5")
	[ -n "$src" ] || return 0
	mkparent "$root$path"
	if [ "$type" = m ]; then
		gzip -9n <"$src" >"$root$path"
		chmod "$mode" "$root$path"
	else
		install -m "$mode" "$src" "$root$path"
	fi
}

cmd_stage() {
	local root=${1:?usage: layout.sh stage ROOT}
	local type path owner group mode src
	entries | while read -r type path owner group mode src; do
		case $type in
		f | c | m)
			if special "$owner" "$group" "$mode"; then mode=0${mode:1}; fi
			put "$root" "$type" "$path" "$mode" "$src"
			;;
		l)
			mkparent "$root$path"
			ln -sfn "$src" "$root$path"
			;;
		esac
	done
}

cmd_install() {
	local type path owner group mode src canown=
	if [ "$(id -u)" = 0 ]; then canown=1; fi
	entries | while read -r type path owner group mode src; do
		local dst=$DESTDIR$path own=$canown
		if [ "$type" != l ] && special "$owner" "$group" "$mode"; then
			if ! getent passwd "$owner" >/dev/null || ! getent group "$group" >/dev/null; then own=; fi
		fi
		case $type in
		f | c | m)
			if [ "$type" = c ] && [ -e "$dst" ]; then
				echo "install: keeping existing $dst"
				continue
			fi
			if special "$owner" "$group" "$mode" && [ -z "$own" ]; then
				echo "install: note: $path installed 0${mode:1} without its owner; it needs $owner:$group $mode (as root, after make install-accounts)" >&2
				put "$DESTDIR" "$type" "$path" "0${mode:1}" "$src"
				continue
			fi
			put "$DESTDIR" "$type" "$path" "0${mode:1}" "$src"
			if [ -e "$dst" ]; then
				[ -z "$own" ] || chown "$owner:$group" "$dst"
				chmod "$mode" "$dst"
			fi
			;;
		l)
			mkparent "$dst"
			ln -sfn "$src" "$dst"
			;;
		d)
			[ ! -L "$dst" ] || die "$dst is a symbolic link, refusing"
			mkparent "$dst"
			[ -d "$dst" ] || mkdir -m 0700 "$dst"
			if [ -n "$own" ]; then
				chown -h "$owner:$group" "$dst"
				chmod "$mode" "$dst"
			else
				chmod "$(printf '%s' "$mode" | sed 's/^1/0/')" "$dst"
				echo "install: note: $path needs $owner:$group $mode (run as root after make install-accounts)" >&2
			fi
			;;
		r) ;;
		esac
	done
}

cmd_postinst() {
	local type path owner group mode src
	echo "# Generated by packaging/layout.sh from packaging/layout.txt."
	echo "mailshim_layout() {"
	entries | while read -r type path owner group mode src; do
		case $type in
		f)
			if special "$owner" "$group" "$mode"; then
				# An admin's own override (dpkg-statoverride --list) wins.
				echo "	if ! dpkg-statoverride --list '$path' >/dev/null 2>&1; then"
				echo "		dpkg-statoverride --update --add '$owner' '$group' '$mode' '$path'"
				echo "	fi"
			fi
			;;
		d | r)
			echo "	mailshim_dir '$path' '$owner' '$group' '$mode'"
			;;
		esac
	done
	echo "}"
}

cmd_postrm() {
	local type path owner group mode src
	echo "# Generated by packaging/layout.sh from packaging/layout.txt."
	# On remove, the statoverride of a file that is gone goes too when it
	# names our group: dpkg applies overrides by path, and the next MTA's
	# /usr/sbin/sendmail must not become setgid mailshim-drop.
	echo "mailshim_remove_layout() {"
	echo "	:"
	entries | while read -r type path owner group mode src; do
		case $type in
		f)
			if special "$owner" "$group" "$mode"; then
				echo "	if [ ! -e '$path' ] && dpkg-statoverride --list '$path' 2>/dev/null | grep -q ' $group '; then"
				echo "		dpkg-statoverride --remove '$path' || true"
				echo "	fi"
			fi
			;;
		esac
	done
	echo "}"
	echo "mailshim_purge_layout() {"
	entries | while read -r type path owner group mode src; do
		case $type in
		f)
			if special "$owner" "$group" "$mode"; then
				echo "	if dpkg-statoverride --list '$path' >/dev/null 2>&1; then"
				echo "		dpkg-statoverride --remove '$path' || true"
				echo "	fi"
			fi
			;;
		esac
	done
	# Data directories, deepest first, then their parents as long as empty.
	entries | awk '$1 == "d" || $1 == "r" { print $2 }' | sort -r | while read -r path; do
		echo "	rm -rf '$path'"
	done
	echo "}"
}

cmd_tmpfiles() {
	local type path owner group mode src
	echo "# tmpfiles.d(5) for mailshim. Generated from packaging/layout.txt."
	echo "# The spool and maildrop (kept across boots) and /run/mailshim."
	entries | while read -r type path owner group mode src; do
		case $type in
		d | r) printf 'd %s %s %s %s -\n' "$path" "$mode" "$owner" "$group" ;;
		esac
	done
}

cmd_conffiles() {
	entries | awk '$1 == "c" { print $2 }'
}

cmd_rpm_files() {
	local type path owner group mode src
	# The package's own directories (…/mailshim…) that hold installed files.
	entries | while read -r type path owner group mode src; do
		case $type in f | c | m) ;; *) continue ;; esac
		[ -n "$(source_of "$src" 2>/dev/null)" ] || continue
		while path=$(dirname "$path") && [ "$path" != / ]; do
			case $path in */mailshim | */mailshim/*) echo "$path" ;; esac
		done
	done | sort -u | while read -r path; do
		entries | awk -v p="$path" '$2 == p { found = 1 } END { exit !found }' ||
			echo "%dir %attr(0755,root,root) $path"
	done
	entries | while read -r type path owner group mode src; do
		case $type in
		f | m)
			[ -n "$(source_of "$src" 2>/dev/null)" ] || continue
			echo "%attr($mode,$owner,$group) $path"
			;;
		c) echo "%config(noreplace) %attr($mode,$owner,$group) $path" ;;
		l) echo "$path" ;;
		d) echo "%dir %attr($mode,$owner,$group) $path" ;;
		r) echo "%ghost %dir %attr($mode,$owner,$group) $path" ;;
		esac
	done
}

# mode_of prints a path's mode as 4 octal digits (special bits included).
mode_of() { stat -c '%a' "$1" | awk '{ printf "%04d\n", $1 }'; }

cmd_check() {
	[ $# = 1 ] || die "usage: layout.sh check ROOT (\"\" for /)"
	local root=$1
	local type path owner group mode src bad=0 got
	while read -r type path owner group mode src; do
		local p=$root$path
		case $type in
		l)
			if [ ! -L "$p" ]; then
				echo "check: $path: not a symbolic link"; bad=1
			elif [ "$(readlink "$p")" != "$src" ]; then
				echo "check: $path -> $(readlink "$p"), want $src"; bad=1
			fi
			continue
			;;
		f | c | m)
			if [ ! -f "$p" ] || [ -L "$p" ]; then
				case $src in '?'*) [ -e "$SRCDIR/${src#\?}" ] || continue ;; esac
				echo "check: $path: missing or not a regular file"; bad=1; continue
			fi
			;;
		d | r)
			if [ ! -d "$p" ] || [ -L "$p" ]; then
				[ "$type" = r ] && [ -z "${CHECK_RUN:-}" ] && continue
				echo "check: $path: missing or not a directory"; bad=1; continue
			fi
			;;
		esac
		got="$(stat -c '%U %G' "$p") $(mode_of "$p")"
		if [ "$got" != "$owner $group $mode" ]; then
			echo "check: $path: $got, want $owner $group $mode"; bad=1
		fi
	done < <(entries)
	[ $bad = 0 ] && echo "check: $(entries | wc -l) paths match packaging/layout.txt under ${root:-/}"
	return $bad
}

case ${1:-} in
stage) shift; cmd_stage "$@" ;;
install) cmd_install ;;
postinst) cmd_postinst ;;
postrm) cmd_postrm ;;
tmpfiles) cmd_tmpfiles ;;
conffiles) cmd_conffiles ;;
rpm-files) cmd_rpm_files ;;
check) shift; cmd_check "$@" ;;
*) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
