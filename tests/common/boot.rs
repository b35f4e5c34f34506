//! Booting the seed's busybox appliance under qemu (TCG), shared by tests/boot.rs (image files)
//! and tests/nbd_boot.rs (served disks): the kernel and initramfs from tests/boot/prepare.sh
//! (cached in /var/tmp/linuxdisk-mk-boot-cache, or `$LINUXDISK_MK_BOOT_CACHE`), the appliance
//! tree from examples/appliance/make-root.sh, and one watcher ([`watch_console`]) that runs a
//! command whose output is the serial console until a marker appears and the guest powers off
//! (tests/boot_debian.rs watches its own marker with it). For disks that boot on their own
//! (tests/efi_boot.rs): qemu's arguments for UEFI firmware (OVMF) and a watcher that waits for
//! the guest's verdict line.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

/// What the appliance's /etc/init.d/rcS prints once it is up.
pub const MARKER: &str = "linuxdisk-mk appliance: booted";
/// What rcS prints when `busybox --install -s` fails (no free inodes or blocks).
const INSTALL_FAILED: &str = "rcS: busybox --install -s failed";
/// A boot under TCG takes ~10-20 s here; this only bounds a hung guest (or server).
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the appliance may take to power off (and everything to exit) after the marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);
/// Console lines shown when a boot fails.
const TAIL_LINES: usize = 60;
/// The kernel command line: partition 1 of the first virtio disk as root; power off when up.
pub const APPEND: &str = "console=ttyS0 root=/dev/vda1 rw panic=-1 ldk.poweroff";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
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

/// The kernel and initramfs that boot an image.
pub struct BootKit {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Runs prepare.sh once per test process (it locks its cache against other processes).
pub fn boot_kit() -> &'static BootKit {
    static KIT: OnceLock<BootKit> = OnceLock::new();
    KIT.get_or_init(|| {
        let mut cmd = Command::new(repo().join("tests/boot/prepare.sh"));
        if let Some(cache) = std::env::var_os("LINUXDISK_MK_BOOT_CACHE") {
            cmd.arg(cache);
        }
        let out = run_ok(&mut cmd);
        let field = |key: &str| -> PathBuf {
            let p = out
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("prepare.sh printed no {key} line:\n{out}"));
            assert!(p.is_file(), "prepare.sh: no file at {}", p.display());
            p
        };
        BootKit {
            kernel: field("KERNEL="),
            initrd: field("INITRD="),
        }
    })
}

/// A scratch directory under target/tmp (removed when dropped) holding the appliance tree at
/// `root`, made by examples/appliance/make-root.sh.
pub fn appliance(name: &str) -> (tempfile::TempDir, PathBuf) {
    super::require_root();
    boot_kit();
    let work = tempfile::Builder::new()
        .prefix(&format!("boot-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create scratch directory");
    let root = work.path().join("root");
    run_ok(Command::new(repo().join("examples/appliance/make-root.sh")).arg(&root));
    assert!(
        root.join("sbin/init").is_file(),
        "make-root.sh made no sbin/init"
    );
    (work, root)
}

/// A process in a group of its own (qemu, or a server whose `--run` starts qemu), killed as a
/// group if still running when dropped.
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

/// How a run watched on its console ended.
pub struct Console {
    /// Everything it printed.
    pub text: String,
    /// When the marker appeared.
    pub marker_at: Option<Duration>,
    /// Its exit status, or why it was killed.
    pub ended: Result<std::process::ExitStatus, String>,
}

/// Runs `cmd` in a process group of its own with its output (the serial console) in `log`,
/// until it exits; killed if `marker` has not appeared after `boot_timeout`, or `grace` after
/// it did.
pub fn watch_console(
    mut cmd: Command,
    log: &Path,
    marker: &str,
    boot_timeout: Duration,
    grace: Duration,
) -> Console {
    let console = File::create(log).expect("create console log");
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let mut g = Group(
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().expect("clone console log"))
            .stderr(console)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}")),
    );
    let read_log = || String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let mut marker_at = None;
    let ended = loop {
        std::thread::sleep(Duration::from_millis(250));
        if marker_at.is_none() && read_log().contains(marker) {
            marker_at = Some(start.elapsed());
        }
        if let Some(st) = g.0.try_wait().expect("wait for the boot") {
            break Ok(st);
        }
        let limit = marker_at.map_or(boot_timeout, |t| t + grace);
        if start.elapsed() > limit {
            drop(g);
            break Err(format!(
                "killed after {:.1?} (still running)",
                start.elapsed()
            ));
        }
    };
    Console {
        text: read_log(),
        marker_at,
        ended,
    }
}

