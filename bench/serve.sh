#!/usr/bin/env bash
# Serving, side by side in one run:
#  1. start-up: from launching the server until `nbdinfo --size` answers, for
#       ours       linuxdisk-mk --serve -t ext4 TREE --run 'nbdinfo --size $uri'
#       lazy       linuxdisk-mk --serve --lazy -t ext4 TREE --run ...
#       nbdkit     nbdkit -U - linuxdisk TREE type=ext4 --run ...
#     alternating, RUNS times each (default 3), page caches dropped before each; medians and the
#     ratios ours/nbdkit and lazy/nbdkit. The clock stops inside --run when nbdinfo returns, so
#     tearing down (deleting the temp image) is not counted on either side.
#  2. auto-size: the disk size each tool chooses for SIZE_TREE (nbdkit: du x 1.2 + 32 MiB), with
#     our free space from -v.
# Needs root (drop_caches), nbdkit, nbdinfo, bc; trees from bench/run.sh (WORK).
#   bench/serve.sh [TREE] [RUNS]        (TREE default WORK/big-4x512; SIZE_TREE default WORK/minbase)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/var/tmp/linuxdisk-mk-bench}
tree=${1:-$work/big-4x512}
runs=${2:-3}
size_tree=${SIZE_TREE:-$work/minbase}
for t in nbdkit nbdinfo bc; do command -v "$t" >/dev/null || { echo "$0: $t is missing" >&2; exit 1; }; done
[ -d "$tree" ] || { echo "$0: $tree: no such tree (bench/run.sh generates it)" >&2; exit 1; }
cargo build --release -q --manifest-path "$here/Cargo.toml"
tool=$here/target/release/linuxdisk-mk
tmp=$(mktemp -d "$work/serve.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp # both tools build their temp image here

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
answered="nbdinfo --size \"\$uri\" >/dev/null && date +%s.%N > '$tmp/t'"
startup() { # CMD...: seconds from launch until nbdinfo --size answered
	drop
	local s; s=$(now)
	"$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
	echo "$(cat "$tmp/t") - $s" | bc
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=3; $1 / $2" | bc; }

o=() z=() n=()
for i in $(seq "$runs"); do
	o+=("$(startup "$tool" -q --serve -t ext4 "$tree" --run "$answered")")
	z+=("$(startup "$tool" -q --serve --lazy -t ext4 "$tree" --run "$answered")")
	n+=("$(startup nbdkit -U - linuxdisk "$tree" type=ext4 --run "$answered")")
done
mo=$(median "${o[@]}"); mz=$(median "${z[@]}"); mn=$(median "${n[@]}")
echo "start-up until nbdinfo --size answers, $tree ($(du -sh --apparent-size "$tree" | cut -f1)), median of $runs:"
echo "  linuxdisk-mk --serve         ${mo}s   (${o[*]})   ours/nbdkit $(ratio "$mo" "$mn")"
echo "  linuxdisk-mk --serve --lazy  ${mz}s   (${z[*]})   lazy/nbdkit $(ratio "$mz" "$mn")"
echo "  nbdkit linuxdisk             ${mn}s   (${n[*]})"

if [ -d "$size_tree" ]; then
	size() { "$@" 2>/dev/null | tail -1; }
	theirs=$(size nbdkit -U - linuxdisk "$size_tree" type=ext4 --run 'nbdinfo --size "$uri"')
	ours=$(size "$tool" -q --serve -t ext4 "$size_tree" --run 'nbdinfo --size "$uri"')
	free=$("$tool" -v --serve -t ext4 "$size_tree" --run true 2>&1 | grep -o 'free: [^)]*)' || true)
	echo "auto-size of $size_tree (du -sk: $(du -sk "$size_tree" | cut -f1) KiB):"
	echo "  linuxdisk-mk disk $((ours >> 20)) MiB ($ours bytes; $free), nbdkit $((theirs >> 20)) MiB ($theirs bytes): ratio $(ratio "$ours" "$theirs")"
fi
