#!/usr/bin/env bash
# nbdcopy throughput over TLS-PSK and in plaintext, side by side, in one run: `linuxdisk-mk
# --serve [--tls-psk KEYS]` vs `nbdkit [--tls=require --tls-psk=KEYS] file IMG` serving the image
# file linuxdisk-mk wrote of the same tree, the four alternating, RUNS times each (default 3),
# to null:, with 1 and 4 connections. nbdcopy times itself inside --run, so building our disk is
# not counted; the server's CPU time (user + system) during each copy is read from /proc too.
# Prints medians and the ratios ours/nbdkit and TLS/plaintext.
#   bench/nbd-tls.sh [TREE] [RUNS]          ($LINUXDISK_MK: the binary, default a release build)
# Without TREE: 4 x 256 MiB of random data.
set -euo pipefail
tree=${1:-}
runs=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
tool=${LINUXDISK_MK:-}
if [ -z "$tool" ]; then
	cargo build --release -q --manifest-path "$here/Cargo.toml"
	tool=$here/target/release/linuxdisk-mk
fi
for t in nbdcopy nbdkit psktool bc; do command -v "$t" >/dev/null || { echo "$0: $t is missing" >&2; exit 1; }; done
work=$(mktemp -d /var/tmp/ldk-nbd-tls.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "$tree" ]; then
	tree=$work/tree
	mkdir -p "$tree"
	for i in 1 2 3 4; do head -c $((256 << 20)) /dev/urandom >"$tree/file$i"; done
fi
psktool -u bench -p "$work/keys.psk" >/dev/null
"$tool" -q -t ext4 "$tree" "$work/disk.img"
mib=$(($(stat -c %s "$work/disk.img") >> 20))

# Each side runs this inside --run with the URI in $1 and the server's pid in $2; it writes
# nbdcopy's seconds to $work/t.C and the server's CPU seconds during it to $work/cpu.C.
cat >"$work/copy.sh" <<EOC
cpu() { awk -v hz=\$(getconf CLK_TCK) '{print (\$14 + \$15) / hz}' /proc/\$2/stat; }
for c in 1 4; do
	s=\$(date +%s.%N) c0=\$(cpu "\$@")
	nbdcopy --connections=\$c "\$1" null:
	echo "\$(date +%s.%N) - \$s" | bc > '$work/t.'\$c
	echo "\$(cpu "\$@") - \$c0" | bc > '$work/cpu.'\$c
done
EOC
tls_uri='nbds+unix://bench@/?socket=$unixsocket&tls-psk-file='"$work/keys.psk"
# The server's pid as seen from the --run command: ours runs it as a child; nbdkit's parent runs
# it, and the server is that parent's other child.
nbdkit_pid='$(pgrep -P $PPID -x nbdkit)'
declare -A times cpus
for i in $(seq "$runs"); do
	for side in ours-plain nbdkit-plain ours-tls nbdkit-tls; do
		case $side in
		ours-plain) "$tool" -q --serve -t ext4 "$tree" --run "sh '$work/copy.sh' \"\$uri\" \$PPID" ;;
		ours-tls) "$tool" -q --serve -t ext4 --tls-psk "$work/keys.psk" "$tree" --run "sh '$work/copy.sh' \"\$uri\" \$PPID" ;;
		nbdkit-plain) nbdkit -U - -r file "$work/disk.img" --run "sh '$work/copy.sh' \"\$uri\" $nbdkit_pid" ;;
		nbdkit-tls) nbdkit -U - -r --tls=require --tls-psk="$work/keys.psk" file "$work/disk.img" \
			--run "sh '$work/copy.sh' \"$tls_uri\" $nbdkit_pid" ;;
		esac
		for c in 1 4; do
			times[$side.$c]+="$(cat "$work/t.$c") "
			cpus[$side.$c]+="$(cat "$work/cpu.$c") "
		done
	done
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "disk: $mib MiB ($tree); $runs runs each, alternating; nbdcopy to null:"
for c in 1 4; do
	for side in ours-plain nbdkit-plain ours-tls nbdkit-tls; do
		m=$(median "${times[$side.$c]}")
		printf '%-13s --connections=%d: median %6.2f s (%5.0f MiB/s), server CPU %5.2f s; of %s\n' \
			"$side" "$c" "$m" "$(echo "$mib / $m" | bc -l)" "$(median "${cpus[$side.$c]}")" \
			"${times[$side.$c]}"
		eval "m_${side//-/_}=$m"
	done
	echo "  ratios (time): ours/nbdkit TLS $(echo "scale=2; $m_ours_tls / $m_nbdkit_tls" | bc)," \
		"plaintext $(echo "scale=2; $m_ours_plain / $m_nbdkit_plain" | bc);" \
		"TLS/plaintext ours $(echo "scale=2; $m_ours_tls / $m_ours_plain" | bc)," \
		"nbdkit $(echo "scale=2; $m_nbdkit_tls / $m_nbdkit_plain" | bc)"
done
