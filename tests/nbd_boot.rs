//! Boot over NBD, the example at the top of the seed's manual: the busybox appliance
//! (examples/appliance/make-root.sh) served by `linuxdisk-mk --serve -t ext4 ROOT --run 'qemu ...
//! -drive file=nbd:unix:$unixsocket,snapshot=on,...'` boots Debian's kernel under qemu (TCG) with
//! partition 1 of the served disk as root. It passes when the appliance's marker reaches the serial
//! console (captured to a file) within 240 s, without ext4 errors, and linuxdisk-mk exits with
//! qemu's status once the appliance powers off.
//!
//! A control boots the image file written by linuxdisk-mk through `nbdkit file` with the same qemu
//! command, so a broken NBD boot chain and a broken server tell themselves apart. The kernel and
//! initramfs come from tests/boot/prepare.sh (as in tests/boot.rs). Root only; never skips.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::common::boot::{appliance, assert_boots, run_ok, APPEND};
use crate::common::nbd::{require_tools, server_bin};

/// The seed's qemu command, with the kernel and initramfs of prepare.sh.
fn qemu() -> String {
    format!(
        "qemu-system-x86_64 -machine accel=tcg -m 512 -nographic -no-reboot \
         -kernel \"$KERNEL\" -initrd \"$INITRD\" \
         -drive file=nbd:unix:$unixsocket,snapshot=on,if=virtio,format=raw \
         -append '{APPEND}'"
    )
}

/// Boots the served disk: `prog args...` is a server whose `--run` starts qemu.
fn boot_served(prog: &Path, args: &[&OsStr], work: &Path, what: &str) {
    require_tools(&["qemu-system-x86_64", "nbdkit"]);
    let mut cmd = Command::new(prog);
    cmd.args(args);
    assert_boots(cmd, &work.join("console.log"), what);
}

#[test]
fn boots_busybox_appliance_served_over_nbd() {
    let (work, root) = appliance("serve");
    let qemu = qemu();
    boot_served(
        &server_bin(),
        &[
            "--serve".as_ref(),
            "-t".as_ref(),
            "ext4".as_ref(),
            root.as_os_str(),
            "--run".as_ref(),
            qemu.as_ref(),
        ],
        work.path(),
        "nbd-serve-ext4",
    );
}

/// Control: the image file linuxdisk-mk writes, served by `nbdkit file`, boots with the same
/// qemu command. If this fails, the NBD boot chain is broken, not the server.
#[test]
fn boot_chain_control_image_file_served_by_nbdkit() {
    let (work, root) = appliance("control");
    let img = work.path().join("root.img");
    run_ok(
        Command::new(crate::common::BIN)
            .args(["-t", "ext4", "-L", "root"])
            .arg(&root)
            .arg(&img),
    );
    let file = format!("file={}", img.display());
    let qemu = qemu();
    boot_served(
        Path::new("nbdkit"),
        &[
            "-U".as_ref(),
            "-".as_ref(),
            "-r".as_ref(),
            "file".as_ref(),
            file.as_ref(),
            "--run".as_ref(),
            qemu.as_ref(),
        ],
        work.path(),
        "nbdkit-file-control",
    );
}
