//! Cloning file data: where SOURCE and OUTPUT's temp file (or TMPDIR, when serving) are on one
//! filesystem that can share extents — loop-mounted XFS made with `-m reflink=1`, and btrfs — the
//! image is byte-identical to one built on ext4 (SOURCE_DATE_EPOCH makes identifiers
//! reproducible), e2fsck finds it clean, `-v` reports the bytes cloned, FIEMAP (`filefrag -v`)
//! shows exactly those bytes as shared extents, and a later write to a source file does not
//! change the image. Offsets that cannot be aligned (1 KiB blocks) fall back to copying.
//!
//! Root only (loop mounts); never skips.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::entries::Rng;
use crate::common::nbd::require_tools;
use crate::common::*;

const EPOCH: &str = "1700000000";
const BLOCK: u64 = 4096;

/// A filesystem of `kind` (ext4, xfs with reflink, btrfs) made in a sparse file and mounted
/// with `-o loop` (the loop device goes with the unmount); unmounted when dropped.
struct HostFs {
    mounted: bool,
    mnt: tempfile::TempDir,
    _backing: tempfile::TempDir,
}

impl HostFs {
    fn new(kind: &'static str) -> HostFs {
        let backing = tempdir();
        let img = backing.path().join(format!("{kind}.fs"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let img_s = img.to_str().unwrap();
        match kind {
            "xfs" => tool_ok("mkfs.xfs", ["-q", "-m", "reflink=1", img_s]),
            "btrfs" => tool_ok("mkfs.btrfs", ["-q", img_s]),
            "ext4" => tool_ok("mkfs.ext4", ["-q", "-F", img_s]),
            _ => unreachable!("{kind}"),
        };
        let mnt = tempfile::Builder::new()
            .prefix(&format!("ldmk-{kind}-"))
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut fs = HostFs {
            mounted: false,
            mnt,
            _backing: backing,
        };
        let mut last = String::new();
        // A free loop device can be taken by a parallel test between lookup and use: retry.
        for attempt in 0..10 {
            let t = tool(
                "mount",
                [
                    OsStr::new("-t"),
                    OsStr::new(kind),
                    OsStr::new("-o"),
                    OsStr::new("loop"),
                    img.as_os_str(),
                    fs.mnt.path().as_os_str(),
                ],
            );
            if t.code == Some(0) {
                fs.mounted = true;
                return fs;
            }
            last = t.out;
            std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
        }
        panic!("mount -t {kind} -o loop {img_s}: {last}");
    }

    fn path(&self) -> &Path {
        self.mnt.path()
    }
}

impl Drop for HostFs {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        for _ in 0..20 {
            if tool("umount", [self.mnt.path()]).code == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = tool("umount", [OsStr::new("-l"), self.mnt.path().as_os_str()]);
    }
}

/// A regular file of the test tree: name, size, and (offset, length) of what is written (the
/// rest is a hole).
type FileSpec = (&'static str, u64, &'static [(u64, u64)]);

/// The test tree's regular files. Data ranges start on block boundaries, so every whole block can
/// be cloned.
const FILES: &[FileSpec] = &[
    ("big", (8 << 20) + 123, &[(0, (8 << 20) + 123)]),
    ("aligned", 256 << 10, &[(0, 256 << 10)]),
    ("small", 100, &[(0, 100)]),
    ("empty", 0, &[]),
    ("sub/sparse", 3 << 20, &[(0, 10_000), (2 << 20, 5000)]),
    ("sub/one-block-and-a-byte", BLOCK + 1, &[(0, BLOCK + 1)]),
];

/// Writes the test tree into `root` (the same bytes every time), with a hard link and a
/// symlink, and syncs it.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let mut rng = Rng::new(12);
    for (name, size, parts) in FILES {
        let f = std::fs::File::create(root.join(name)).unwrap();
        f.set_len(*size).unwrap();
        for &(at, len) in *parts {
            f.write_all_at(&rng.bytes(len as usize), at).unwrap();
        }
        f.sync_all().unwrap();
    }
    std::fs::hard_link(root.join("aligned"), root.join("sub/aligned-link")).unwrap();
    std::os::unix::fs::symlink("../big", root.join("sub/big-link")).unwrap();
    tool_ok("sync", [root]);
}

/// (bytes that can be cloned, bytes left to copy) for the tree with `block`-byte filesystem
/// blocks: each data range's whole blocks, and its partial tail (a hole's neighbour is whole
/// blocks of data up to the next block boundary, as SEEK_HOLE reports it).
fn expected_split(block: u64) -> (u64, u64) {
    let (mut whole, mut tail) = (0, 0);
    for (_, size, parts) in FILES {
        for &(at, len) in *parts {
            let end = (at + len).next_multiple_of(block).min(*size);
            let n = end - at;
            whole += n / block * block;
            tail += n % block;
        }
    }
    (whole, tail)
}

/// The three counts of the `-v` line "file data: A bytes cloned, B copied in kernel, C copied".
fn data_line(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("linuxdisk-mk: file data: "))
        .unwrap_or_else(|| panic!("no 'file data:' line in -v output:\n{stderr}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 3, "{line}");
    (n[0], n[1], n[2])
}

/// Builds `src` into `out` with SOURCE_DATE_EPOCH and -v (plus `extra`); the `-v` counts.
fn build(src: &Path, out: &Path, extra: &[&str]) -> (u64, u64, u64) {
    let mut cmd = Command::new(BIN);
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    let mut args: Vec<&OsStr> = ["-v", "-t", "ext4"].iter().map(OsStr::new).collect();
    args.extend(extra.iter().map(OsStr::new));
    args.extend([src.as_os_str(), out.as_os_str()]);
    let run = run_cmd_timeout(cmd, args, Duration::from_secs(300));
    run.assert_ok();
    data_line(&run.stderr)
}

/// Panics unless the two files hold the same bytes (naming the first difference).
fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at byte {i}", a.display(), b.display());
    }
}

