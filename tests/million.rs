//! Trees of 1,000,000 entries (on a tmpfs, so that making them is quick) build with a peak RSS
//! under 256 MiB (measured with GNU time and printed), e2fsck finds the filesystem clean, and the
//! kernel sees every entry: 1,000 directories of 999 files, and 1,000,000 files in one directory
//! (from the directory and from a tar of it), the case that holds the most at once (every child
//! of one directory, and its index).
//!
//! Root only (tmpfs and loop mounts); never skips. Each tree takes about a minute here.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The bound on peak RSS, in KiB.
const RSS_BOUND_KIB: u64 = 256 << 10;

/// Builds `src` into `img` with `-v -t ext4` under GNU time; checks success, the entry count
/// `-v` reports and peak RSS (printed) against the bound; then e2fsck.
fn build_in_bounded_memory(src: &Path, img: &Path, entries: usize, what: &str) {
    let rss_file = img.with_extension("rss");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%M", "-o"]).arg(&rss_file).arg(BIN);
    let run = run_cmd_timeout(
        cmd,
        [
            "-v",
            "-t",
            "ext4",
            src.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(1200),
    );
    run.assert_ok();
    let rss_kib: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time's %M");
    eprintln!("{what}: {entries} entries: peak RSS {} MiB", rss_kib >> 10);
    assert!(
        rss_kib < RSS_BOUND_KIB,
        "{what}: peak RSS {} MiB for {entries} entries (bound {} MiB)\n{}",
        rss_kib >> 10,
        RSS_BOUND_KIB >> 10,
        run.describe()
    );
    assert!(
        run.stderr.contains(&format!(" {entries} entries")),
        "{}",
        run.describe()
    );
    with_fs_device(img, PART_OFFSET, assert_e2fsck_clean);
}

#[test]
fn a_million_entries_build_in_bounded_memory() {
    const DIRS: usize = 1000;
    const FILES: usize = 999;
    require_root();
    let tmp = tempdir();
    let tmpfs = TmpfsMount::new("2G,nr_inodes=1100000");
    let src = tmpfs.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for d in 0..DIRS {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..FILES {
            let p = dir.join(format!("f{f:03}"));
            // Every 100th file has a byte of data; every 500th is a hard link to its neighbour.
            if f % 500 == 499 {
                std::fs::hard_link(dir.join(format!("f{:03}", f - 1)), &p).unwrap();
            } else {
                std::fs::write(&p, if f % 100 == 0 { &b"x"[..] } else { b"" }).unwrap();
            }
        }
    }
    let entries = DIRS * (FILES + 1);
    let img = tmp.path().join("million.img");
    build_in_bounded_memory(&src, &img, entries, "1,000 directories");
    let m = mount_image(&img, PART_OFFSET);
    let listed = tool_ok("find", [m.path().to_str().unwrap(), "-mindepth", "1"]);
    // Every entry plus lost+found.
    assert_eq!(listed.lines().count(), entries + 1);
    let linked = std::fs::metadata(m.path().join("d123/f499")).unwrap();
    assert_eq!(linked.nlink(), 2);
    assert_eq!(std::fs::read(m.path().join("d999/f900")).unwrap(), b"x");
}

#[test]
fn a_million_entries_in_one_directory_build_in_bounded_memory() {
    const FILES: usize = 1_000_000;
    require_root();
    let tmp = tempdir();
    let tmpfs = TmpfsMount::new("3G,nr_inodes=1100000");
    let src = tmpfs.path().join("src");
    let flat = src.join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    let name = |i: usize| format!("file-{i:07}");
    for i in 0..FILES {
        // Every 1000th file has a byte of data.
        std::fs::write(
            flat.join(name(i)),
            if i % 1000 == 0 { &b"x"[..] } else { b"" },
        )
        .unwrap();
    }
    let tar = tmpfs.path().join("flat.tar");
    tool_ok(
        "tar",
        [
            "-C",
            src.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    let entries = FILES + 1;
    for (what, from) in [("a directory", &src), ("a tar", &tar)] {
        let img = tmp.path().join("flat.img");
        build_in_bounded_memory(from, &img, entries, what);
        let m = mount_image(&img, PART_OFFSET);
        let mut listed: Vec<String> = std::fs::read_dir(m.path().join("flat"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort_unstable();
        assert_eq!(listed.len(), FILES, "{what}: entries the kernel lists");
        assert!(
            listed.iter().enumerate().all(|(i, n)| *n == name(i)),
            "{what}: the kernel lists other names"
        );
        assert_eq!(
            std::fs::read(m.path().join("flat").join(name(999_000))).unwrap(),
            b"x"
        );
        drop(m);
        std::fs::remove_file(&img).unwrap();
    }
}