/// The last [`TAIL_LINES`] lines of a console, for failure messages.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `cmd` with KERNEL and INITRD in its environment and its output (the serial console) in
/// `log`, until it exits or the timeouts pass; asserts the appliance came up cleanly (marker, no
/// ext4 errors, busybox installed) and `cmd` exited 0. `what` names the boot in messages.
pub fn assert_boots(mut cmd: Command, log: &Path, what: &str) {
    let kit = boot_kit();
    let shown = format!("{cmd:?}");
    cmd.env("KERNEL", &kit.kernel).env("INITRD", &kit.initrd);
    let Console {
        text,
        marker_at,
        ended,
    } = watch_console(cmd, log, MARKER, BOOT_TIMEOUT, POWEROFF_GRACE);
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
            "it exited with {st} (after the appliance powers off it should be 0)"
        )),
        Err(e) => problems.push(e.clone()),
        Ok(_) => {}
    }
    if !problems.is_empty() {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}.console.log"));
        let _ = fs::copy(log, &kept);
        let tail = tail(&text);
        panic!(
            "booting {what} failed: {}\ncommand: {shown}\nfull console log: {}\n--- last \
             {TAIL_LINES} console lines ---\n{tail}",
            problems.join("; "),
            kept.display()
        );
    }
    eprintln!("{what}: marker after {marker_at:.1?}; {ended:?}");
}

/// OVMF (Debian package ovmf): the firmware, mapped read-only, and the variable store template.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// Firmware, boot loader, kernel and systemd under TCG take one to three minutes here; this only
/// bounds a guest (or server) that is stuck.
const UEFI_BOOT_TIMEOUT: Duration = Duration::from_secs(1200);

/// qemu-system-x86_64's arguments to boot `drive` (a -drive value) through OVMF under TCG, with
/// no -kernel: q35, 1 GiB, the serial console on stdout, a private copy of the variable store
/// in `work`, and exit instead of rebooting.
pub fn ovmf_qemu_args(work: &Path, drive: &str) -> Vec<String> {
    let vars = work.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars).unwrap_or_else(|e| panic!("copy {OVMF_VARS} (package ovmf): {e}"));
    [
        "-machine",
        "q35,accel=tcg",
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
        "-drive",
        &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive",
        &format!("if=pflash,format=raw,file={}", vars.display()),
        "-drive",
        drive,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What a UEFI boot showed on its console.
pub struct UefiBoot {
    /// The first console line starting with the verdict prefix.
    pub verdict: String,
    /// When the first login prompt and the verdict appeared (from the command's start).
    pub login_after: Option<Duration>,
    pub verdict_after: Duration,
}

/// Runs `cmd` (qemu, or a server whose --run starts qemu) with its output (the serial console)
/// in `log` until a line starting with `verdict` appears and `cmd` exits 0 (the guest powers
/// off), or [`UEFI_BOOT_TIMEOUT`] passes; panics with the console's tail otherwise.
pub fn boot_until_verdict(mut cmd: Command, log: &Path, what: &str, verdict: &str) -> UefiBoot {
    let console = File::create(log).expect("create console log");
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let mut g = Group(
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().expect("clone console log"))
            .stderr(console)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}")),
    );
    let read_log = || String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let find = |text: &str| {
        text.lines()
            .map(|l| l.trim_end_matches('\r'))
            .find_map(|l| l.find(verdict).map(|i| l[i..].to_string()))
    };
    let (mut login_after, mut verdict_at) = (None, None);
    let ended = loop {
        std::thread::sleep(Duration::from_millis(250));
        let text = read_log();
        if login_after.is_none() && text.contains(" login: ") {
            login_after = Some(start.elapsed());
        }
        if verdict_at.is_none() && find(&text).is_some() {
            verdict_at = Some(start.elapsed());
        }
        if let Some(st) = g.0.try_wait().expect("wait for the boot") {
            break Ok(st);
        }
        let limit = verdict_at.map_or(UEFI_BOOT_TIMEOUT, |t| t + POWEROFF_GRACE);
        if start.elapsed() > limit {
            drop(g);
            break Err(format!(
                "killed after {:.1?} (still running)",
                start.elapsed()
            ));
        }
    };
    let text = read_log();
    let problem = match (&ended, find(&text)) {
        (_, None) => Some(format!("no line starting with {verdict:?} appeared")),
        (Ok(st), Some(_)) if !st.success() => Some(format!("it exited with {st}")),
        (Err(e), Some(_)) => Some(e.clone()),
        _ => None,
    };
    if let Some(problem) = problem {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}.console.log"));
        let _ = fs::copy(log, &kept);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
        panic!(
            "booting {what} failed: {problem}\ncommand: {shown}\nfull console log: {}\n--- last \
             {TAIL_LINES} console lines ---\n{tail}",
            kept.display()
        );
    }
    let verdict_after = verdict_at.unwrap_or_else(|| start.elapsed());
    eprintln!("{what}: login prompt after {login_after:.1?}, verdict after {verdict_after:.1?}");
    UefiBoot {
        verdict: find(&text).expect("found above"),
        login_after,
        verdict_after,
    }
}
