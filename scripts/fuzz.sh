#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 600), one after the other, one
# job and one worker each (the targets are single-threaded; run it on a quiet machine), after
# seeding fuzz/corpus/TARGET with a few inputs that get the fuzzer past the first checks (real
# tars made by GNU tar for the tar reader). Crashes land in fuzz/artifacts/TARGET/; keep each one
# as a regression test (tests/fuzz_regressions.rs or the module's unit tests). Not run in CI.
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]      e.g. scripts/fuzz.sh 60 tar gpt
#
# cargo-fuzz needs nightly rustc flags (-Zsanitizer=address); with only a stable toolchain,
# RUSTC_BOOTSTRAP=1 lets stable rustc accept them, which this script sets. Needs cargo-fuzz
# (`cargo install cargo-fuzz`) and, for the tar seeds, GNU tar, gzip and setfattr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$here/fuzz
secs=${1:-600}
shift || true
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
	targets=("$@")
else
	mapfile -t targets < <(cd "$fuzz" && cargo fuzz list)
fi

# Per-target libFuzzer options: input size caps, and a timeout so a hang is a finding.
opts_for() {
	case $1 in
	size) echo "-max_len=64 -timeout=5" ;;
	gpt) echo "-max_len=512 -timeout=10" ;;
	tar) echo "-max_len=65536 -timeout=20" ;;
	*) echo "-timeout=20" ;;
	esac
}

seed_size() {
	local d=$1 s i=0
	for s in 4096 64K 64k 512M 3G 2T 16383P +1G " 5M " 1GiB 1kb 16E 99999999999T \
		18446744073709551615 18446744073709551616 16777215T 1.5G -5M +; do
		printf '%s' "$s" >"$d/seed-$i"
		i=$((i + 1))
	done
}

seed_gpt() {
	local d=$1
	head -c 128 /dev/zero >"$d/seed-zero"
	head -c 128 /dev/zero | tr '\0' '\377' >"$d/seed-ones"
	printf '\001\000\000\000\000\000\010\000linux' >"$d/seed-small"
	head -c 200 /dev/urandom >"$d/seed-random"
}

# Small real archives in the formats the reader handles, made by GNU tar.
seed_tar() {
	local d=$1 t
	t=$(mktemp -d)
	trap 'rm -rf "$t"' RETURN
	mkdir -p "$t/src/dir/sub" "$t/long/$(printf 'n%.0s' {1..120})"
	printf 'hello\n' >"$t/src/dir/file"
	printf 'x%.0s' {1..700} >"$t/src/dir/sub/big"
	ln -s file "$t/src/dir/link"
	ln "$t/src/dir/file" "$t/src/dir/hard"
	printf 'deep\n' >"$t/long/$(printf 'n%.0s' {1..120})/$(printf 'm%.0s' {1..110})"
	printf 'data' | dd of="$t/src/sparse" bs=1 seek=40000 conv=notrunc status=none
	printf 'head' | dd of="$t/src/sparse" bs=1 seek=0 conv=notrunc status=none
	printf 'v\n' >"$t/src/attr"
	setfattr -n user.fuzz -v seed "$t/src/attr" 2>/dev/null || true
	# One-block records: an archive ends right after its two zero blocks, no 10 KiB of padding.
	local base=(--blocking-factor=1 --owner=0 --group=0 --mtime=@1700000000)
	tar -C "$t/src" "${base[@]}" --format=ustar -cf "$d/ustar.tar" dir
	tar -C "$t/src" "${base[@]}" --format=gnu -cf "$d/gnu.tar" dir
	tar -C "$t/src" "${base[@]}" --format=v7 -cf "$d/v7.tar" dir/file dir/sub
	tar -C "$t" "${base[@]}" --format=gnu -cf "$d/gnu-longname.tar" long
	tar -C "$t" "${base[@]}" --format=posix -cf "$d/pax-longname.tar" long
	tar -C "$t/src" "${base[@]}" --format=gnu --sparse -cf "$d/gnu-sparse.tar" sparse
	tar -C "$t/src" "${base[@]}" --format=oldgnu --sparse -cf "$d/oldgnu-sparse.tar" sparse
	local v
	for v in 0.0 0.1 1.0; do
		tar -C "$t/src" "${base[@]}" --format=posix --sparse --sparse-version=$v \
			-cf "$d/pax-sparse-$v.tar" sparse
	done
	tar -C "$t/src" "${base[@]}" --format=posix --xattrs --xattrs-include='*' -cf "$d/pax-xattrs.tar" attr dir/link
	tar -C "$t/src" "${base[@]}" --format=posix --pax-option=globexthdr.name=g -cf "$d/pax.tar" dir
	gzip -9 -c "$d/ustar.tar" >"$d/ustar.tar.gz"
	# Recipes for the target's archive generator (inputs starting with byte 0xA5).
	local i
	for i in 1 2 3 4; do
		{ printf '\245'; head -c 3000 /dev/urandom; } >"$d/gen-$i"
	done
}

cd "$fuzz"
cargo fuzz build >&2
failed=()
for target in "${targets[@]}"; do
	corpus=$fuzz/corpus/$target
	mkdir -p "$corpus" "$fuzz/artifacts/$target"
	if declare -F "seed_$target" >/dev/null && [ -z "$(ls -A "$corpus")" ]; then
		seed_"$target" "$corpus"
	fi
	echo "== fuzzing $target for ${secs}s" >&2
	# shellcheck disable=SC2046 # word splitting of the options is wanted
	if ! cargo fuzz run "$target" "$corpus" -- -max_total_time="$secs" -jobs=1 -workers=1 \
		-print_final_stats=1 $(opts_for "$target"); then
		failed+=("$target")
	fi
	echo "== $target: $(find "$corpus" -type f | wc -l) corpus files" >&2
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
	exit 1
fi
