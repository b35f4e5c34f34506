#!/bin/bash
# make-root.sh [DEST] — create the busybox appliance tree of the nbdkit
# linuxdisk manual (the "seed") at DEST, default examples/appliance/root.
#
# The tree is the seed's (bin, dev/console, proc, sbin/busybox with the init,
# ls and sh hard links, sys, usr/bin, usr/sbin) plus etc/inittab and
# etc/init.d/rcS, so that the appliance sets itself up when it boots: it mounts
# proc and sys, runs `busybox --install -s`, prints the marker line
#     linuxdisk-mk appliance: booted
# on the console, and then powers off if the kernel command line holds
# `ldk.poweroff` (what the boot test uses) or gives a shell on the console.
#
# Rerunnable: DEST is removed and created afresh each time (a DEST that does
# not look like an appliance tree made by this script is refused, not deleted).
# Needs root, for `mknod DEST/dev/console c 5 1`.
# Environment: BUSYBOX=path of a statically linked busybox (default
# /bin/busybox; the busybox-static package is installed if it is missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${1:-$here/root}
busybox=${BUSYBOX:-/bin/busybox}

die() {
	echo "make-root.sh: $*" >&2
	exit 1
}

[ $# -le 1 ] || die "usage: make-root.sh [DEST]"
[ -n "$dest" ] || die "DEST is empty"

if [ "$(id -u)" -ne 0 ]; then
	die "must run as root: the appliance needs the device node dev/console" \
		"(mknod c 5 1); run it with sudo"
fi

# Only an unlinked static busybox works in the appliance: nothing else is in it.
is_static() {
	[ -f "$1" ] || return 1
	if command -v file >/dev/null 2>&1; then
		file -L "$1" | grep -q 'statically linked'
	elif ldd "$1" >/dev/null 2>&1; then
		return 1
	fi
}
if [ ! -e "$busybox" ] && [ -z "${BUSYBOX:-}" ]; then
	echo "make-root.sh: $busybox is missing; installing busybox-static" >&2
	apt-get install -y --no-install-recommends busybox-static >&2 ||
		die "could not install busybox-static"
fi
is_static "$busybox" ||
	die "$busybox is not a statically linked busybox" \
		"(install busybox-static, or set BUSYBOX=/path/to/static/busybox)"

# Refuse to delete something that is not an earlier appliance tree.
case $dest in
/ | /. | /.. | . | ..) die "refusing to use $dest as DEST" ;;
esac
if [ -e "$dest" ] || [ -L "$dest" ]; then
	if [ ! -d "$dest" ] || [ -L "$dest" ]; then
		die "$dest exists and is not a directory"
	fi
	if [ -n "$(ls -A "$dest")" ] &&
		{ [ ! -f "$dest/sbin/busybox" ] || [ ! -f "$dest/etc/init.d/rcS" ]; }; then
		die "$dest is not empty and is not an appliance tree; not deleting it"
	fi
	rm -rf -- "$dest"
fi

umask 022
mkdir -p "$dest"/{bin,dev,etc/init.d,proc,sbin,sys,usr/bin,usr/sbin,tmp}
chmod 1777 "$dest/tmp"
mknod "$dest/dev/console" c 5 1
chmod 600 "$dest/dev/console"
cp "$busybox" "$dest/sbin/busybox"
chmod 755 "$dest/sbin/busybox"
ln "$dest/sbin/busybox" "$dest/sbin/init"
ln "$dest/sbin/busybox" "$dest/bin/ls"
ln "$dest/sbin/busybox" "$dest/bin/sh"

# busybox init: run rcS once, then keep a shell on the console.  cttyhack
# opens the real console tty (ttyS0) so the shell gets job control.
cat >"$dest/etc/inittab" <<'EOF'
# /etc/inittab of the linuxdisk-mk example appliance (busybox init).
::sysinit:/etc/init.d/rcS
::respawn:/sbin/busybox cttyhack /bin/sh -l
::ctrlaltdel:/sbin/busybox reboot
::shutdown:/sbin/busybox sync
::shutdown:/sbin/busybox umount -a -r
EOF

# rcS runs before `busybox --install`, so it calls busybox by its full path.
# No `set -e` here: a failed step is reported and boot goes on, so the
# console shows what went wrong instead of an appliance that stopped.
cat >"$dest/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# Boot script of the linuxdisk-mk example appliance, run by busybox init.
bb=/sbin/busybox
$bb mount -t proc proc /proc || echo "rcS: cannot mount /proc"
$bb mount -t sysfs sysfs /sys || echo "rcS: cannot mount /sys"
# Booted without an initramfs, /dev holds only the console node.
if [ ! -e /dev/null ]; then
	$bb mount -t devtmpfs devtmpfs /dev || echo "rcS: cannot mount /dev"
fi
$bb --install -s || echo "rcS: busybox --install -s failed"
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
$bb hostname appliance
echo "linuxdisk-mk appliance: root is $($bb awk '$2 == "/" { print $1, $3, $4 }' /proc/mounts)"
echo "linuxdisk-mk appliance: booted"
case " $($bb cat /proc/cmdline) " in
*" ldk.poweroff "*)
	echo "linuxdisk-mk appliance: ldk.poweroff given, powering off"
	$bb sync
	$bb poweroff -f
	;;
esac
EOF
chmod 755 "$dest/etc/init.d/rcS"

echo "make-root.sh: appliance tree ready in $dest" >&2
