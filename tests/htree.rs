//! Large directories get an htree index, built as `e2fsck -D` builds one: 30,000 entries in the
//! root directory (4 KiB blocks, one index level) and 100,000 in a subdirectory (1 KiB blocks,
//! so dx_nodes under the root), each with `-t ext4` (metadata_csum) and `-t ext3`. Each image
//! is `e2fsck -fn` clean; debugfs shows the index and the Indexed flag; `e2fsck -fyD` on a copy
//! leaves the directory byte for byte as it was (nothing to rehash) and the copy clean; the
//! kernel finds every name (the 30,000-entry tree is compared with the source entry by entry)
//! and no name that is not there.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::common::entries::{mkdir, set_times, symlink, write};
use crate::common::*;

/// The big sources are made on a tmpfs: quick to fill and to empty (on a disk mounted with
/// `discard`, removing 100,000 files takes longer than building their images).
const SOURCE_TMPFS: &str = "256M,nr_inodes=120000";

/// The name of entry `i`: mostly 7 to 29 bytes, every 50th up to 255, some with UTF-8 or raw
/// high bytes (which hash differently with signed and unsigned chars).
fn name(i: usize) -> Vec<u8> {
    let mut n = format!("f{i:06}").into_bytes();
    let extra = if i % 50 == 0 { (i * 37) % 249 } else { i % 23 };
    for k in 0..extra {
        n.push(b"abcdefghijklmnopqrstuvwxyz0123456789-_."[(i + k) % 39]);
    }
    if i % 97 == 0 {
        n.extend_from_slice("-caf\u{e9}".as_bytes());
    }
    if i % 101 == 0 {
        n.push(0xff);
    }
    n.truncate(255);
    n
}

/// `n` entries in `dir` (relative to `root`): mostly empty files, every 500th a small file, a
/// symlink or a subdirectory holding one file.
fn big_dir(root: &Path, dir: &[u8], n: usize) {
    if !dir.is_empty() {
        mkdir(root, dir);
    }
    for i in 0..n {
        let mut rel = dir.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name(i));
        match i % 500 {
            1 => write(root, &rel, format!("data of {i}\n").as_bytes()),
            2 => symlink(root, &rel, b"../elsewhere"),
            3 => {
                mkdir(root, &rel);
                rel.extend_from_slice(b"/inner");
                write(root, &rel, b"inner");
            }
            _ => write(root, &rel, b""),
        }
    }
}

fn debugfs(img: &Path, request: &str) -> String {
    tool_ok(
        "debugfs",
        [OsStr::new("-R"), OsStr::new(request), img.as_os_str()],
    )
}

/// The directory's raw blocks, as debugfs reads them.
fn dump(img: &Path, dir: &str, out: &Path) -> Vec<u8> {
    debugfs(img, &format!("dump {dir} {}", out.display()));
    std::fs::read(out).expect("read the dumped directory")
}

