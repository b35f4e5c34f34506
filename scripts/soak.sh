#!/usr/bin/env bash
# A bounded soak of the NBD server (~2 minutes; SOAK_SECONDS to change it): builds an image of a
# generated tree (big random files, many small files, holes) with $LINUXDISK_MK (default
# target/debug/linuxdisk-mk, built if missing), serves the same tree on a Unix socket under the
# same SOURCE_DATE_EPOCH (so the served disk is byte-identical to the image), and runs
# SOAK_CLIENTS (16) clients at a time for SOAK_SECONDS (scripts/soak.py): random reads checked
# against the image, block status, clean and abrupt disconnects, SIGKILLed clients, nbdinfo and
# nbdcopy, about half of them over TLS (the server runs with --tls=on and a PSK made by psktool).
# Fails unless there is no mismatch, the server's RSS never went over 256 MiB, the server is
# alive with its threads back to their count and RSS under 200 MiB, and SIGTERM then stops it
# with status 0 and no socket left. Prints a summary line; SOAK_SEED repeats a run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${SOAK_SECONDS:-120}
clients=${SOAK_CLIENTS:-16}
seed=${SOAK_SEED:-$RANDOM}
py=/usr/bin/python3 # the distribution's python has python3-libnbd
export SOURCE_DATE_EPOCH=1700000000

bin=${LINUXDISK_MK:-}
if [ -z "$bin" ]; then
	bin=$here/target/debug/linuxdisk-mk
	[ -x "$bin" ] || cargo build --manifest-path "$here/Cargo.toml" >&2
fi
[ -x "$bin" ] || { echo "soak: no executable $bin" >&2; exit 1; }
for t in nbdinfo nbdcopy; do
	command -v "$t" >/dev/null || { echo "soak: $t is not installed (libnbd-bin)" >&2; exit 1; }
done
command -v psktool >/dev/null || { echo "soak: psktool is not installed (gnutls-bin)" >&2; exit 1; }
"$py" -c 'import nbd' || { echo "soak: $py cannot import nbd (python3-libnbd)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/ldmk-soak.XXXXXX")
server="" client=""
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	[ -z "$client" ] || { kill "$client" 2>/dev/null || true; wait "$client" 2>/dev/null || true; }
	if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
		kill -TERM "$server" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
echo "soak: seed $seed, ${seconds} s, $clients clients at a time, $bin" >&2
"$py" "$here/scripts/soak.py" tree "$tmp/tree" "$seed"
"$bin" -q -t ext4 "$tmp/tree" "$tmp/disk.img"
psktool -u soak -p "$tmp/keys.psk" >/dev/null
"$bin" --serve -q -t ext4 --socket "$tmp/nbd.sock" --pidfile "$tmp/pid" \
	--tls=on --tls-psk "$tmp/keys.psk" "$tmp/tree" 2>"$tmp/server.err" &
server=$!
for _ in $(seq 1200); do
	[ -s "$tmp/pid" ] && break
	kill -0 "$server" 2>/dev/null || break
	sleep 0.1
done
if ! [ -s "$tmp/pid" ]; then
	echo "soak: the server did not start" >&2
	cat "$tmp/server.err" >&2
	exit 1
fi

uri="nbd+unix:///?socket=$tmp/nbd.sock"
tls_uri="nbds+unix://soak@/?socket=$tmp/nbd.sock&tls-psk-file=$tmp/keys.psk"
status=0
timeout --signal=KILL $((seconds + 600)) "$py" "$here/scripts/soak.py" run "$uri" "$tmp/disk.img" "$server" "$seconds" "$clients" "$seed" "$tls_uri" &
client=$!
wait "$client" || status=$?
client=

kill -TERM "$server"
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server" 2>/dev/null; then
	echo "soak: the server was still running 10 s after SIGTERM" >&2
	status=1
else
	code=0
	wait "$server" || code=$?
	server=
	[ "$code" -eq 0 ] || { echo "soak: the server exited with status $code after SIGTERM" >&2; status=1; }
	[ ! -e "$tmp/nbd.sock" ] || { echo "soak: the server left its socket behind" >&2; status=1; }
fi
if [ "$status" -ne 0 ]; then
	echo "soak: FAILED (seed $seed); server stderr:" >&2
	tail -n 20 "$tmp/server.err" >&2
	exit 1
fi
echo "soak: passed in $((SECONDS - start)) s (seed $seed)"
