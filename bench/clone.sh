#!/usr/bin/env bash
# Cloning benchmark: the same trees on loop-mounted ext4, XFS (mkfs.xfs -m reflink=1) and btrfs,
# each in a sparse 8 GiB file under WORK (losetup --direct-io=on, mounted with discard so that
# deleted files give their space back), one filesystem at a time. On each, in one run,
# alternating and repeated (median of RUNS, default 3), with page caches dropped before every run:
#   ours    linuxdisk-mk -t ext4 TREE out.img          (clones file data where it can)
#   mke2fs  truncate -s SIZE f.img && mke2fs -q -F -t ext4 -b 4096 -d TREE f.img
#   clone   cp --reflink=always -a TREE copy           (the limit of a clone; fails on ext4: -)
#   limit   tar -C TREE -cf FILE . && sync FILE         (the durable copy limit: our image is
#                                                       fsync'ed before its rename)
# and prints the ratios ours/mke2fs, ours/clone, ours/limit, our peak RSS, du of our image
# (allocated blocks, shared or not) and the space the filesystem lost to it (df before/after).
#   bench/clone.sh [RUNS]        FSES="xfs btrfs" TREES="big-4x512" to choose
# Needs root, xfsprogs, btrfs-progs, and the trees of bench/run.sh in WORK (default
# /var/tmp/linuxdisk-mk-bench; made here when missing, except minbase).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
work=${WORK:-/var/tmp/linuxdisk-mk-bench}
read -r -a fses <<<"${FSES:-ext4 xfs btrfs}"
read -r -a trees <<<"${TREES:-big-4x512 minbase}"
mkdir -p "$work"
cargo build --release -q --manifest-path "$here/Cargo.toml"
tool=$here/target/release/linuxdisk-mk
# shellcheck source=bench/common.sh
source "$here/bench/common.sh"
for t in "${trees[@]}"; do
	case $t in
	big-4x512) big_files "$work/big-4x512" 4 512 ;;
	minbase) [ -e "$work/minbase/.done" ] || { echo "clone.sh: run bench/run.sh first for the minbase tree" >&2; exit 1; } ;;
	*) [ -e "$work/$t/.done" ] || { echo "clone.sh: no tree $work/$t" >&2; exit 1; } ;;
	esac
done

mnt=$work/clone-mnt
backing=$work/clone.fs
loopdev=
cleanup() {
	if mountpoint -q "$mnt"; then umount "$mnt"; fi
	if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
	rm -f "$backing"
}
trap cleanup EXIT
used_kib() { sync -f "$mnt"; df -k --output=used "$mnt" | tail -1 | tr -d ' '; }

printf '%-6s %-10s %8s %8s %8s %8s %8s %8s %8s %8s %9s %9s\n' \
	fs tree ours mke2fs clone limit us/mke2 us/clone us/limit peakRSS du-image df-delta
for fs in "${fses[@]}"; do
	rm -f "$backing"; truncate -s 8G "$backing"
	case $fs in
	xfs) mkfs.xfs -q -m reflink=1 "$backing" ;;
	btrfs) mkfs.btrfs -q "$backing" >/dev/null 2>&1 ;;
	ext4) mkfs.ext4 -q -F "$backing" ;;
	esac
	loopdev=$(losetup --direct-io=on --find --show "$backing")
	mkdir -p "$mnt"; mount -o discard "$loopdev" "$mnt"
	mkdir -p "$mnt/out"
	for t in "${trees[@]}"; do
		src=$mnt/$t
		cp -a "$work/$t" "$src"
		"$tool" -q -t ext4 --partition none "$src" "$mnt/out/probe.img"
		fs_bytes=$(stat -c %s "$mnt/out/probe.img"); rm -f "$mnt/out/probe.img"
		mk_size=$((fs_bytes * 3 / 2 / 1048576 + 64))M
		mk_inodes=$(($(find "$src" | wc -l) * 11 / 10 + 1024))
		o=() m=() c=() l=() rss=0 du_img=0 delta=0
		for i in $(seq "$runs"); do
			rm -rf "$mnt/out"/*
			before=$(used_kib)
			drop; o+=("$(secs "$tool" -q -t ext4 "$src" "$mnt/out/ours.img")")
			r=$(cat "$work/.rss"); [ "$r" -gt "$rss" ] && rss=$r
			du_img=$(du -k "$mnt/out/ours.img" | cut -f1); delta=$(($(used_kib) - before))
			rm -f "$mnt/out/ours.img"
			drop; m+=("$(secs sh -c "truncate -s $mk_size '$mnt/out/mk.img' && mke2fs -q -F -t ext4 -b 4096 -N $mk_inodes -d '$src' '$mnt/out/mk.img'")")
			rm -f "$mnt/out/mk.img"
			if [ "$fs" = ext4 ]; then c+=(-); else
				drop; c+=("$(secs cp --reflink=always -a "$src" "$mnt/out/copy")")
			fi
			rm -rf "$mnt/out/copy"
			drop; l+=("$(secs sh -c "tar -C '$src' -cf '$mnt/out/tar' . && sync '$mnt/out/tar'")")
			rm -f "$mnt/out/tar"
		done
		mo=$(median "${o[@]}"); mm=$(median "${m[@]}"); ml=$(median "${l[@]}")
		if [ "$fs" = ext4 ]; then mc=- rc=-; else mc=$(median "${c[@]}"); rc=$(ratio "$mo" "$mc"); fi
		printf '%-6s %-10s %8s %8s %8s %8s %8s %8s %8s %6sMiB %7sMiB %7sMiB\n' "$fs" "$t" \
			"$mo" "$mm" "$mc" "$ml" "$(ratio "$mo" "$mm")" "$rc" "$(ratio "$mo" "$ml")" \
			$((rss / 1024)) $((du_img / 1024)) $((delta / 1024))
		rm -rf "$src"
	done
	umount "$mnt"; losetup -d "$loopdev"; loopdev=; rm -f "$backing"
done
