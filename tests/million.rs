//! A tree of 1,000,000 entries (1,000 directories of 999 files, on a tmpfs so that making it is
//! quick): the build succeeds with peak RSS under 256 MiB (measured with GNU time and printed),
//! e2fsck finds the filesystem clean, and the kernel sees every entry.
//!
//! Root only (tmpfs and loop mounts); never skips.

use std::process::Command;

use crate::common::*;

const DIRS: usize = 1000;
const FILES: usize = 999;

#[test]
fn a_million_entries_build_in_bounded_memory() {
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
    let rss_file = tmp.path().join("rss");
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
    eprintln!("{entries} entries: peak RSS {} MiB", rss_kib >> 10);
    assert!(
        rss_kib < 256 << 10,
        "peak RSS {} MiB for {entries} entries (bound 256 MiB)\n{}",
        rss_kib >> 10,
        run.describe()
    );
    assert!(
        run.stderr.contains(&format!("{entries} entries")),
        "{}",
        run.describe()
    );
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let m = mount_image(&img, PART_OFFSET);
    let listed = tool_ok("find", [m.path().to_str().unwrap(), "-mindepth", "1"]);
    // Every entry plus lost+found.
    assert_eq!(listed.lines().count(), entries + 1);
    let linked = std::fs::metadata(m.path().join("d123/f499")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(linked.nlink(), 2);
    assert_eq!(std::fs::read(m.path().join("d999/f900")).unwrap(), b"x");
}
