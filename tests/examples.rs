//! The man page's EXAMPLES, pasted as a user would: taken from the page as groff renders it and
//! run by bash, with `linuxdisk-mk` on PATH, in a private mount namespace (so that /tmp, /mnt and
//! /boot are the test's own). /boot holds the kernel and initramfs of a Debian bookworm tree
//! (tests/common/debian.rs, with linux-image-amd64) under the names the examples use
//! (`vmlinuz-$(uname -r)`), standing for the running Debian kernel. Checked: the images (sgdisk,
//! e2fsck, dumpe2fs), the dry run and its JSON (jq), the served disks (nbdinfo, nbdcopy), the
//! kernel mount, and the busybox appliance booting under qemu (TCG) from the image and served
//! over NBD, to busybox's "Please press Enter to activate this console."

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::debian;
use crate::common::nbd::require_tools;
use crate::common::*;

/// What busybox's init prints on the console once the appliance is up (no inittab: askfirst).
const UP: &str = "Please press Enter to activate this console.";
/// A boot under TCG takes 20-60 s here; this only bounds a hung one.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);

/// The code blocks of the man page's EXAMPLES section, as rendered (one string per block).
fn man_examples() -> Vec<String> {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/man/linuxdisk-mk.1");
    let text = tool_ok(
        "groff",
        ["-man", "-Tutf8", "-P-cbou", "-rLL=300n", "-ww", page],
    );
    let mut blocks = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let section = text
        .lines()
        .skip_while(|l| *l != "EXAMPLES")
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.is_empty());
    for l in section {
        // Prose is indented by 7 columns, code (.RS) by 14.
        match l.strip_prefix("              ") {
            Some(code) => cur.push(code),
            None if !cur.is_empty() => blocks.push(std::mem::take(&mut cur).join("\n")),
            None => {}
        }
    }
    if !cur.is_empty() {
        blocks.push(cur.join("\n"));
    }
    assert!(
        blocks.len() >= 6,
        "EXAMPLES has too few blocks: {blocks:#?}"
    );
    blocks
}

/// The one block that contains `needle`.
fn example(needle: &str) -> String {
    let all = man_examples();
    let found: Vec<&String> = all.iter().filter(|b| b.contains(needle)).collect();
    assert_eq!(found.len(), 1, "blocks with {needle:?}: {all:#?}");
    found[0].clone()
}

/// A directory with `bin/linuxdisk-mk` and `boot/` (the kernel and initramfs as the running
/// kernel's), where examples run.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempdir();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // The binary is bind-mounted here in the example's namespace (see `start`): a symlink
        // would dangle once /tmp is covered, when the build directory is under /tmp or /mnt.
        std::fs::File::create(bin.join("linuxdisk-mk")).unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Puts a Debian kernel and its initramfs in boot/ under the running kernel's release.
    fn with_debian_kernel(self) -> Sandbox {
        let release = tool_ok("uname", ["-r"]).trim().to_string();
        for (from, name) in [
            (debian::kernel(), "vmlinuz-"),
            (debian::initrd(), "initrd.img-"),
        ] {
            std::fs::copy(&from, self.path().join(format!("boot/{name}{release}"))).unwrap();
        }
        self
    }

    /// Starts `script` under bash in a private mount namespace, in this directory, its output in
    /// `log`, in a process group of its own.
    fn start(&self, script: &str, log: &Path) -> Child {
        use std::os::unix::process::CommandExt;
        let setup = "set -euo pipefail\n\
             mount --bind \"$LDK_BIN\" bin/linuxdisk-mk\n\
             mount --bind boot /boot\n\
             mount -t tmpfs tmpfs /tmp\n\
             mount -t tmpfs tmpfs /mnt\n\
             export TMPDIR=/tmp PATH=\"$PWD/bin:$PATH\"\n";
        let out = File::create(log).unwrap();
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c"])
            .arg(format!("{setup}{script}"))
            .current_dir(self.path())
            .env("LDK_BIN", BIN)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("unshare")
    }

    /// Runs `script` (see [`Sandbox::start`]) to the end; its output.
    fn run(&self, script: &str) -> String {
        let log = self.path().join("log");
        let mut child = self.start(script, &log);
        let status = wait_timeout(&mut child, Duration::from_secs(300)).expect("the example hangs");
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "{script}\nfailed: {status}\n{out}");
        out
    }
}

/// Kills a process group when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }
}