/// Builds `src` as a bare filesystem with `args`, then checks directory `dir` (whose entries are
/// `name(0..n)`) is indexed with `levels` levels of dx_nodes below the root. Up to 30,000
/// entries the whole mounted tree is compared with the source; beyond (slow in a debug build),
/// the directory's names as the kernel lists them, each also looked up.
fn check_indexed(fstype: &str, args: &[&str], src: &Path, dir: &str, n: usize, levels: u32) {
    let full = n <= 30_000;
    let tmp = tempdir();
    let img = tmp.path().join("fs.img");
    let mut a = vec!["-q", "-t", fstype, "--partition", "none"];
    a.extend_from_slice(args);
    a.extend([src.to_str().unwrap(), img.to_str().unwrap()]);
    let start = std::time::Instant::now();
    run_bin(&a).assert_ok();
    eprintln!(
        "{fstype} {args:?}: {n} entries built in {:?}",
        start.elapsed()
    );
    assert_e2fsck_clean(&img);

    let dump_out = debugfs(&img, &format!("htree_dump {dir}"));
    assert!(
        dump_out.contains("Root node dump:"),
        "{dir} has no index: {}",
        &dump_out[..dump_out.len().min(2000)]
    );
    assert!(
        dump_out.contains(&format!("Indirect levels: {levels}")),
        "{dir} should have {levels} index levels below the root:\n{}",
        &dump_out[..dump_out.len().min(2000)]
    );
    let stat = debugfs(&img, &format!("stat {dir}"));
    let flags = stat
        .split("Flags: 0x")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no Flags in debugfs stat:\n{stat}"));
    assert_ne!(flags & 0x1000, 0, "{dir} lacks EXT2_INDEX_FL: {stat}");

    // e2fsck -D rebuilds every directory; ours must come out exactly as it went in.
    let before = dump(&img, dir, &tmp.path().join("before"));
    let blocks_before = debugfs(&img, &format!("blocks {dir}"));
    let copy = tmp.path().join("copy.img");
    tool_ok(
        "cp",
        [
            OsStr::new("--sparse=always"),
            img.as_os_str(),
            copy.as_os_str(),
        ],
    );
    let t = tool("e2fsck", [OsStr::new("-fyD"), copy.as_os_str()]);
    assert!(matches!(t.code, Some(0 | 1)), "e2fsck -fyD: {}", t.out);
    assert_e2fsck_clean(&copy);
    let after = dump(&copy, dir, &tmp.path().join("after"));
    assert_eq!(before.len(), after.len(), "e2fsck -D resized {dir}");
    assert!(
        before == after,
        "e2fsck -D rewrote {dir}'s blocks differently"
    );
    assert_eq!(blocks_before, debugfs(&copy, &format!("blocks {dir}")));

    // The kernel walks the index: every name is found, absent ones are not.
    let m = mount_image(&img, 0);
    let kdir = m.path().join(dir.trim_start_matches('/'));
    for i in 0..n {
        let p = kdir.join(OsStr::from_bytes(&name(i)));
        std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lookup {p:?}: {e}"));
    }
    for absent in ["f999999", "not-there", "f000001x"] {
        assert!(std::fs::symlink_metadata(kdir.join(absent)).is_err());
    }
    let attrs = tool_ok("lsattr", [OsStr::new("-d"), kdir.as_os_str()]);
    assert!(
        attrs.split_whitespace().next().unwrap_or("").contains('I'),
        "{attrs}"
    );
    if full {
        assert_no_diffs(&compare_trees(src, m.path()), "indexed directory");
    } else {
        let sdir = src.join(dir.trim_start_matches('/'));
        assert!(dir_names(&sdir) == dir_names(&kdir), "{dir}: names differ");
    }
}

#[test]
fn root_with_30000_entries_is_indexed_ext4_and_ext3() {
    let tmp = TmpfsMount::new(SOURCE_TMPFS);
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    big_dir(&src, b"", 30_000);
    set_times(&src);
    check_indexed("ext4", &[], &src, "/", 30_000, 0);
    check_indexed("ext3", &[], &src, "/", 30_000, 0);
}

#[test]
fn directory_of_100000_entries_at_1k_blocks_has_two_index_levels() {
    let tmp = TmpfsMount::new(SOURCE_TMPFS);
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write(&src, b"small", b"x");
    big_dir(&src, b"big", 100_000);
    for t in ["ext4", "ext3"] {
        check_indexed(t, &["--block-size", "1024"], &src, "/big", 100_000, 1);
    }
}

#[test]
fn small_directories_stay_linear() {
    let (tmp, src) = temp_source(|s| big_dir(s, b"few", 20));
    let img = tmp.path().join("fs.img");
    build_image(&["-q", "-t", "ext4", "--partition", "none"], &src, &img);
    assert_e2fsck_clean(&img);
    let stat = debugfs(&img, "stat /few");
    assert!(stat.contains("Flags: 0x80000"), "{stat}");
    assert!(debugfs(&img, "htree_dump /few").contains("Not a hash-indexed directory"));
}
