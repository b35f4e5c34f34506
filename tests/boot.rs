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

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_linuxdisk-mk");
/// What the appliance's /etc/init.d/rcS prints once it is up.
const MARKER: &str = "linuxdisk-mk appliance: booted";
/// What rcS prints when `busybox --install -s` fails (typically: no free inodes or blocks).
const INSTALL_FAILED: &str = "rcS: busybox --install -s failed";
/// A boot under TCG takes ~10 s here; this only bounds a hung guest.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long to let the appliance power itself off after the marker before killing qemu.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
/// Console lines shown when a boot fails.
const TAIL_LINES: usize = 60;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Panics unless running as root: the appliance needs mknod, the Makefile's check needs losetup.
fn require_root() {
    if !rustix::process::geteuid().is_root() {
        panic!(
            "the boot tests must run as root (the appliance tree needs `mknod dev/console`, \
             prepare.sh may apt-get, and `make check` uses losetup); run `cargo test` as root"
        );
    }
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if !out.status.success() {
        panic!(
            "{shown} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kernel and initramfs that boot an image (from tests/boot/prepare.sh).
struct BootKit {
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Runs prepare.sh once per test process (it locks its cache against other processes).
fn boot_kit() -> &'static BootKit {
    static KIT: OnceLock<BootKit> = OnceLock::new();
    KIT.get_or_init(|| {
        let mut cmd = Command::new(repo().join("tests/boot/prepare.sh"));
        if let Some(cache) = std::env::var_os("LINUXDISK_MK_BOOT_CACHE") {
            cmd.arg(cache);
        }
        let out = run(&mut cmd);
        let field = |key: &str| -> PathBuf {
            out.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("prepare.sh printed no {key} line:\n{out}"))
        };
        let kit = BootKit {
            kernel: field("KERNEL="),
            initrd: field("INITRD="),
        };
        assert!(
            kit.kernel.is_file(),
            "no kernel at {}",
            kit.kernel.display()
        );
        assert!(
            kit.initrd.is_file(),
            "no initrd at {}",
            kit.initrd.display()
        );
        kit
    })
}

/// A scratch directory under target/tmp (removed when dropped).
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("boot-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create scratch directory")
}

/// Makes the seed's appliance tree at `dest` with examples/appliance/make-root.sh.
fn make_appliance(dest: &Path) {
    run(Command::new(repo().join("examples/appliance/make-root.sh")).arg(dest));
    assert!(
        dest.join("sbin/init").is_file(),
        "make-root.sh made no sbin/init"
    );
}

/// Kills qemu if a test panics while it runs.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How a boot ended.
struct Boot {
    console: String,
    marker_after: Option<Duration>,
    ended: String,
}

/// Boots `img` (raw, partition 1 = root, opened with snapshot=on so it is not changed) and
/// captures the serial console in `log` until the guest powers off or the timeout passes.
fn boot(img: &Path, log: &Path) -> Boot {
    let kit = boot_kit();
    let console = File::create(log).expect("create console log");
    let stderr = console.try_clone().expect("clone console log");
    let start = Instant::now();
    let mut qemu = Qemu(
        Command::new("qemu-system-x86_64")
            .args([
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
            .arg("-append")
            .arg("console=ttyS0 root=/dev/vda1 rw panic=-1 ldk.poweroff")
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(stderr)
            .spawn()
            .expect("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86)"),
    );
    let mut marker_after = None;
    let ended = loop {
        sleep(Duration::from_millis(250));
        if marker_after.is_none() && read_log(log).contains(MARKER) {
            marker_after = Some(start.elapsed());
        }
        if let Some(status) = qemu.0.try_wait().expect("wait for qemu") {
            break format!("qemu exited ({status}) after {:.1?}", start.elapsed());
        }
        let limit = match marker_after {
            Some(at) => at + POWEROFF_GRACE,
            None => BOOT_TIMEOUT,
        };
        if start.elapsed() > limit {
            drop(qemu);
            break format!("qemu killed after {:.1?} (still running)", start.elapsed());
        }
    };
    let console = read_log(log);
    if marker_after.is_none() && console.contains(MARKER) {
        marker_after = Some(start.elapsed());
    }
    Boot {
        console,
        marker_after,
        ended,
    }
}

fn read_log(log: &Path) -> String {
    String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned()
}

/// The last `n` lines of the console, without carriage returns.
fn tail(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Boots `img` and asserts the appliance came up cleanly; `what` names the image in messages.
fn assert_boots(img: &Path, work: &Path, what: &str) {
    let log = work.join("console.log");
    let b = boot(img, &log);
    let problems: Vec<&str> = [
        (
            b.marker_after.is_none(),
            "the appliance's marker never appeared",
        ),
        (
            b.console.contains("EXT4-fs error"),
            "the kernel reported ext4 errors on the root filesystem",
        ),
        (
            b.console.contains(INSTALL_FAILED),
            "`busybox --install -s` failed on the root filesystem (no free inodes or blocks?)",
        ),
    ]
    .into_iter()
    .filter_map(|(bad, msg)| bad.then_some(msg))
    .collect();
    if !problems.is_empty() {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("boot-{what}.console.log"));
        let _ = fs::copy(&log, &kept);
        panic!(
            "booting {what} failed: {}; {}\nfull console log: {}\n--- last {TAIL_LINES} console \
             lines ---\n{}",
            problems.join("; "),
            b.ended,
            kept.display(),
            tail(&b.console, TAIL_LINES)
        );
    }
    eprintln!(
        "{what}: marker after {:.1?}; {}",
        b.marker_after.unwrap_or_default(),
        b.ended
    );
}

/// Builds the appliance into a disk with linuxdisk-mk `-t fstype` and boots it.
fn boot_appliance(fstype: &str) {
    require_root();
    boot_kit();
    let work = scratch(fstype);
    let root = work.path().join("root");
    let img = work.path().join("root.img");
    make_appliance(&root);
    run(Command::new(BIN)
        .args(["-t", fstype, "-L", "root"])
        .arg(&root)
        .arg(&img));
    assert!(img.is_file(), "linuxdisk-mk wrote no {}", img.display());
    assert_boots(&img, work.path(), &format!("linuxdisk-mk-{fstype}"));
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
    require_root();
    boot_kit();
    let work = scratch("reference");
    let root = work.path().join("root");
    let img = work.path().join("ref.img");
    make_appliance(&root);
    run(Command::new(repo().join("tests/boot/reference-image.sh"))
        .arg(&root)
        .arg(&img)
        .arg("ext4"));
    assert_boots(&img, work.path(), "mke2fs-reference");
}

/// examples/Makefile, as a user runs it: tree, image, then `check` (sgdisk -v, e2fsck -fn).
#[test]
fn example_makefile_builds_root_disk() {
    require_root();
    let work = scratch("makefile");
    let root = work.path().join("root");
    let img = work.path().join("root.img");
    let out = run(Command::new("make")
        .arg("-C")
        .arg(repo().join("examples"))
        .arg(format!("LINUXDISK_MK={BIN}"))
        .arg(format!("ROOT={}", root.display()))
        .arg(format!("IMG={}", img.display()))
        .arg("root")
        .arg(&img)
        .arg("check"));
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
