//! Limits of the filesystem types, found before anything is written: option values no
//! filesystem of the type can take (inode counts past 32 bits or past what --size holds, sizes
//! beyond what the type addresses, (uid_t)-1 as an owner, nil GUIDs, ...; refused before SOURCE
//! is even opened), files too large for the type and block size, more names for one file than
//! its link count holds, a /lost+found that is not a directory. Each is one clear line naming
//! the limit, exit 1 (2 for a value wrong in itself), and no output. Times outside what the
//! inodes store are clamped to it, as the kernel stores them, with a warning naming the file.

use std::path::Path;

use crate::common::opens::Watch;
use crate::common::*;

fn fails_cleanly(args: &[&str], mentions: &[&str]) {
    let dir = tempdir();
    let out = dir.path().join("out.img");
    let mut a: Vec<&str> = args.to_vec();
    a.push(out.to_str().unwrap());
    run_bin(&a).assert_one_line_error(mentions);
    assert!(
        dir_names(dir.path()).is_empty(),
        "left behind: {:?}",
        dir_names(dir.path())
    );
}

/// Builds `src` as ext4 into `dir`/ok.img, which e2fsck must find clean; returns its path.
fn builds_clean_as_ext4(src: &Path, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("ok.img");
    build_image(&["-q", "-t", "ext4"], src, &out);
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
    out
}

#[test]
fn file_larger_than_the_type_holds_is_refused_before_writing() {
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    tool_ok("truncate", ["-s", "5T", src.join("huge").to_str().unwrap()]);
    fails_cleanly(
        &["-t", "ext2", "--block-size", "1024", src.to_str().unwrap()],
        &["huge", "ext2"],
    );
    // ext4's extents hold it: a 5 TiB sparse file is a few blocks of image.
    let out = builds_clean_as_ext4(&src, dir.path());
    assert!(allocated(&out) < 64 * MIB, "the hole was written");
}

#[test]
fn size_beyond_what_the_type_addresses_is_refused() {
    let (_dir, src) = temp_source(build_small_tree);
    fails_cleanly(
        &["-t", "ext3", "--size", "20T", src.to_str().unwrap()],
        &["20T", "ext3"],
    );
}

#[test]
fn lost_found_that_is_not_a_directory_is_refused() {
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("lost+found"), b"not a dir").unwrap();
    fails_cleanly(&[src.to_str().unwrap()], &["lost+found"]);
}

#[test]
fn sixty_six_thousand_subdirectories_need_dir_nlink() {
    let dir = tempdir();
    // On a tmpfs: 66,000 directories are quick to make and to remove there (on a disk mounted
    // with `discard`, freeing their blocks took minutes).
    let tmpfs = TmpfsMount::new("64M,nr_inodes=70000");
    let src = tmpfs.path().join("src");
    let d = src.join("d");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..66_000 {
        std::fs::create_dir(d.join(format!("s{i:05}"))).unwrap();
    }
    for fstype in ["ext2", "ext3"] {
        fails_cleanly(
            &["-t", fstype, src.to_str().unwrap()],
            &["/d", "subdirectories", "ext4"],
        );
    }
    let out = builds_clean_as_ext4(&src, dir.path());
    let m = mount_image(&out, PART_OFFSET);
    assert_eq!(
        std::fs::read_dir(m.path().join("d")).unwrap().count(),
        66_000
    );
}

