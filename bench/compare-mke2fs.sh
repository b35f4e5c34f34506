#!/usr/bin/env bash
# Side-by-side build time and image size: linuxdisk-mk -t ext4 vs mke2fs -t ext4 -b 4096 -d on the
# same tree, alternating, caches dropped before each run (needs root). mke2fs gets a pre-sized file
# (MKE2FS_SIZE, default: our filesystem's size + 25%, since it needs more room at the same size).
#   bench/compare-mke2fs.sh TREE [RUNS]
# e.g. debootstrap --variant=minbase bookworm /var/tmp/minbase && bench/compare-mke2fs.sh /var/tmp/minbase 3
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
source "$here/bench/common.sh"
bench_start "$@"

fs_bytes=$(fs_size "$tree")
mk_size=${MKE2FS_SIZE:-$((fs_bytes * 5 / 4 / 1048576))M}

ours=() theirs=()
for i in $(seq "$runs"); do
	rm -f "$work/a.img" "$work/b.img"
	drop; s=$(now); "$tool" -q -t ext4 "$tree" "$work/a.img"; e=$(now)
	ours+=("$(echo "$e - $s" | bc)")
	drop; s=$(now); truncate -s "$mk_size" "$work/b.img"; mke2fs -q -F -t ext4 -b 4096 -d "$tree" "$work/b.img"; e=$(now)
	theirs+=("$(echo "$e - $s" | bc)")
done
mo=$(median "${ours[@]}"); mt=$(median "${theirs[@]}")
alloc() { echo $(($(stat -c %b "$1") * 512 / 1048576)); }
echo "tree: $tree ($(find "$tree" | wc -l) entries, $(du -sh --apparent-size "$tree" | cut -f1) apparent)"
echo "linuxdisk-mk -t ext4: median ${mo}s of ${ours[*]}; image $(($(stat -c %s "$work/a.img") / 1048576)) MiB disk, $(alloc "$work/a.img") MiB allocated, fs $((fs_bytes / 1048576)) MiB"
echo "mke2fs -t ext4 -d:    median ${mt}s of ${theirs[*]}; image $(($(stat -c %s "$work/b.img") / 1048576)) MiB (size chosen by hand: $mk_size), $(alloc "$work/b.img") MiB allocated"
echo "ratio time ours/mke2fs: $(ratio "$mo" "$mt")"
