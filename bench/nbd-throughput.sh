#!/usr/bin/env bash
# nbdcopy throughput of the served disk, side by side: `linuxdisk-mk --serve --run 'nbdcopy ...'`
# vs `nbdkit file IMG --run 'nbdcopy ...'` serving the image file linuxdisk-mk wrote of the same tree,
# alternating, RUNS times each (default 3), destination null: (discarded), 4 connections. nbdcopy
# times itself inside --run on both sides, so building our disk is not counted (the whole session is
# printed too). Prints the medians and the ratio.
#   bench/nbd-throughput.sh [TREE] [RUNS]
# Without TREE: a tree of 4 x 256 MiB random files plus a small sparse file (BIG_FILES, BIG_MIB).
set -euo pipefail
tree=${1:-}
runs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --manifest-path "$here/Cargo.toml"
tool=$here/target/release/linuxdisk-mk
for t in nbdcopy nbdkit bc; do command -v "$t" >/dev/null || { echo "$0: $t is missing" >&2; exit 1; }; done
work=$(mktemp -d /var/tmp/ldk-nbd-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ -z "$tree" ]; then
	tree=$work/tree
	mkdir -p "$tree/big" "$tree/small"
	for i in $(seq "${BIG_FILES:-4}"); do
		head -c "$((${BIG_MIB:-256} << 20))" /dev/urandom >"$tree/big/file$i"
	done
	for i in $(seq 200); do head -c $((i * 997)) /dev/urandom >"$tree/small/f$i"; done
	truncate -s 1G "$tree/sparse"
	echo data | dd of="$tree/sparse" bs=1 seek=$((512 << 20)) conv=notrunc status=none
fi

now() { date +%s.%N; }
s=$(now)
"$tool" -q -t ext4 "$tree" "$work/disk.img"
build=$(echo "$(now) - $s" | bc)
size=$(stat -c %s "$work/disk.img")
# The copy times itself inside --run, so both sides measure the same thing: nbdcopy alone.
copy="s=\$(date +%s.%N); nbdcopy --connections=4 \"\$uri\" null: && echo \"\$(date +%s.%N) - \$s\" | bc > '$work/t'"

ours=() theirs=() totals=()
for i in $(seq "$runs"); do
	s=$(now); "$tool" -q --serve -t ext4 "$tree" --run "$copy"; e=$(now)
	ours+=("$(cat "$work/t")"); totals+=("$(echo "$e - $s" | bc)")
	nbdkit -U - -r file "$work/disk.img" --run "$copy"
	theirs+=("$(cat "$work/t")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}"); mt=$(median "${theirs[@]}"); mtot=$(median "${totals[@]}")
mib=$((size >> 20))
echo "tree: $tree ($(find "$tree" | wc -l) entries, $(du -sh --apparent-size "$tree" | cut -f1) apparent); disk $mib MiB, $(($(stat -c %b "$work/disk.img") * 512 >> 20)) MiB allocated"
echo "linuxdisk-mk -t ext4 TREE IMG (image file build): ${build}s"
echo "nbdcopy --connections=4 of linuxdisk-mk --serve: median ${mo}s of ${ours[*]} ($(echo "scale=1; $mib / $mo" | bc) disk MiB/s); whole --serve --run session median ${mtot}s"
echo "nbdcopy --connections=4 of nbdkit file IMG:      median ${mt}s of ${theirs[*]} ($(echo "scale=1; $mib / $mt" | bc) disk MiB/s)"
echo "ratio nbdcopy time ours/nbdkit-file: $(echo "scale=2; $mo / $mt" | bc)"
