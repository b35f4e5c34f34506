#!/usr/bin/env bash
# Installs the Debian packages linuxdisk-mk needs to build, test and demo, if any are missing.
# Sourced by demo.sh and test.sh; safe to run on its own. Needs root (or sudo) to install.
set -euo pipefail

LINUXDISK_MK_PACKAGES=(
	# build: libext2fs headers, pkg-config, libclang for bindgen, a C compiler for the shim
	libext2fs-dev comerr-dev pkg-config libclang-dev gcc make
	# checking images with real tools
	e2fsprogs gdisk util-linux mount time
	# the command line as users meet it: a pseudo-terminal (script), the man page rendered
	# (groff), the JSON of the examples (jq)
	bsdutils groff-base jq
	# filesystems that share extents, for the clone tests (loop-mounted XFS with reflink, btrfs)
	xfsprogs btrfs-progs
	# building test trees: xattrs, ACLs, capabilities
	attr acl libcap2-bin
	# boot tests and the example appliance: qemu (TCG), a static busybox, initramfs tools
	qemu-system-x86 busybox-static cpio gzip kmod apt dpkg
	# the Debian trees of the full-distribution tests (tests/debian/tree.sh)
	debootstrap
	# --efi: UEFI firmware for qemu, FAT checkers, systemd-dissect
	ovmf dosfstools mtools systemd-container
	# container images: umoci unpacks the reference, skopeo writes docker-save archives
	umoci skopeo
	# checking the generated shell completions
	zsh fish
	# tar sources: the compressors the tests use, and python for crafting hostile archives
	tar xz-utils bzip2 zstd python3
	# NBD: reference server and clients
	nbdkit libnbd-bin python3-libnbd qemu-utils
)

ldk_missing() {
	local p
	for p in "${LINUXDISK_MK_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
	done
}

ldk_install_deps() {
	# Two passes: installing one package can remove another (Debian's qemu-system-x86 replaces a
	# backported qemu-utils), which the second pass puts back.
	local pass
	for pass in 1 2; do
		ldk_install_pass || return 1
	done
}

ldk_install_pass() {
	local missing=()
	mapfile -t missing < <(ldk_missing)
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || { echo "deps.sh: need root to install: ${missing[*]}" >&2; return 1; }
		sudo=(sudo)
	fi
	echo "deps.sh: installing ${missing[*]}" >&2
	[ -n "${LDK_APT_UPDATED:-}" ] || "${sudo[@]}" apt-get update -qq
	LDK_APT_UPDATED=1
	# --no-install-recommends: recommends drag in packages that conflict with backported qemu-utils.
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	ldk_install_deps
fi
