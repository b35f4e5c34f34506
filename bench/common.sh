# Shared by the benchmarks (sourced; needs $work): making trees, timing, medians and ratios.

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
secs() { # CMD...: wall seconds; peak RSS (KiB) of the command goes to $work/.rss
	/usr/bin/time -f "%e %M" -o "$work/.time" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; cat "$work/.time" >&2; return 1; }
	read -r t rss < <(tail -1 "$work/.time"); echo "$rss" >"$work/.rss"; echo "$t"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
