//! RAII guards for kernel resources used by the tests: read-only loop devices (`losetup -r -o`),
//! read-only ext4 mounts of an image, and small tmpfs mounts. Dropping a guard unmounts / detaches,
//! also while unwinding from a failed assertion, so parallel tests do not leak loop devices.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{tool, tool_ok};

/// A read-only loop device over `img` starting at `offset`; detached on drop.
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn attach(img: &Path, offset: u64) -> LoopDev {
        super::require_root();
        let off = offset.to_string();
        let mut last = String::new();
        // `--find` can race with other tests taking the same free device: retry a few times.
        for attempt in 0..10 {
            let t = tool(
                "losetup",
                [
                    OsStr::new("-r"),
                    OsStr::new("-o"),
                    OsStr::new(&off),
                    OsStr::new("--find"),
                    OsStr::new("--show"),
                    img.as_os_str(),
                ],
            );
            if t.code == Some(0) {
                let dev = t.out.lines().next().unwrap_or("").trim().to_owned();
                assert!(dev.starts_with("/dev/loop"), "losetup printed {:?}", t.out);
                return LoopDev {
                    dev: PathBuf::from(dev),
                };
            }
            last = t.out;
            std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
        }
        panic!(
            "losetup -r -o {off} --find --show {} failed: {last}",
            img.display()
        );
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        for _ in 0..20 {
            let t = tool("losetup", [OsStr::new("-d"), self.dev.as_os_str()]);
            if t.code == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not detach {}", self.dev.display());
    }
}

/// An image's filesystem mounted read-only (ext4 driver, which reads ext2/3 too and, unlike the old
/// ext2 driver, understands nanosecond and post-2038 timestamps); unmounted and detached on drop.
pub struct Mounted {
    mounted: bool,
    // Field order matters for drop: unmount (in Drop::drop), then detach, then remove the dir.
    lo: Option<LoopDev>,
    dir: tempfile::TempDir,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Mounts the filesystem at byte `offset` of `img` read-only on a fresh temp dir.
pub fn mount_image(img: &Path, offset: u64) -> Mounted {
    let lo = LoopDev::attach(img, offset);
    let dir = tempfile::Builder::new()
        .prefix("ldmk-mnt-")
        .tempdir_in("/var/tmp")
        .expect("mount point");
    let mut m = Mounted {
        mounted: false,
        lo: Some(lo),
        dir,
    };
    let t = tool(
        "mount",
        [
            OsStr::new("-t"),
            OsStr::new("ext4"),
            OsStr::new("-o"),
            OsStr::new("ro"),
            m.lo.as_ref().unwrap().dev.as_os_str(),
            m.dir.path().as_os_str(),
        ],
    );
    assert_eq!(
        t.code,
        Some(0),
        "mount -t ext4 -o ro of {} at offset {offset} failed: {}\n(dmesg tail: {})",
        img.display(),
        t.out,
        dmesg_tail()
    );
    m.mounted = true;
    m
}

fn dmesg_tail() -> String {
    let t = tool("dmesg", ["--notime"]);
    let lines: Vec<&str> = t.out.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn unmount(dir: &Path) {
    for _ in 0..20 {
        if tool("umount", [dir.as_os_str()]).code == Some(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Last resort so the loop device can still be released once nothing uses it.
    let _ = tool("umount", [OsStr::new("-l"), dir.as_os_str()]);
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            unmount(self.dir.path());
        }
        drop(self.lo.take());
    }
}

/// A small tmpfs (e.g. to fill up the output directory); unmounted on drop.
pub struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    pub fn new(size: &str) -> TmpfsMount {
        super::require_root();
        let dir = tempfile::Builder::new()
            .prefix("ldmk-tmpfs-")
            .tempdir_in("/var/tmp")
            .expect("tmpfs mount point");
        tool_ok(
            "mount",
            [
                OsStr::new("-t"),
                OsStr::new("tmpfs"),
                OsStr::new("-o"),
                OsStr::new(&format!("size={size},mode=0755")),
                OsStr::new("tmpfs"),
                dir.path().as_os_str(),
            ],
        );
        TmpfsMount { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        unmount(self.dir.path());
    }
}

/// A mount made inside a test tree (a bind mount, or proc); unmounted on drop.
pub struct MountGuard {
    at: PathBuf,
}

impl MountGuard {
    /// `mount --bind from at` (a directory or a file).
    pub fn bind(from: &Path, at: &Path) -> MountGuard {
        super::require_root();
        tool_ok(
            "mount",
            [OsStr::new("--bind"), from.as_os_str(), at.as_os_str()],
        );
        MountGuard { at: at.to_owned() }
    }

    /// `mount -t proc proc at`.
    pub fn proc(at: &Path) -> MountGuard {
        super::require_root();
        tool_ok(
            "mount",
            [
                OsStr::new("-t"),
                OsStr::new("proc"),
                OsStr::new("proc"),
                at.as_os_str(),
            ],
        );
        MountGuard { at: at.to_owned() }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        unmount(&self.at);
    }
}