/// Runs `script` until the appliance is up on the console in `log`; fails on a kernel panic,
/// ext4 errors, an early end or the timeout.
fn assert_appliance_boots(sandbox: &Sandbox, script: &str, what: &str) {
    let log = sandbox.path().join(format!("{what}.console"));
    let mut g = Group(sandbox.start(script, &log));
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail = || text.lines().rev().take(40).collect::<Vec<_>>().join("\n");
        if text.contains(UP) {
            assert!(
                !text.contains("EXT4-fs error"),
                "{what}: ext4 errors\n{text}"
            );
            return;
        }
        assert!(
            !text.contains("Kernel panic"),
            "{what}: kernel panic\n{}",
            tail()
        );
        if let Some(st) = g.0.try_wait().unwrap() {
            panic!(
                "{what}: ended ({st}) before the appliance was up\n{}",
                tail()
            );
        }
        assert!(
            start.elapsed() < BOOT_TIMEOUT,
            "{what}: not up after {BOOT_TIMEOUT:?}\n{}",
            tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn man_page_build_examples_work() {
    require_tools(&["nbdinfo", "nbdcopy", "jq", "groff", "sgdisk"]);
    let sandbox = Sandbox::new();
    build_small_tree(&sandbox.path().join("rootfs"));
    let img = sandbox.path().join("root.img");

    sandbox.run(&example("-L root rootfs/ root.img"));
    let info = with_fs_device(&img, PART_OFFSET, |dev| {
        assert_e2fsck_clean(dev);
        FsInfo::read(dev)
    });
    check_gpt(&img);
    assert_eq!(
        (
            info.label(),
            info.get("Filesystem features").contains("extent")
        ),
        ("root", true)
    );
    std::fs::remove_file(&img).unwrap();

    sandbox.run(&example("--size +1G rootfs/ root.img"));
    let info = with_fs_device(&img, PART_OFFSET, FsInfo::read);
    assert!(
        info.free_bytes() >= 1 << 30,
        "--size +1G: {} free",
        info.free_bytes()
    );

    // The dry run: it is an error that root.img exists; without it, nothing is written.
    std::fs::remove_file(&img).unwrap();
    let out = sandbox.run(&example("-n --json"));
    let size: u64 = out
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("jq .disk_size printed no number:\n{out}"));
    assert!(size > 2 * MIB && !img.exists(), "{out}");

    // Serving: on the socket until stopped; and saved with nbdcopy.
    let serve = example("--serve --cow --socket");
    let (socket_line, copy_line) = serve.split_once('\n').unwrap();
    let out = sandbox.run(&format!(
        "{socket_line} & server=$!\n\
         for i in $(seq 600); do [ -S /tmp/disk.sock ] && break; sleep 0.1; done\n\
         nbdinfo --size 'nbd+unix:///?socket=/tmp/disk.sock'\n\
         kill -TERM $server; wait $server\n\
         {copy_line}\n\
         sgdisk -v disk.img"
    ));
    assert!(out.contains("No problems found"), "{out}");
    let saved = sandbox.path().join("disk.img");
    with_fs_device(&saved, PART_OFFSET, assert_e2fsck_clean);

    // The kernel mount.
    std::fs::rename(&saved, &img).unwrap();
    let mount = example("losetup");
    let out = sandbox.run(&format!(
        "{mount}\nls /mnt\numount /mnt\nlosetup -d \"$dev\""
    ));
    assert!(
        out.contains("hello.txt"),
        "the mounted image lacks the tree's files:\n{out}"
    );
}

#[test]
fn man_page_appliance_example_boots_from_the_image() {
    require_tools(&["qemu-system-x86_64", "groff"]);
    let sandbox = Sandbox::new().with_debian_kernel();
    assert_appliance_boots(&sandbox, &example("mknod root/dev/console"), "man-image");
}

#[test]
fn man_page_served_appliance_example_boots() {
    require_tools(&["qemu-system-x86_64", "groff"]);
    let sandbox = Sandbox::new().with_debian_kernel();
    // The tree as the previous example makes it (its commands up to the build).
    let make = example("mknod root/dev/console");
    let tree: Vec<&str> = make
        .lines()
        .take_while(|l| !l.starts_with("linuxdisk-mk"))
        .collect();
    let script = format!(
        "{}\n{}",
        tree.join("\n"),
        example("--serve -t ext4 root --run")
    );
    assert_appliance_boots(&sandbox, &script, "man-served");
}
