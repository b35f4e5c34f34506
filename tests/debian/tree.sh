#!/usr/bin/env bash
# Prints the path of a Debian bookworm tree made by debootstrap (--variant=minbase plus the
# packages given), cached under /var/tmp/linuxdisk-mk-debian/ and keyed by the suite, variant,
# mirror and sorted package list, so later test runs (and CI on this machine) reuse it.
# A tree is made in a temporary directory and renamed into place only when complete; a lock
# serialises concurrent makers. Needs root and the Debian mirror.
#
# Usage: tests/debian/tree.sh PACKAGE...
set -euo pipefail

suite=bookworm
variant=minbase
mirror=${LINUXDISK_MK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${LINUXDISK_MK_DEBIAN_CACHE:-/var/tmp/linuxdisk-mk-debian}

packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
key=$(printf '%s %s %s %s\n' "$suite" "$variant" "$mirror" "$packages" | sha256sum | cut -c1-16)
tree="$cache/$suite-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -e "$tree/etc/debian_version" ]; then
	work=$(mktemp -d "$cache/.making-XXXXXX")
	trap 'rm -rf "$work"' EXIT
	echo "tree.sh: debootstrap $suite ($variant + $packages) into $tree; this takes minutes" >&2
	include=()
	[ -n "$packages" ] && include=(--include="$packages")
	if ! debootstrap --variant="$variant" "${include[@]}" "$suite" "$work/root" "$mirror" \
		>"$work/log" 2>&1; then
		tail -30 "$work/log" >&2
		echo "tree.sh: debootstrap failed (log above)" >&2
		exit 1
	fi
	chroot "$work/root" apt-get clean
	printf '%s\n' "$suite $variant $mirror" "$packages" >"$work/root/.linuxdisk-mk-debian"
	mv "$work/root" "$tree"
fi
echo "$tree"
