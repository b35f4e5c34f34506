#!/bin/bash
# reference-image.sh ROOT IMG [TYPE] [SIZE] — make, with the standard tools
# (sgdisk, mke2fs -d), the disk linuxdisk-mk makes: a GPT disk with one Linux
# partition from 1 MiB holding a TYPE (ext2|ext3|ext4, default ext4)
# filesystem with ROOT's contents, label "root", SIZE bytes in all (default 64M).
#
# It checks the boot chain (tests/boot/prepare.sh + qemu) independently of
# linuxdisk-mk: if this image boots and linuxdisk-mk's does not, the fault is
# in linuxdisk-mk.  Example:
#   tests/boot/reference-image.sh examples/appliance/root /tmp/ref.img ext2
set -euo pipefail

die() {
	echo "reference-image.sh: $*" >&2
	exit 1
}
if [ $# -lt 2 ] || [ $# -gt 4 ]; then die "usage: reference-image.sh ROOT IMG [TYPE] [SIZE]"; fi
root=$1
img=$2
type=${3:-ext4}
size=${4:-64M}
case $type in ext2 | ext3 | ext4) ;; *) die "TYPE must be ext2, ext3 or ext4" ;; esac
[ -d "$root" ] || die "$root is not a directory"

rm -f -- "$img"
truncate -s "$size" "$img"
sgdisk -n 1:2048:0 -t 1:8300 -c 1:root "$img" >/dev/null 2>&1 ||
	die "sgdisk could not partition $img"
sectors=$(sgdisk -i 1 "$img" | awk '/^Partition size:/ { print $3 }')
[ -n "$sectors" ] || die "cannot read partition 1's size from sgdisk"

fs=$(mktemp "$img.fs.XXXXXX")
trap 'rm -f "$fs"' EXIT
truncate -s $((sectors * 512)) "$fs"
mke2fs -q -F -t "$type" -b 4096 -L root -d "$root" "$fs"
dd if="$fs" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
echo "reference-image.sh: $img: GPT, partition 1 = $type from $root" >&2
