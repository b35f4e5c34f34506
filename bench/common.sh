# Shared by the benchmarks (sourced; needs $here, and $work for what writes there): the binary,
# a scratch directory, making trees, timing, medians and ratios.

build_tool() { # builds the release binary and sets $tool to it
	cargo build --release -q --manifest-path "$here/Cargo.toml"
	tool=$here/target/release/linuxdisk-mk
}
temp_work() { # sets $work to a fresh directory under /var/tmp, removed when the script exits
	work=$(mktemp -d /var/tmp/ldk-bench.XXXXXX)
	trap 'rm -rf "$work"' EXIT
}
bench_start() { # TREE [RUNS], the script's arguments: sets $tree and $runs (default 3), then
	# builds the binary and makes $work
	tree=${1:?usage: $0 TREE [RUNS]}
	runs=${2:-3}
	build_tool
	temp_work
}
fs_size() { # TREE: the size in bytes of the filesystem linuxdisk-mk -t ext4 chooses for TREE
	"$tool" -q -t ext4 --partition none "$1" "$work/probe.img" || return
	stat -c %s "$work/probe.img" || return
	rm -f "$work/probe.img"
}

many_files() { # DIR COUNT DIRS: COUNT small files of random data spread over DIRS directories (1 = flat)
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
empty_files() { # DIR COUNT: COUNT empty files in one directory (metadata only)
	local d=$1 n=$2
	[ -e "$d/.done" ] && return
	rm -rf "$d"; mkdir -p "$d/flat"
	python3 - "$d/flat" "$n" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open(os.path.join(d, "file-%07d" % i), "wb").close()
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

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
secs() { # CMD...: wall seconds; peak RSS (KiB) of the command goes to $work/.rss
	/usr/bin/time -f "%e %M" -o "$work/.time" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; cat "$work/.time" >&2; return 1; }
	read -r t rss < <(tail -1 "$work/.time"); echo "$rss" >"$work/.rss"; echo "$t"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
