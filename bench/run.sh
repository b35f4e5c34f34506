#!/usr/bin/env bash
# The benchmark: on the same trees, in one run, alternating and repeated (median of RUNS, default
# 3), times
#   ours    linuxdisk-mk -t ext4 TREE out.img
#   mke2fs  truncate -s SIZE f.img && mke2fs -q -F -t ext4 -b 4096 -d TREE f.img   (pre-sized file)
#   nbdkit  nbdkit linuxdisk TREE type=ext4 --run 'nbdcopy $uri out.img'
#   limit   tar -C TREE -cf - . > file   (every byte read and written once: the copy limit)
# and prints the ratios ours/mke2fs, ours/nbdkit, ours/limit, with our peak RSS. Page caches are
# dropped before every run. Needs root, debootstrap (network to the Debian mirror) for the minbase
# tree, and about 12 GiB free in WORK.
#   bench/run.sh [--quick] [RUNS]       (--quick: small trees only, for a smoke test)
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

# --- trees -----------------------------------------------------------------------------------
many_files() { # DIR COUNT DIRS: COUNT small files spread over DIRS directories (1 = flat)
	local d=$1 n=$2 k=$3
	[ -e "$d/.done" ] && return
	rm -rf "$d"; mkdir -p "$d"
	python3 - "$d" "$n" "$k" <<'PY'
import os, sys
d, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for j in range(k):
    os.makedirs(os.path.join(d, "d%04d" % j) if k > 1 else d, exist_ok=True)
for i in range(n):
    sub = os.path.join(d, "d%04d" % (i % k)) if k > 1 else d
    with open(os.path.join(sub, "file-%07d" % i), "wb") as f:
        f.write(os.urandom(100 + (i * 7919) % 3000))
PY
	touch "$d/.done"
}
big_files() { # DIR COUNT MIB
	local d=$1
	[ -e "$d/.done" ] && return
	rm -rf "$d"; mkdir -p "$d"
	for i in $(seq "$2"); do head -c "$(($3 << 20))" /dev/urandom > "$d/big$i"; done
	touch "$d/.done"
}
trees=()
if [ ! -e "$work/minbase/.done" ] && [ $quick = 0 ]; then
	rm -rf "$work/minbase"
	debootstrap --variant=minbase bookworm "$work/minbase" http://deb.debian.org/debian >/dev/null
	touch "$work/minbase/.done"
fi
if [ -n "${TREES:-}" ]; then
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
fi

# --- timing ----------------------------------------------------------------------------------
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { # CMD...: wall seconds; peak RSS (KiB) of the command goes to $rss_file
	/usr/bin/time -f "%e %M" -o "$work/.time" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; cat "$work/.time" >&2; return 1; }
	read -r t rss < <(tail -1 "$work/.time"); echo "$rss" >"$work/.rss"; echo "$t"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
out=$work/out; mkdir -p "$out"

printf '%-12s %9s %9s %9s %9s %8s %8s %8s %9s %8s\n' tree ours mke2fs nbdkit limit us/mke2 us/nbdk us/limit peakRSS fs-size
for t in "${trees[@]}"; do
	src=$work/$t
	rm -f "$out/probe.img"
	"$tool" -q -t ext4 --partition none "$src" "$out/probe.img"
	fs_bytes=$(stat -c %s "$out/probe.img"); rm -f "$out/probe.img"
	mk_size=$((fs_bytes * 3 / 2 / 1048576 + 64))M   # mke2fs needs more room than our exact fit
	mk_inodes=$(($(find "$src" | wc -l) * 11 / 10 + 1024))  # and more inodes than its ratio gives
	o=() m=() n=() l=() rss=0
	for i in $(seq "$runs"); do
		rm -f "$out"/*.img "$out/tar"
		drop; o+=("$(secs "$tool" -q -t ext4 "$src" "$out/ours.img")"); r=$(cat "$work/.rss"); [ "$r" -gt "$rss" ] && rss=$r
		rm -f "$out/ours.img"
		drop; m+=("$(secs sh -c "truncate -s $mk_size '$out/mk.img' && mke2fs -q -F -t ext4 -b 4096 -N $mk_inodes -d '$src' '$out/mk.img'")")
		rm -f "$out/mk.img"
		drop; n+=("$(secs env TMPDIR="$out" nbdkit -U - linuxdisk "$src" type=ext4 --run "nbdcopy \$uri '$out/nbd.img'")")
		rm -f "$out/nbd.img"
		drop; l+=("$(secs sh -c "tar -C '$src' -cf - . > '$out/tar'")")
		rm -f "$out/tar"
	done
	mo=$(median "${o[@]}"); mm=$(median "${m[@]}"); mn=$(median "${n[@]}"); ml=$(median "${l[@]}")
	printf '%-12s %9s %9s %9s %9s %8s %8s %8s %7sMiB %6sMiB\n' "$t" "$mo" "$mm" "$mn" "$ml" \
		"$(ratio "$mo" "$mm")" "$(ratio "$mo" "$mn")" "$(ratio "$mo" "$ml")" $((rss / 1024)) $((fs_bytes >> 20))
done

if [ $quick = 0 ] && [ -z "${TREES:-}" ]; then
	echo; echo "scaling, files in one directory (ours only, median of $runs):"
	for t in flat-10k flat-30k flat-100k; do
		o=()
		for i in $(seq "$runs"); do rm -f "$out/ours.img"; drop; o+=("$(secs "$tool" -q -t ext4 "$work/$t" "$out/ours.img")"); done
		printf '  %-10s %8ss  peak RSS %sMiB\n' "$t" "$(median "${o[@]}")" $(($(cat "$work/.rss") / 1024))
	done
	rm -f "$out/ours.img"
fi
