#!/usr/bin/env bash
# The same tree as a directory, as a tar stream on stdin and as an OCI image (one gzip layer,
# written here by hand: tar + sha256sum + JSON), made into a disk by linuxdisk-mk -t ext4, beside
# mke2fs -t ext4 -b 4096 -d of the directory given the same filesystem size; alternating, page
# caches dropped before each run (needs root). Prints median times, ratios and image sizes.
#   bench/compose.sh TREE [RUNS]
# e.g. bench/compose.sh "$(tests/debian/tree.sh systemd-sysv udev linux-image-amd64 systemd-boot iputils-ping libcap2-bin)" 3
set -euo pipefail
tree=${1:?usage: $0 TREE [RUNS]}
runs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q --manifest-path "$here/Cargo.toml"
tool=$here/target/release/linuxdisk-mk
work=$(mktemp -d /var/tmp/ldk-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# The tar stream and the OCI image of the tree.
tar --xattrs --xattrs-include='*' --acls --format=posix --numeric-owner -C "$tree" -cf "$work/tree.tar" .
oci=$work/oci
mkdir -p "$oci/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"
gzip -1 -c "$work/tree.tar" >"$work/layer"
diff_id=$(sha "$work/tree.tar")
layer=$(sha "$work/layer")
mv "$work/layer" "$oci/blobs/sha256/$layer"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
	"$diff_id" >"$work/config"
config=$(sha "$work/config")
config_size=$(stat -c %s "$work/config")
mv "$work/config" "$oci/blobs/sha256/$config"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
	"$config" "$config_size" "$layer" "$(stat -c %s "$oci/blobs/sha256/$layer")" >"$work/manifest"
manifest=$(sha "$work/manifest")
manifest_size=$(stat -c %s "$work/manifest")
mv "$work/manifest" "$oci/blobs/sha256/$manifest"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' \
	"$manifest" "$manifest_size" >"$oci/index.json"

# mke2fs -d gets the size of the filesystem linuxdisk-mk chooses for the directory.
"$tool" -q -t ext4 --partition none "$tree" "$work/probe.img"
fs_bytes=$(stat -c %s "$work/probe.img")
rm -f "$work/probe.img"

declare -A t
for i in $(seq "$runs"); do
	for v in dir tar oci mke2fs; do
		rm -f "$work/$v.img"
		drop
		s=$(now)
		case $v in
		dir) "$tool" -q -t ext4 "$tree" "$work/$v.img" ;;
		tar) cat "$work/tree.tar" | "$tool" -q -t ext4 - "$work/$v.img" ;;
		oci) "$tool" -q -t ext4 "$oci" "$work/$v.img" ;;
		mke2fs)
			truncate -s "$fs_bytes" "$work/$v.img"
			mke2fs -q -F -t ext4 -b 4096 -d "$tree" "$work/$v.img"
			sync -f "$work/$v.img"
			;;
		esac
		e=$(now)
		t[$v]+="$(echo "$e - $s" | bc) "
	done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
echo "tree: $tree ($(find "$tree" | wc -l) entries, $(du -sh --apparent-size "$tree" | cut -f1) apparent); tar $(mib "$(stat -c %s "$work/tree.tar")") MiB, OCI layer $(mib "$(stat -c %s "$oci/blobs/sha256/$layer")") MiB"
m=$(median "${t[mke2fs]}")
for v in dir tar oci mke2fs; do
	img=$work/$v.img
	printf '%-7s median %6.2f s (runs: %s) ratio to mke2fs -d %s; disk %s MiB, %s MiB allocated\n' \
		"$v" "$(median "${t[$v]}")" "${t[$v]% }" "$(echo "scale=2; $(median "${t[$v]}") / $m" | bc)" \
		"$(mib "$(stat -c %s "$img")")" "$(mib "$(($(stat -c %b "$img") * 512))")"
done
echo "(mke2fs -d into a bare filesystem of $(mib "$fs_bytes") MiB, the size linuxdisk-mk chose for the directory)"
