#!/usr/bin/env bash
# The main job on the example tree: installs what is missing, builds linuxdisk-mk, makes the
# seed's busybox appliance tree (examples/appliance), turns it into a GPT + ext4 disk image,
# checks it with sgdisk and e2fsck, and says how to boot or inspect it. Run as root (mknod,
# losetup): sudo ./scripts/demo.sh [OUTPUT-DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/deps.sh
source "$here/scripts/deps.sh"
ldk_install_deps

out=${1:-$here/examples/out}
mkdir -p "$out"
echo "== building linuxdisk-mk (release)" >&2
cargo build --release --manifest-path "$here/Cargo.toml" >&2
tool=$here/target/release/linuxdisk-mk

echo "== making the appliance tree and the image" >&2
make -s -C "$here/examples" LINUXDISK_MK="$tool" ROOT="$out/root" IMG="$out/root.img" root "$out/root.img" check

cat <<MSG

Done: $out/root.img
  a GPT disk whose partition 1 (at 1 MiB) holds an ext4 filesystem labelled "root"
  with the busybox appliance of examples/appliance (made in $out/root).

Inspect it:
  sgdisk -p $out/root.img
  dev=\$(losetup -r -o 1048576 -f --show $out/root.img); mount -o ro \$dev /mnt; ls -l /mnt; umount /mnt; losetup -d \$dev

Serve the same disk over NBD instead (read-only; here nbdinfo starts the server and lists it):
  nbdinfo -- [ $tool --serve -t ext4 $out/root ]

Boot it (qemu under TCG, Debian's kernel fetched and cached by tests/boot/prepare.sh; Ctrl-A X quits):
  make -C $here/examples LINUXDISK_MK=$tool ROOT=$out/root IMG=$out/root.img boot
MSG
