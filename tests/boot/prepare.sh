#!/bin/bash
# prepare.sh [CACHE_DIR] — get a kernel and a small initramfs that boot a
# linuxdisk-mk image (ext2/3/4 root in partition 1 of a virtio disk) under qemu.
#
# Kernel: Debian's, the package behind the metapackage linux-image-amd64
# (`apt-get download`, no installation).  Initramfs: static busybox, the
# modules that mount an ext4 root on a virtio disk (and their dependencies,
# from modules.dep) and an /init that loads them, waits for root=, mounts it
# and switch_roots to its init (default /sbin/init).  On any failure /init
# prints diagnostics and powers off, so a broken boot ends at once.
# Kernel command line options read by /init: root= (/dev/..., LABEL=, UUID=),
# rootfstype=, rootflags=, rootdelay= (seconds to wait for root, default 30),
# ro/rw, init=, and ldk.shell (a shell instead of poweroff on failure).
#
# Everything is cached in CACHE_DIR (default /var/tmp/linuxdisk-mk-boot-cache):
# the kernel .deb, vmlinuz and the initramfs.  A second run downloads nothing
# and builds nothing; without apt lists it reuses the cached kernel.  Runs are
# serialised with a lock, so concurrent test runs can share the cache.
#
# Prints, on stdout, the lines KERNEL=path, INITRD=path, KERNEL_VERSION=ver;
# CACHE_DIR/vmlinuz and CACHE_DIR/initrd.img link to the same files.
set -euo pipefail

script=$(readlink -f "${BASH_SOURCE[0]}")
cache=${1:-/var/tmp/linuxdisk-mk-boot-cache}
meta=linux-image-amd64
busybox=${BUSYBOX:-/bin/busybox}
# Modules to load, by name; their dependencies are added from modules.dep.
# crc32c_generic: ext4 and jbd2 need the crc32c hash for metadata_csum
# (ext4's soft dependency); qemu's default CPU has no SSE4.2 for crc32c-intel.
want_modules="crc32c_generic libcrc32c ext4 virtio_pci virtio_blk"

say() { echo "prepare.sh: $*" >&2; }
die() {
	say "ERROR: $*"
	exit 1
}