/// Bytes of `file` in extents FIEMAP flags as shared (`filefrag -v`).
fn shared_bytes(file: &Path) -> u64 {
    let out = tool_ok("filefrag", [OsStr::new("-v"), file.as_os_str()]);
    let unit: u64 = out
        .split_once(" blocks of ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block size in filefrag -v output:\n{out}"));
    let mut blocks = 0;
    for line in out.lines() {
        let cols: Vec<&str> = line.split(':').collect();
        // "  N:  logical..range:  physical..range:  length:  [expected]:  flags"
        if cols.len() >= 5 && cols[0].trim().parse::<u64>().is_ok() {
            let flags = cols.last().unwrap();
            if flags.split(',').any(|f| f.trim() == "shared") {
                blocks += cols[3].trim().parse::<u64>().unwrap();
            }
        }
    }
    blocks * unit
}

/// An ext4 reference: the tree built on a loop-mounted ext4 (where nothing can be cloned), with
/// `extra` options. Returns the image's path (in `dir`) and the filesystem (keep it mounted).
fn reference(dir: &Path, extra: &[&str]) -> (PathBuf, HostFs) {
    let ext4 = HostFs::new("ext4");
    make_tree(&ext4.path().join("src"));
    let img = dir.join("reference.img");
    let (cloned, in_kernel, copied) = build(&ext4.path().join("src"), &img, extra);
    assert_eq!(cloned, 0, "ext4 cannot share extents");
    let (whole, tail) = expected_split(BLOCK);
    assert_eq!(cloned + in_kernel + copied, whole + tail);
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    (img, ext4)
}

