//! Boot tests: the seed's busybox appliance, made into a disk by linuxdisk-mk, boots Debian's
//! kernel under qemu (TCG) with the image as a virtio disk and partition 1 as root; and the example
//! Makefile's recipe (examples/Makefile) builds and checks a root disk.
//!
//! tests/boot/prepare.sh provides the kernel and a small initramfs (cached in
//! /var/tmp/linuxdisk-mk-boot-cache, or `$LINUXDISK_MK_BOOT_CACHE`); examples/appliance/make-root.sh
//! makes the appliance, whose init prints `linuxdisk-mk appliance: booted` and powers off when the
//! kernel command line holds `ldk.poweroff`. A boot passes when that marker reaches the serial
//! console. A control test boots an image made by sgdisk + mke2fs -d (tests/boot/reference-image.sh),
//! so a broken boot chain and a broken image tell themselves apart.
//!
//! These tests run as root (CI does) and never skip: without root they panic with a clear message.

use std::path::Path;
use std::process::Command;

use crate::common::boot::{appliance, assert_boots, boot_kit, repo, run_ok, APPEND};
use crate::common::BIN;

/// Boots `img` (raw, partition 1 = root, opened with snapshot=on so it is not changed).
fn boot_image(img: &Path, work: &Path, what: &str) {
    let kit = boot_kit();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-machine",
        "accel=tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(&kit.kernel)
    .arg("-initrd")
    .arg(&kit.initrd)
    .arg("-drive")
    .arg(format!(
        "file={},format=raw,if=virtio,snapshot=on",
        img.display()
    ))
    .args(["-append", APPEND]);
    assert_boots(qemu, &work.join("console.log"), what);
}

/// Builds the appliance into a disk with linuxdisk-mk `-t fstype` and boots it.
fn boot_appliance(fstype: &str) {
    let (work, root) = appliance(fstype);
    let img = work.path().join("root.img");
    run_ok(
        Command::new(BIN)
            .args(["-t", fstype, "-L", "root"])
            .arg(&root)
            .arg(&img),
    );
    assert!(img.is_file(), "linuxdisk-mk wrote no {}", img.display());
    boot_image(&img, work.path(), &format!("linuxdisk-mk-{fstype}"));
}

#[test]
fn boots_busybox_appliance_from_image() {
    boot_appliance("ext4");
}

#[test]
fn boots_busybox_appliance_from_ext2_image() {
    boot_appliance("ext2");
}

#[test]
fn boots_busybox_appliance_from_ext3_image() {
    boot_appliance("ext3");
}

/// Control: the same appliance in a disk made by sgdisk + mke2fs -d boots with the same kernel,
/// initramfs and qemu command. If this fails, the boot chain is broken, not linuxdisk-mk.
#[test]
fn boot_chain_boots_mke2fs_reference_image() {
    let (work, root) = appliance("reference");
    let img = work.path().join("ref.img");
    run_ok(
        Command::new(repo().join("tests/boot/reference-image.sh"))
            .arg(&root)
            .arg(&img)
            .arg("ext4"),
    );
    boot_image(&img, work.path(), "mke2fs-reference");
}

/// examples/Makefile, as a user runs it: tree, image, then `check` (sgdisk -v, e2fsck -fn).
#[test]
fn example_makefile_builds_root_disk() {
    crate::common::require_root();
    let work = crate::common::tempdir();
    let root = work.path().join("root");
    let img = work.path().join("root.img");
    let out = run_ok(
        Command::new("make")
            .arg("-C")
            .arg(repo().join("examples"))
            .arg(format!("LINUXDISK_MK={BIN}"))
            .arg(format!("ROOT={}", root.display()))
            .arg(format!("IMG={}", img.display()))
            .arg("root")
            .arg(&img)
            .arg("check"),
    );
    assert!(img.is_file(), "make wrote no {}:\n{out}", img.display());
    assert!(
        root.join("sbin/busybox").is_file(),
        "make built no appliance tree:\n{out}"
    );
    assert!(
        out.contains("No problems found"),
        "sgdisk -v output missing:\n{out}"
    );
}