[ $# -le 1 ] || die "usage: prepare.sh [CACHE_DIR]"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/lock"
flock 9
# Leftovers of a run that was killed (no other run is active: we hold the lock).
find "$cache" -mindepth 1 -maxdepth 1 -type d \( -name 'download.*' -o -name 'work.*' \) \
	-exec rm -rf {} +

# --- which kernel package ------------------------------------------------
resolve_package() {
	apt-cache depends "$meta" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
pkg=$(resolve_package || true)
if [ -z "$pkg" ]; then
	current=$(readlink "$cache/vmlinuz" 2>/dev/null || true)
	if [ -n "$current" ] && [ -e "$cache/$current" ]; then
		pkg=${current%%/*}
		say "apt-cache does not know $meta; using the cached $pkg"
	else
		say "apt-cache does not know $meta; running apt-get update"
		apt-get update >&2 || die "apt-get update failed"
		pkg=$(resolve_package || true)
		[ -n "$pkg" ] || die "cannot resolve $meta to a kernel package"
	fi
fi
case $pkg in
linux-image-*) ;;
*) die "unexpected kernel package name '$pkg'" ;;
esac
kdir=$cache/$pkg
mkdir -p "$kdir"

# --- the .deb (kept: rebuilding the initramfs must not download again) ----
deb=$(find "$kdir" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
if [ -z "$deb" ]; then
	say "downloading $pkg"
	dl=$(mktemp -d "$cache/download.XXXXXX")
	# apt drops privileges to _apt for downloads; let it write here.
	if id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
	(cd "$dl" && apt-get download "$pkg" >&2) || {
		rm -rf "$dl"
		die "apt-get download $pkg failed"
	}
	deb=$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
	[ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
	mv "$deb" "$kdir/"
	rm -rf "$dl"
	deb=$kdir/$(basename "$deb")
fi

# --- the initramfs is keyed by its inputs: these scripts, busybox, the .deb
command -v sha256sum >/dev/null || die "sha256sum is missing"
if [ ! -e "$busybox" ] && [ -z "${BUSYBOX:-}" ]; then
	say "$busybox is missing; installing busybox-static"
	apt-get install -y --no-install-recommends busybox-static >&2 ||
		die "could not install busybox-static"
fi
if ldd "$busybox" >/dev/null 2>&1; then
	die "$busybox is dynamically linked; install busybox-static or set BUSYBOX"
fi
init_script=$(dirname "$script")/init
[ -f "$init_script" ] || die "$init_script is missing"
key=$(cat "$script" "$init_script" "$busybox" | sha256sum | cut -c1-16)-$(basename "$deb" .deb | sha256sum | cut -c1-8)
initrd=$kdir/initrd-$key.img

if [ ! -e "$kdir/vmlinuz" ] || [ ! -e "$initrd" ]; then
	work=$(mktemp -d "$cache/work.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	say "extracting $(basename "$deb")"
	dpkg-deb -x "$deb" "$work/pkg"
	kver=$(find "$work/pkg/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n 1)
	[ -n "$kver" ] || die "no lib/modules/VERSION in $deb"
	mods=$work/pkg/lib/modules/$kver
	vmlinuz=$work/pkg/boot/vmlinuz-$kver
	[ -f "$vmlinuz" ] || die "no boot/vmlinuz-$kver in $deb"

	# modules.dep is made by depmod at installation: make it here
	# (kmod's depmod if present, else busybox's).
	if [ ! -f "$mods/modules.dep" ]; then
		say "running depmod for $kver"
		if command -v depmod >/dev/null 2>&1; then
			depmod -b "$work/pkg" "$kver"
		else
			"$busybox" depmod -b "$work/pkg" "$kver"
		fi
	fi

	# Dependency closure, each module after what it needs.
	order=$work/order
	: >"$order"
	visit() { # visit NAME CHAIN
		local name=${1//-/_} chain=$2 line path dep
		case " $chain " in *" $name "*) die "module dependency loop: $chain $name" ;; esac
		if grep -qx "$name" "$order.names" 2>/dev/null; then return 0; fi
		line=$(awk -v n="$name" '{ p = $1; sub(/:$/, "", p); b = p; sub(/.*\//, "", b);
			sub(/\.ko(\.[a-z]+)?$/, "", b); gsub(/-/, "_", b); if (b == n) { print; exit } }' \
			"$mods/modules.dep")
		if [ -z "$line" ]; then
			if sed 's,.*/,,; s,\.ko.*,,; s,-,_,g' "$mods/modules.builtin" | grep -qx "$name"; then
				say "module $name is built into the kernel"
				echo "$name" >>"$order.names"
				return 0
			fi
			die "module $name is not in $kver's modules.dep"
		fi
		path=${line%%:*}
		for dep in ${line#*:}; do
			dep=${dep##*/}
			visit "${dep%%.ko*}" "$chain $name"
		done
		echo "$name" >>"$order.names"
		echo "$path" >>"$order"
	}
	for m in $want_modules; do visit "$m" ""; done

	root=$work/initramfs
	mkdir -p "$root"/{bin,dev,etc,lib/modules,newroot,proc,sbin,sys,usr/bin,usr/sbin}
	cp "$busybox" "$root/bin/busybox"
	if [ "$(id -u)" -eq 0 ]; then mknod "$root/dev/console" c 5 1; fi
	: >"$root/etc/modules"
	while read -r path; do
		base=${path##*/}
		case $base in
		*.ko) cp "$mods/$path" "$root/lib/modules/$base" ;;
		*.ko.xz) xz -dc "$mods/$path" >"$root/lib/modules/${base%.xz}" ;;
		*.ko.zst) zstd -qdc "$mods/$path" >"$root/lib/modules/${base%.zst}" ;;
		*.ko.gz) gzip -dc "$mods/$path" >"$root/lib/modules/${base%.gz}" ;;
		*) die "unknown module file type: $path" ;;
		esac
		echo "${base%%.ko*}.ko" >>"$root/etc/modules"
	done <"$order"
	say "modules: $(tr '\n' ' ' <"$root/etc/modules")"
	cp "$init_script" "$root/init"
	chmod 755 "$root/init"

	(cd "$root" && find . -print0 | LC_ALL=C sort -z |
		cpio --null --quiet -o -H newc -R 0:0) | gzip -9n >"$work/initrd.img"
	cp "$vmlinuz" "$work/vmlinuz"
	echo "$kver" >"$work/version"
	# Publish: files first, then the links; drop initramfs builds of old keys.
	find "$kdir" -maxdepth 1 -name 'initrd-*.img' -delete
	mv "$work/vmlinuz" "$kdir/vmlinuz"
	mv "$work/version" "$kdir/version"
	mv "$work/initrd.img" "$initrd"
	say "built $initrd ($(du -k "$initrd" | cut -f1) KiB)"
fi

ln -sfn "$pkg/vmlinuz" "$cache/vmlinuz.new" && mv -T "$cache/vmlinuz.new" "$cache/vmlinuz"
ln -sfn "$pkg/$(basename "$initrd")" "$cache/initrd.img.new" &&
	mv -T "$cache/initrd.img.new" "$cache/initrd.img"
# Other kernels' directories are stale once this one is ready.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' ! -name "$pkg" \
	-exec rm -rf {} +

echo "KERNEL=$kdir/vmlinuz"
echo "INITRD=$initrd"
echo "KERNEL_VERSION=$(cat "$kdir/version")"
