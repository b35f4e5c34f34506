#!/usr/bin/env bash
# The whole test suite: installs what is missing, then formatting and lint checks, unit tests and
# the integration tests (real tools, loop mounts, qemu boots). Run as root: sudo ./scripts/test.sh
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
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets -- --test-threads="${LINUXDISK_MK_TEST_THREADS:-4}"
# ~2 minutes of many NBD clients against one server (SOAK_SECONDS to change it).
"$here/scripts/soak.sh"
