//! `--efi` boots: the Debian tree of tests/debian/tree.sh (systemd, systemd-boot, a kernel),
//! seen through an overlay that adds a check unit, becomes an `--efi` disk that OVMF boots under
//! qemu TCG with no -kernel — from a file and served over NBD with `--serve --efi` — to
//! multi-user.target with no failed unit; the guest's own vfat driver compares the ESP's kernel,
//! initrd and loader with the root filesystem's. The cached tree stays untouched.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::boot::{boot_until_verdict, ovmf_qemu_args, repo, run_ok};
use crate::common::*;

/// The packages of the Debian tree that boots (the same list as the other Debian boot tests,
/// so that one cached tree serves them all).
const DEBIAN_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "linux-image-amd64",
    "systemd-boot",
    "iputils-ping",
    "libcap2-bin",
];
/// What the check unit prints on the console once the system has finished starting.
const VERDICT: &str = "LDK-EFI-CHECK";

/// The cached Debian tree (made by tests/debian/tree.sh when missing).
fn debian_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        require_root();
        let out = run_ok(Command::new(repo().join("tests/debian/tree.sh")).args(DEBIAN_PACKAGES));
        let p = PathBuf::from(out.trim());
        assert!(
            p.join("etc/debian_version").is_file(),
            "tree.sh printed {out:?}"
        );
        p
    })
}

/// The Debian tree seen through an overlay whose upper layer adds a unit that, once the system
/// has finished starting, prints the system state and the failed units on the console and
/// powers off; the cached tree stays untouched. Unmounted on drop.
struct CheckedTree {
    merged: PathBuf,
}

impl CheckedTree {
    fn new(work: &Path) -> CheckedTree {
        let lower = debian_tree();
        let (upper, ovl, merged) = (
            work.join("upper"),
            work.join("ovl-work"),
            work.join("merged"),
        );
        let units = upper.join("etc/systemd/system");
        fs::create_dir_all(units.join("multi-user.target.wants")).unwrap();
        for d in [&ovl, &merged] {
            fs::create_dir_all(d).unwrap();
        }
        let script = upper.join("usr/local/sbin/ldk-check");
        fs::create_dir_all(script.parent().unwrap()).unwrap();
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nsystemctl is-system-running --wait >/dev/null\n\
                 state=$(systemctl is-system-running)\n\
                 failed=$(systemctl --failed --no-legend --plain | tr '\\n' ' ')\n\
                 v=$(uname -r)\nesp=differs\n\
                 if mount -t vfat -o ro /dev/vda1 /mnt; then\n\
                 cmp -s /mnt/debian/$v/linux /boot/vmlinuz-$v \
                 && cmp -s /mnt/debian/$v/initrd /boot/initrd.img-$v \
                 && cmp -s /mnt/EFI/BOOT/BOOTX64.EFI /usr/lib/systemd/boot/efi/systemd-bootx64.efi \
                 && esp=same\numount /mnt\nfi\n\
                 echo \"{VERDICT} state=$state failed=[$failed] esp=$esp\" >/dev/console\n\
                 systemctl poweroff\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(
            units.join("ldk-check.service"),
            "[Unit]\nDescription=linuxdisk-mk boot check\nAfter=multi-user.target\n\n\
             [Service]\nType=simple\nExecStart=/usr/local/sbin/ldk-check\n\n\
             [Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        symlink(
            "../ldk-check.service",
            units.join("multi-user.target.wants/ldk-check.service"),
        )
        .unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            ovl.display()
        );
        tool_ok(
            "mount",
            [
                OsStr::new("-t"),
                OsStr::new("overlay"),
                OsStr::new("overlay"),
                OsStr::new("-o"),
                OsStr::new(&opts),
                merged.as_os_str(),
            ],
        );
        CheckedTree { merged }
    }
}

impl Drop for CheckedTree {
    fn drop(&mut self) {
        let _ = tool("umount", [self.merged.as_os_str()]);
    }
}

/// The build options of the Debian disk: free space for the journal, the serial console.
const DEBIAN_BUILD: &[&str] = &[
    "-t",
    "ext4",
    "-L",
    "root",
    "--efi",
    "--size",
    "+256M",
    "--cmdline",
    "console=ttyS0",
];

/// Asserts the verdict line says the system is running with no failed unit.
fn assert_no_failed_unit(verdict: &str) {
    assert_eq!(
        verdict.trim_end(),
        format!("{VERDICT} state=running failed=[] esp=same"),
        "the system did not come up clean, or the guest's kernel read other bytes in the ESP \
         (esp=differs) than in the root filesystem"
    );
}

#[test]
fn debian_efi_disk_boots_under_ovmf_to_multi_user_with_no_failed_unit() {
    let dir = tempdir();
    let tree = CheckedTree::new(dir.path());
    let img = dir.path().join("debian.img");
    let started = Instant::now();
    let mut args: Vec<&OsStr> = DEBIAN_BUILD.iter().map(OsStr::new).collect();
    args.extend([tree.merged.as_os_str(), img.as_os_str()]);
    run_bin_timeout(args, Duration::from_secs(1200)).assert_ok();
    eprintln!("debian --efi disk built in {:.1?}", started.elapsed());
    drop(tree);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(ovmf_qemu_args(
        dir.path(),
        &format!("file={},format=raw,if=virtio,snapshot=on", img.display()),
    ));
    let boot = boot_until_verdict(
        qemu,
        &dir.path().join("console.log"),
        "debian-efi-file",
        VERDICT,
    );
    eprintln!(
        "debian --efi disk under OVMF (TCG): login prompt after {:.1?}, multi-user with the \
         check's verdict after {:.1?}",
        boot.login_after, boot.verdict_after
    );
    assert_no_failed_unit(&boot.verdict);
}

#[test]
fn served_debian_efi_disk_boots_under_ovmf() {
    let dir = tempdir();
    let tree = CheckedTree::new(dir.path());
    let qemu = ovmf_qemu_args(
        dir.path(),
        "file=nbd:unix:$unixsocket,format=raw,if=virtio,snapshot=on",
    );
    let run = format!(
        "exec qemu-system-x86_64 {}",
        qemu.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut server = Command::new(BIN);
    server
        .arg("--serve")
        .args(DEBIAN_BUILD)
        .args(["-q", "--run", &run])
        .arg(&tree.merged);
    let boot = boot_until_verdict(
        server,
        &dir.path().join("console.log"),
        "debian-efi-nbd",
        VERDICT,
    );
    assert_no_failed_unit(&boot.verdict);
}
