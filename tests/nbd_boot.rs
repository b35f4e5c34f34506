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

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::nbd::{require_tools, server_bin};

/// What the appliance's /etc/init.d/rcS prints once it is up.
const MARKER: &str = "linuxdisk-mk appliance: booted";
/// What rcS prints when `busybox --install -s` fails (no free inodes or blocks).
const INSTALL_FAILED: &str = "rcS: busybox --install -s failed";
/// A boot under TCG takes ~10-20 s here; this only bounds a hung guest or server.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the appliance may take to power off (and everything to exit) after the marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
const TAIL_LINES: usize = 60;

/// The seed's qemu command, with the kernel and initramfs of prepare.sh.
const QEMU: &str = "qemu-system-x86_64 -machine accel=tcg -m 512 -nographic -no-reboot \
    -kernel \"$KERNEL\" -initrd \"$INITRD\" \
    -drive file=nbd:unix:$unixsocket,snapshot=on,if=virtio,format=raw \
    -append 'console=ttyS0 root=/dev/vda1 rw panic=-1 ldk.poweroff'";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// KERNEL and INITRD from tests/boot/prepare.sh (run once per test process; it locks its cache).
fn boot_kit() -> &'static (PathBuf, PathBuf) {
    static KIT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KIT.get_or_init(|| {
        let mut cmd = Command::new(repo().join("tests/boot/prepare.sh"));
        if let Some(cache) = std::env::var_os("LINUXDISK_MK_BOOT_CACHE") {
            cmd.arg(cache);
        }
        let out = run(&mut cmd);
        let field = |key: &str| -> PathBuf {
            let p = out
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("prepare.sh printed no {key} line:\n{out}"));
            assert!(p.is_file(), "prepare.sh: no file at {}", p.display());
            p
        };
        (field("KERNEL="), field("INITRD="))
    })
}

/// A scratch directory with the appliance tree at `root`.
fn appliance(name: &str) -> (tempfile::TempDir, PathBuf) {
    require_tools(&["qemu-system-x86_64", "nbdkit"]);
    boot_kit();
    let work = tempfile::Builder::new()
        .prefix(&format!("nbd-boot-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create scratch directory");
    let root = work.path().join("root");
    run(Command::new(repo().join("examples/appliance/make-root.sh")).arg(&root));
    assert!(
        root.join("sbin/init").is_file(),
        "make-root.sh made no sbin/init"
    );
    (work, root)
}

/// The server (and qemu under it) in a process group of its own, killed as a group on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pgid = rustix::process::Pid::from_child(&self.0);
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            let _ = self.0.wait();
        }
    }
}

/// Runs `prog args` (a server whose `--run` starts qemu) with KERNEL/INITRD set, its output in
/// `log`, until it exits or the timeouts pass; asserts the appliance booted cleanly.
fn assert_boots(prog: &Path, args: &[&OsStr], log: &Path, what: &str) {
    let (kernel, initrd) = boot_kit();
    let console = File::create(log).expect("create console log");
    let start = Instant::now();
    let mut g = Group(
        Command::new(prog)
            .args(args)
            .env("KERNEL", kernel)
            .env("INITRD", initrd)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", prog.display())),
    );
    let read_log = || String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let mut marker_at = None;
    let ended = loop {
        std::thread::sleep(Duration::from_millis(250));
        if marker_at.is_none() && read_log().contains(MARKER) {
            marker_at = Some(start.elapsed());
        }
        if let Some(st) = g.0.try_wait().expect("wait for the server") {
            break Ok(st);
        }
        let limit = marker_at.map_or(BOOT_TIMEOUT, |t| t + POWEROFF_GRACE);
        if start.elapsed() > limit {
            drop(g);
            break Err(format!(
                "killed after {:.1?} (still running)",
                start.elapsed()
            ));
        }
    };
    let text = read_log();
    let mut problems = Vec::new();
    if !text.contains(MARKER) {
        problems.push("the appliance's marker never appeared".to_owned());
    }
    if text.contains("EXT4-fs error") {
        problems.push("the kernel reported ext4 errors on the root filesystem".to_owned());
    }
    if text.contains(INSTALL_FAILED) {
        problems.push("`busybox --install -s` failed on the root filesystem".to_owned());
    }
    match &ended {
        Ok(st) if !st.success() => problems.push(format!(
            "{} exited with {st} (qemu's status after the appliance powered off should be 0)",
            prog.display()
        )),
        Err(e) => problems.push(e.clone()),
        Ok(_) => {}
    }
    if !problems.is_empty() {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}.console.log"));
        let _ = fs::copy(log, &kept);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| l.trim_end_matches('\r'))
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "booting {what} failed: {}\ncommand: {} {args:?}\nfull console log: {}\n--- last \
             {TAIL_LINES} console lines ---\n{tail}",
            problems.join("; "),
            prog.display(),
            kept.display()
        );
    }
    eprintln!("{what}: marker after {marker_at:.1?}; {ended:?}");
}

#[test]
fn boots_busybox_appliance_served_over_nbd() {
    let (work, root) = appliance("serve");
    let log = work.path().join("console.log");
    assert_boots(
        &server_bin(),
        &[
            "--serve".as_ref(),
            "-t".as_ref(),
            "ext4".as_ref(),
            root.as_os_str(),
            "--run".as_ref(),
            QEMU.as_ref(),
        ],
        &log,
        "nbd-serve-ext4",
    );
}

/// Control: the image file linuxdisk-mk writes, served by `nbdkit file`, boots with the same
/// qemu command. If this fails, the NBD boot chain is broken, not the server.
#[test]
fn boot_chain_control_image_file_served_by_nbdkit() {
    let (work, root) = appliance("control");
    let img = work.path().join("root.img");
    run(Command::new(common::BIN)
        .args(["-t", "ext4", "-L", "root"])
        .arg(&root)
        .arg(&img));
    let log = work.path().join("console.log");
    let file = format!("file={}", img.display());
    assert_boots(
        Path::new("nbdkit"),
        &[
            "-U".as_ref(),
            "-".as_ref(),
            "-r".as_ref(),
            "file".as_ref(),
            file.as_ref(),
            "--run".as_ref(),
            QEMU.as_ref(),
        ],
        &log,
        "nbdkit-file-control",
    );
}
