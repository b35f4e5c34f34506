#!/bin/bash
# nbdkit-shim.sh — a stand-in for `linuxdisk-mk --serve`, built from nbdkit, to check the NBD test
# suite itself (the tests must pass against a known-good server before they judge ours).
#
#   LINUXDISK_MK_NBD_SERVER=$PWD/tests/nbd/nbdkit-shim.sh cargo test --test 'nbd_*'
#
# It takes linuxdisk-mk's serving command line, writes the image with the real binary
# ($LINUXDISK_MK_REAL_BIN, default target/debug/linuxdisk-mk) into /var/tmp (a watcher removes it
# when this process, or the nbdkit it became, is gone), and serves it with `nbdkit file` plus filters for what linuxdisk-mk promises: blocksize-policy
# (1 / 4096 / 32M, larger requests EINVAL), exportname (strict), cow (--cow). It prints
# `linuxdisk-mk: serving URI` when ready, writes --pidfile with its own pid, makes the socket 0600,
# and passes SIGTERM/SIGINT on to nbdkit (exit 0), then removes the socket.
# Socket activation execs nbdkit directly. Where nbdkit 1.32 differs from what linuxdisk-mk
# promises, the suite fails against the shim by design: it advertises SEND_FLUSH on a read-only
# export (nbdinfo_json..., raw_wire...), waits for idle clients to disconnect after SIGTERM
# (sigterm_with_clients_connected...), and has no WRITE_ZEROES under its cow filter (cow_writes...).
# Its block status says hole|zero only where the image file has holes; its messages differ.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
real=${LINUXDISK_MK_REAL_BIN:-$here/../../target/debug/linuxdisk-mk}
socket='' tcp='' run='' cow='' export_name='' pidfile='' quiet='' src=''
build=()
while [ $# -gt 0 ]; do
	case $1 in
	--serve) ;;
	--socket) socket=$2; shift ;;
	--tcp) tcp=$2; shift ;;
	--run) run=$2; shift ;;
	--cow) cow=1 ;;
	--export-name) export_name=$2; shift ;;
	--pidfile) pidfile=$2; shift ;;
	-q | --quiet) quiet=1 ;;
	-v | --verbose) ;;
	-t | --type | -L | --label | --size | --partition | --block-size) build+=("$1" "$2"); shift ;;
	-*) echo "nbdkit-shim: unknown option $1" >&2; exit 2 ;;
	*) src=$1 ;;
	esac
	shift
done
[ -n "$src" ] || { echo "nbdkit-shim: no SOURCE" >&2; exit 2; }

tmp=$(mktemp -d /var/tmp/ldmk-shim.XXXXXX)
"$real" -q "${build[@]}" "$src" "$tmp/disk.img" || { rm -rf "$tmp"; exit 1; }
me=$$
(
	while kill -0 $me 2>/dev/null; do sleep 0.5; done
	rm -rf "$tmp"
) </dev/null >/dev/null 2>&1 &

args=(file "file=$tmp/disk.img")
filters=(--filter=blocksize-policy --filter=exportname)
params=(blocksize-minimum=1 blocksize-preferred=4096 blocksize-maximum=32M
	blocksize-error-policy=error "exportname=$export_name" exportname-strict=true exportname-list=explicit
	"default-export=$export_name")
if [ -n "$cow" ]; then filters+=(--filter=cow); else args=(-r "${args[@]}"); fi
common=(-e "$export_name" "${filters[@]}" "${args[@]}" "${params[@]}")

if [ "${LISTEN_PID:-}" = "$$" ]; then exec nbdkit "${common[@]}"; fi

listen=()
host='' port=''
if [ -n "$socket" ]; then
	listen=(-U "$socket")
elif [ -n "$tcp" ]; then
	case $tcp in *:*) host=${tcp%:*} port=${tcp##*:} ;; *) host=127.0.0.1 port=$tcp ;; esac
	listen=(-i "$host" -p "$port")
elif [ -n "$run" ]; then
	listen=(-U -)
else
	host=127.0.0.1 port=10809
	listen=(-i "$host" -p "$port")
fi
# nbdkit 1.32 sets these as shell variables (not exported), writes nbd+unix://?socket= and
# nbd://localhost:PORT, and leaves a named socket behind.
fix="host='$host'"'
if [ -n "$unixsocket" ]; then uri="nbd+unix:///$exportname?socket=$unixsocket"; fi
if [ -n "$port" ]; then uri="nbd://$host:$port"; [ -z "$exportname" ] || uri="$uri/$exportname"; fi
nbd=$uri
export uri nbd unixsocket port exportname
'
if [ -n "$run" ]; then
	status=0
	nbdkit "${listen[@]}" --run "$fix$run" "${common[@]}" || status=$?
	[ -z "$socket" ] || rm -f "$socket"
	exit $status
fi

ready=$(mktemp -u /var/tmp/ldmk-shim-pid.XXXXXX)
nbdkit -f --exit-with-parent -P "$ready" "${listen[@]}" "${common[@]}" &
npid=$!
trap 'kill -TERM $npid 2>/dev/null || true' TERM INT
for _ in $(seq 600); do
	[ -s "$ready" ] && break
	kill -0 $npid 2>/dev/null || break
	sleep 0.05
done
rm -f "$ready"
if [ -n "$socket" ]; then
	chmod 600 "$socket"
	uri="nbd+unix:///$export_name?socket=$socket"
else
	uri="nbd://$host:$port/$export_name"
fi
[ -z "$pidfile" ] || echo $$ >"$pidfile"
[ -n "$quiet" ] || echo "linuxdisk-mk: serving $uri" >&2
status=0
wait $npid || status=$?
# A trapped signal interrupts `wait` (status > 128): wait again for nbdkit's own status.
if [ $status -gt 128 ]; then
	status=0
	wait $npid || status=$?
fi
# nbdkit 1.32 leaves a socket it was given by name; linuxdisk-mk removes it.
[ -z "$socket" ] || rm -f "$socket"
exit $status
