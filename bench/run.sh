#!/usr/bin/env bash
# The benchmark: on the same trees, in one run, alternating and repeated (median of RUNS, default
# 3), times
#   ours    linuxdisk-mk -t ext4 TREE out.img
#   mke2fs  truncate -s SIZE f.img && mke2fs -q -F -t ext4 -b 4096 -d TREE f.img   (pre-sized file)
#   nbdkit  nbdkit linuxdisk TREE type=ext4 --run 'nbdcopy $uri out.img'
#   limit   tar -C TREE -cf FILE . && sync FILE   (every byte read and written once, durably:
#           our image is fsync'ed before its rename, so this is the honest copy limit)
# and prints the ratios ours/mke2fs, ours/nbdkit, ours/limit, with our peak RSS and du of our
# image. Page caches are dropped before every run. Then the scaling series: files in one
# directory, with data (10k, 30k, 100k) and empty (10k, 100k, 1M), ours only, in µs an entry.
# Needs root, debootstrap (network to the Debian mirror) for the minbase tree, and about 12 GiB
# free in WORK. bench/clone.sh has the rows for XFS (reflink) and btrfs.
#   bench/run.sh [--quick] [RUNS]       (--quick: small trees only, for a smoke test)
#   TREES="big-4x512 minbase" bench/run.sh   (some trees only; TREES=scaling: the series only)
# Trees are generated once into WORK (default /var/tmp/linuxdisk-mk-bench) and reused.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
runs=${1:-3}
work=${WORK:-/var/tmp/linuxdisk-mk-bench}
mkdir -p "$work"
cargo build --release -q --manifest-path "$here/Cargo.toml"
tool=$here/target/release/linuxdisk-mk

# shellcheck source=bench/common.sh
source "$here/bench/common.sh"

# --- trees -----------------------------------------------------------------------------------
trees=()
if [ ! -e "$work/minbase/.done" ] && [ $quick = 0 ]; then
	rm -rf "$work/minbase"
	debootstrap --variant=minbase bookworm "$work/minbase" http://deb.debian.org/debian >/dev/null
	touch "$work/minbase/.done"
fi
scaling=0
if [ "${TREES:-}" = scaling ]; then
	scaling=1                      # TREES=scaling: only the scaling series (trees already made)
elif [ -n "${TREES:-}" ]; then
	read -r -a trees <<<"$TREES"   # e.g. TREES="spread-100k" to rerun some (already generated)
elif [ $quick = 1 ]; then
	many_files "$work/flat-3k" 3000 1; trees+=(flat-3k)
	big_files "$work/big-small" 2 64; trees+=(big-small)
else
	trees+=(minbase)
	many_files "$work/flat-30k" 30000 1; trees+=(flat-30k)
	big_files "$work/big-4x512" 4 512; trees+=(big-4x512)
	many_files "$work/spread-100k" 100000 1000; trees+=(spread-100k)
	many_files "$work/flat-10k" 10000 1
	many_files "$work/flat-100k" 100000 1
	for n in 10k:10000 100k:100000 1m:1000000; do empty_files "$work/empty-${n%%:*}" "${n#*:}"; done
	scaling=1
fi

# --- timing ---------------------------------------------------------------------------------
out=$work/out; mkdir -p "$out"

[ ${#trees[@]} = 0 ] || printf '%-12s %9s %9s %9s %9s %8s %8s %8s %9s %8s %9s\n' tree ours mke2fs nbdkit limit us/mke2 us/nbdk us/limit peakRSS fs-size du-image
for t in "${trees[@]+"${trees[@]}"}"; do
	src=$work/$t
	rm -f "$out/probe.img"
	"$tool" -q -t ext4 --partition none "$src" "$out/probe.img"
	fs_bytes=$(stat -c %s "$out/probe.img"); rm -f "$out/probe.img"
	mk_size=$((fs_bytes * 3 / 2 / 1048576 + 64))M   # mke2fs needs more room than our exact fit
	mk_inodes=$(($(find "$src" | wc -l) * 11 / 10 + 1024))  # and more inodes than its ratio gives
	o=() m=() n=() l=() rss=0 du_img=0
	for i in $(seq "$runs"); do
		rm -f "$out"/*.img "$out/tar"
		drop; o+=("$(secs "$tool" -q -t ext4 "$src" "$out/ours.img")"); r=$(cat "$work/.rss"); [ "$r" -gt "$rss" ] && rss=$r
		du_img=$(du -k "$out/ours.img" | cut -f1)
		rm -f "$out/ours.img"
		drop; m+=("$(secs sh -c "truncate -s $mk_size '$out/mk.img' && mke2fs -q -F -t ext4 -b 4096 -N $mk_inodes -d '$src' '$out/mk.img'")")
		rm -f "$out/mk.img"
		drop; n+=("$(secs env TMPDIR="$out" nbdkit -U - linuxdisk "$src" type=ext4 --run "nbdcopy \$uri '$out/nbd.img'")")
		rm -f "$out/nbd.img"
		drop; l+=("$(secs sh -c "tar -C '$src' -cf '$out/tar' . && sync '$out/tar'")")
		rm -f "$out/tar"
	done
	mo=$(median "${o[@]}"); mm=$(median "${m[@]}"); mn=$(median "${n[@]}"); ml=$(median "${l[@]}")
	printf '%-12s %9s %9s %9s %9s %8s %8s %8s %7sMiB %6sMiB %7sMiB\n' "$t" "$mo" "$mm" "$mn" "$ml" \
		"$(ratio "$mo" "$mm")" "$(ratio "$mo" "$mn")" "$(ratio "$mo" "$ml")" $((rss / 1024)) $((fs_bytes >> 20)) \
		$((du_img / 1024))
done

if [ $scaling = 1 ]; then
	echo; echo "scaling, files in one directory (ours only, median of $runs):"
	for t in flat-10k:10000 flat-30k:30000 flat-100k:100000 empty-10k:10000 empty-100k:100000 empty-1m:1000000; do
		o=() rss=0
		for i in $(seq "$runs"); do
			rm -f "$out/ours.img"; drop; o+=("$(secs "$tool" -q -t ext4 "$work/${t%%:*}" "$out/ours.img")")
			r=$(cat "$work/.rss"); [ "$r" -gt "$rss" ] && rss=$r
		done
		mo=$(median "${o[@]}")
		printf '  %-10s %8ss  %5s µs/entry  peak RSS %sMiB\n' "${t%%:*}" "$mo" \
			"$(echo "scale=1; $mo * 1000000 / ${t#*:}" | bc)" $((rss / 1024))
	done
	rm -f "$out/ours.img"
fi