/// On `kind`: the image is the reference's bytes, clean, its whole blocks cloned (as -v says and
/// FIEMAP shows), only the tails copied.
fn cloned_on(kind: &'static str) {
    let dir = tempdir();
    let (want, _ext4) = reference(dir.path(), &[]);
    let fs = HostFs::new(kind);
    let src = fs.path().join("src");
    make_tree(&src);
    let img = fs.path().join("out.img");
    let (cloned, in_kernel, copied) = build(&src, &img, &[]);
    let (whole, tail) = expected_split(BLOCK);
    assert_eq!(
        (cloned, in_kernel, copied),
        (whole, tail, 0),
        "on {kind}: -v counts (cloned, copied in kernel, copied)"
    );
    assert_same_bytes(&img, &want);
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    assert_eq!(
        shared_bytes(&img),
        whole,
        "on {kind}: the image's shared extents are the cloned bytes"
    );
}

#[test]
fn on_xfs_file_data_is_cloned_and_the_image_is_the_one_built_on_ext4() {
    cloned_on("xfs");
}

#[test]
fn on_btrfs_file_data_is_cloned_and_the_image_is_the_one_built_on_ext4() {
    cloned_on("btrfs");
}

#[test]
fn a_later_write_to_a_cloned_source_file_leaves_the_image_unchanged() {
    let dir = tempdir();
    for kind in ["xfs", "btrfs"] {
        let fs = HostFs::new(kind);
        let src = fs.path().join("src");
        make_tree(&src);
        let img = fs.path().join("out.img");
        assert!(build(&src, &img, &[]).0 > 0, "on {kind}: nothing cloned");
        let before = dir.path().join(format!("{kind}-before.img"));
        std::fs::copy(&img, &before).unwrap();
        // Overwrite shared blocks of two files in place, and append to one.
        for (name, at) in [("big", 4096u64), ("aligned", 0), ("sub/sparse", 2 << 20)] {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(src.join(name))
                .unwrap();
            f.write_all_at(&[0xA5; 64 << 10], at).unwrap();
            f.sync_all().unwrap();
        }
        tool_ok("sync", [fs.path()]);
        assert_same_bytes(&img, &before);
        with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    }
}

#[test]
fn a_served_snapshot_in_tmpdir_on_xfs_is_cloned() {
    require_tools(&["nbdcopy"]);
    let dir = tempdir();
    let (want, _ext4) = reference(dir.path(), &[]);
    let fs = HostFs::new("xfs");
    let src = fs.path().join("src");
    make_tree(&src);
    let tmp = fs.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let copy = dir.path().join("served.img");
    let mut cmd = Command::new(BIN);
    cmd.env("SOURCE_DATE_EPOCH", EPOCH).env("TMPDIR", &tmp);
    let run_cmd = format!("nbdcopy \"$uri\" '{}'", copy.display());
    let run = run_cmd_timeout(
        cmd,
        [
            OsStr::new("--serve"),
            OsStr::new("-v"),
            OsStr::new("-t"),
            OsStr::new("ext4"),
            src.as_os_str(),
            OsStr::new("--run"),
            OsStr::new(&run_cmd),
        ],
        Duration::from_secs(300),
    );
    run.assert_ok();
    let (whole, tail) = expected_split(BLOCK);
    assert_eq!(
        data_line(&run.stderr),
        (whole, tail, 0),
        "{}",
        run.describe()
    );
    assert_same_bytes(&copy, &want);
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "temp files left in TMPDIR"
    );
}

#[test]
fn blocks_not_aligned_to_the_hosts_fall_back_to_copying() {
    let dir = tempdir();
    let opts = ["--block-size", "1024"];
    let (want, _ext4) = reference(dir.path(), &opts);
    let fs = HostFs::new("xfs");
    let src = fs.path().join("src");
    make_tree(&src);
    let img = fs.path().join("out.img");
    let (cloned, in_kernel, copied) = build(&src, &img, &opts);
    let (whole, tail) = expected_split(BLOCK);
    assert_eq!(cloned + in_kernel + copied, whole + tail);
    assert!(
        in_kernel > tail,
        "with 1 KiB blocks some whole 4 KiB blocks cannot be aligned: {cloned} cloned, \
         {in_kernel} copied in kernel"
    );
    assert_eq!(cloned % BLOCK, 0);
    assert_same_bytes(&img, &want);
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
}
