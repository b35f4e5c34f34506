#!/usr/bin/env bash
# The whole test suite: installs what is missing, then formatting and lint checks, unit tests and
# the integration tests (real tools, loop mounts, qemu boots) with cargo-nextest, and beside them
# the two-minute NBD soak. Run as root: sudo ./scripts/test.sh
#
# cargo nextest runs each test as a process of its own, the longest first (qemu boots, two at a
# time), and kills a test stuck for 10 minutes: see .config/nextest.toml. One module alone:
#   cargo nextest run --test tests 'boot::'     or     cargo test --test tests boot::
# LINUXDISK_MK_TEST_THREADS overrides the number of tests run at once (4).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
# shellcheck source=scripts/deps.sh
source "$here/scripts/deps.sh"
ldk_install_deps

if [ "$(id -u)" -ne 0 ]; then
	echo "test.sh: the integration tests need root (loop devices, mount, mknod); run with sudo" >&2
	exit 1
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy || true
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Build everything first: the soak runs the binary while the tests run.
cargo nextest run --all-targets --no-run

# ~2 minutes of many NBD clients against one server (SOAK_SECONDS to change it), beside the tests.
soak_log=$(mktemp "${TMPDIR:-/tmp}/linuxdisk-mk-soak.XXXXXX")
"$here/scripts/soak.sh" >"$soak_log" 2>&1 &
soak=$!
trap 'kill "$soak" 2>/dev/null || true; rm -f "$soak_log"' EXIT
status=0
cargo nextest run --all-targets ${LINUXDISK_MK_TEST_THREADS:+--test-threads "$LINUXDISK_MK_TEST_THREADS"} || status=$?
soak_status=0
wait "$soak" || soak_status=$?
cat "$soak_log"
if [ "$soak_status" -ne 0 ]; then
	echo "test.sh: the soak failed (exit $soak_status)" >&2
	status=1
fi
exit "$status"
