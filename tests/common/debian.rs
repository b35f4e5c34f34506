//! The Debian bookworm tree that the boot tests share (tests/boot_debian.rs, tests/efi_boot.rs,
//! tests/examples.rs): made by tests/debian/tree.sh with one package list, so that one cached
//! tree (in /var/tmp/linuxdisk-mk-debian, debootstrapped the first time) serves them all, and
//! the kernel and initrd in its /boot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::boot::{repo, run_ok};
use super::require_root;

/// The packages of the tree: a system that boots (systemd, udev, a kernel, systemd-boot for
/// `--efi`) and the programs its checks use (ping with its file capability, getcap/setcap).
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "linux-image-amd64",
    "systemd-boot",
    "iputils-ping",
    "libcap2-bin",
];

/// The cached tree (made by tests/debian/tree.sh when missing; once per test process).
pub fn debian_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        require_root();
        let out = run_ok(Command::new(repo().join("tests/debian/tree.sh")).args(PACKAGES));
        let p = PathBuf::from(out.trim());
        assert!(
            p.join("etc/debian_version").is_file(),
            "tree.sh printed {out:?}"
        );
        p
    })
}

/// The file of the tree's /boot whose name starts with `prefix` (`vmlinuz-`, `initrd.img-`).
fn boot_file(prefix: &str) -> PathBuf {
    let boot = debian_tree().join("boot");
    std::fs::read_dir(&boot)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", boot.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", boot.display()))
}

/// The tree's kernel.
pub fn kernel() -> PathBuf {
    boot_file("vmlinuz-")
}

/// The tree's initrd.
pub fn initrd() -> PathBuf {
    boot_file("initrd.img-")
}