/// Every numeric (and identifier) option given a value past the filesystem's limits: refused
/// with one line naming the option and the limit, exit `code`, nothing written — and, for the
/// checks that need no tree, SOURCE never opened (a 1 TiB image took a minute to write).
#[test]
fn option_values_past_the_filesystem_s_limits_are_refused_before_the_scan() {
    let dir = tempdir();
    let src = dir.path().join("src");
    build_small_tree(&src);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let nil = "00000000-0000-0000-0000-000000000000";
    let cases: &[(&[&str], i32, &[&str])] = &[
        (&["-N", "4294967296"], 1, &["-N 4294967296", "4294967295"]),
        (
            &["-N", "99999999999999999999"],
            2,
            &["99999999999999999999"],
        ),
        (
            &["-N", "4294967295", "--size", "10M"],
            1,
            &["-N 4294967295", "10M"],
        ),
        (&["-t", "ext3", "--size", "+20T"], 1, &["+20T", "ext3"]),
        (
            &["-t", "ext4", "-O", "^64bit", "--size", "17T"],
            1,
            &["17T", "without 64bit"],
        ),
        (&["--size", "16384P"], 2, &["too large"]),
        (&["--owner", "4294967295:0"], 2, &["(uid_t)-1"]),
        (&["--owner", "0:4294967296"], 2, &["4294967296"]),
        (&["-m", "50.5"], 2, &["50"]),
        (&["-m", "NaN"], 2, &["50"]),
        (&["-I", "8192"], 2, &["4096"]),
        (&["-I", "2048", "--block-size", "1024"], 2, &["1024"]),
        (&["-L", "seventeen-bytes-x"], 2, &["16"]),
        (&["--part-label", &"x".repeat(37)], 2, &["36"]),
        (&["--uuid", nil], 2, &["nil"]),
        (&["--disk-guid", nil], 2, &["nil"]),
        (&["--part-guid", nil], 2, &["nil"]),
        (&["--part-type", nil], 2, &["unused"]),
    ];
    for (opts, code, mentions) in cases {
        let watch = Watch::opens(&src);
        let mut args: Vec<&std::ffi::OsStr> = opts.iter().map(|o| o.as_ref()).collect();
        let img = out.join("disk.img");
        args.extend([src.as_os_str(), img.as_os_str()]);
        let run = run_bin(&args);
        assert_eq!(run.code(), Some(*code), "{opts:?}\n{}", run.describe());
        for m in *mentions {
            assert!(
                run.stderr.contains(m),
                "{opts:?}: no {m:?}\n{}",
                run.describe()
            );
        }
        if *code == 1 {
            run.assert_one_line_error(mentions);
        }
        assert!(
            !watch.opened(),
            "{opts:?}: SOURCE was opened\n{}",
            run.describe()
        );
        assert!(
            dir_names(&out).is_empty(),
            "{opts:?}: {:?}",
            dir_names(&out)
        );
    }
}

/// Sets `path`'s modification time to `sec` (and its access time).
fn set_mtime(path: &Path, sec: i64) {
    entries::set_entry_times(path, (sec, 0), (sec, 0));
}

/// Builds `src` (with `opts`), mounts the image and returns the mtime the kernel reads of
/// `name`, and the warning lines.
fn stored_mtime(src: &Path, opts: &[&str], name: &str) -> (i64, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let dir = tempdir();
    let out = dir.path().join("disk.img");
    let mut args: Vec<&str> = opts.to_vec();
    args.extend([src.to_str().unwrap(), out.to_str().unwrap()]);
    let run = run_bin(&args);
    run.assert_ok();
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
    let m = mount_image(&out, PART_OFFSET);
    let mtime = std::fs::metadata(m.path().join(name)).unwrap().mtime();
    let warnings = run
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .map(str::to_owned)
        .collect();
    (mtime, warnings)
}

#[test]
fn times_outside_what_the_inodes_store_are_clamped_with_a_warning() {
    // tmpfs keeps 64-bit times: a file from the year 3000, and one from 2100.
    let tmp = TmpfsMount::new("16M");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("far-future"), b"x").unwrap();
    set_mtime(&src.join("far-future"), 32_503_680_000);
    set_mtime(&src, 1_700_000_000);
    // 256-byte inodes end in 2446 (2^34 - 2^31 - 1 s); wrapped round, the year 3000 became 1911.
    let (mtime, warnings) = stored_mtime(&src, &["-t", "ext4"], "far-future");
    assert_eq!(mtime, (1 << 34) - (1 << 31) - 1);
    assert!(
        warnings.len() == 1
            && warnings[0].contains("far-future")
            && warnings[0].contains("2446")
            && warnings[0].contains("3000"),
        "{warnings:?}"
    );
    // 128-byte inodes end in 2038; 256-byte ones hold 2100.
    std::fs::remove_file(src.join("far-future")).unwrap();
    std::fs::write(src.join("after-2038"), b"x").unwrap();
    set_mtime(&src.join("after-2038"), 4_102_444_800);
    set_mtime(&src, 1_700_000_000);
    let (mtime, warnings) = stored_mtime(&src, &["-I", "128"], "after-2038");
    assert_eq!(mtime, i32::MAX as i64);
    assert!(
        warnings.len() == 1 && warnings[0].contains("after-2038") && warnings[0].contains("2038"),
        "{warnings:?}"
    );
    let (mtime, warnings) = stored_mtime(&src, &[], "after-2038");
    assert_eq!((mtime, warnings.len()), (4_102_444_800, 0), "{warnings:?}");
}

#[test]
fn more_names_for_one_file_than_its_link_count_holds_are_refused() {
    // tmpfs allows any number of links: 65,536 names wrap a 16-bit link count to 0.
    let tmp = TmpfsMount::new("64M");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"one file").unwrap();
    for i in 1..65_536 {
        std::fs::hard_link(src.join("d/f"), src.join(format!("d/l{i:05}"))).unwrap();
    }
    fails_cleanly(
        &["-t", "ext4", src.to_str().unwrap()],
        &["/d/", "65535 names"],
    );
    // One name fewer fits.
    std::fs::remove_file(src.join("d/l00001")).unwrap();
    builds_clean_as_ext4(&src, tempdir().path());
}
