//! Filesystem sizing: `--size N` (exact total, K/M/G suffixes are powers of 1024, a bare number is
//! bytes), `--size +N` (at least N free once the files are in), a size too small (fails before
//! writing, saying the smallest size that builds), the automatic size (1% to 10% available to
//! ordinary users as df shows it, at least 16 MiB) and `-v` reporting the chosen size. Sizes are
//! read back with `dumpe2fs -h` and df (statvfs); every image must pass `e2fsck -fn`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::common::*;

/// A temp dir with `src` built by `make`, and where the image goes.
fn setup(make: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, src) = temp_source(make);
    let out = tmp.path().join("disk.img");
    (tmp, src, out)
}

fn build(extra: &[&str], src: &Path, out: &Path) -> Run {
    let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
    args.extend([src.as_os_str().to_owned(), out.as_os_str().to_owned()]);
    run_bin(&args)
}

/// e2fsck-clean filesystem info of partition 1.
fn fs_info(out: &Path) -> FsInfo {
    with_fs_device(out, PART_OFFSET, |dev| {
        assert_e2fsck_clean(dev);
        FsInfo::read(dev)
    })
}

#[test]
fn size_64m_makes_a_filesystem_of_exactly_64_mib() {
    let (_tmp, src, out) = setup(build_small_tree);
    build(&["-t", "ext4", "--size", "64M"], &src, &out).assert_ok();
    let info = fs_info(&out);
    assert_eq!(
        info.size_bytes(),
        64 * MIB,
        "block count × block size: {:?}",
        info.map
    );
    let g = check_gpt(&out);
    let part = (g.last_sector - g.first_sector + 1) * 512;
    assert!(
        part >= 64 * MIB,
        "partition ({part} bytes) smaller than the 64 MiB filesystem"
    );
}

#[test]
fn size_suffixes_are_powers_of_1024_and_a_bare_number_is_bytes() {
    let (tmp, src, _) = setup(build_small_tree);
    for (arg, want) in [
        ("67108864", 64 * MIB),
        ("65536K", 64 * MIB),
        ("64M", 64 * MIB),
        ("1G", 1024 * MIB),
    ] {
        let out = tmp.path().join(format!("disk-{arg}.img"));
        build(&["--size", arg], &src, &out).assert_ok();
        let info = fs_info(&out);
        assert_eq!(
            info.size_bytes(),
            want,
            "--size {arg}: filesystem is {} bytes",
            info.size_bytes()
        );
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn size_plus_100m_leaves_at_least_100_mib_free() {
    let (_tmp, src, out) = setup(|d| build_sized_tree(d, 60, 10 * MIB));
    build(&["-t", "ext4", "--size", "+100M"], &src, &out).assert_ok();
    let info = fs_info(&out);
    assert!(
        info.free_bytes() >= 100 * MIB,
        "--size +100M: only {} bytes free ({} of {} blocks)",
        info.free_bytes(),
        info.num("Free blocks"),
        info.num("Block count")
    );
    assert!(
        info.size_bytes() <= 2 * 110 * MIB,
        "--size +100M on a 10 MiB tree made a {}-byte filesystem (more than twice what is needed)",
        info.size_bytes()
    );
    assert_image_holds(&out, PART_OFFSET, &src, "--size +100M");
}

#[test]
fn size_too_small_fails_before_writing_and_says_how_much_is_needed() {
    let (tmp, src, out) = setup(|d| build_sized_tree(d, 40, 10 * MIB));
    let before = dir_names(tmp.path());
    let run = build(&["--size", "1M"], &src, &out);
    run.assert_one_line_error(&[]);
    assert!(
        !out.exists(),
        "an output file was left after the failure\n{}",
        run.describe()
    );
    assert_eq!(
        dir_names(tmp.path()),
        before,
        "files left beside OUTPUT\n{}",
        run.describe()
    );
    let sizes = sizes_in(&run.stderr);
    assert!(
        sizes.iter().any(|&s| s >= 10 * MIB),
        "the error does not say how much is needed (a size of at least 10 MiB)\n{}",
        run.describe()
    );
}

/// The size a "too small" error names, as typed for `--size` ("--size 163M").
fn advised_size(run: &Run) -> String {
    let (_, after) = run
        .stderr
        .split_once("at least --size ")
        .unwrap_or_else(|| panic!("no size advised\n{}", run.describe()));
    after.split_whitespace().next().unwrap().to_string()
}

/// A few big files: `--size` gives one inode per 16 KiB, far more than the tree's entries, so
/// the advice must count the inode tables that come with the size (it once named a size that
/// then failed with the same advice).
#[test]
fn size_too_small_names_the_smallest_size_that_builds() {
    let (tmp, src, _) = setup(|d| build_sized_tree(d, 30, 120 * MIB));
    for fstype in ["ext2", "ext4"] {
        let out = tmp.path().join(format!("{fstype}.img"));
        let run = build(&["-t", fstype, "--size", "64M"], &src, &out);
        run.assert_one_line_error(&["--size 64M", &src.display().to_string()]);
        let advised = advised_size(&run);
        build(&["-t", fstype, "--size", &advised], &src, &out).assert_ok();
        let info = fs_info(&out);
        let mib: u64 = advised.trim_end_matches('M').parse().unwrap();
        assert_eq!(info.size_bytes(), mib * MIB, "{fstype}: --size {advised}");
        let mnt = mount_image(&out, PART_OFFSET);
        assert_no_diffs(
            &compare_trees(&src, mnt.path()),
            &format!("{fstype} --size {advised}"),
        );
        drop(mnt);
        std::fs::remove_file(&out).unwrap();
        // One MiB less does not fit, and is told the same size.
        let less = format!("{}M", mib - 1);
        let run = build(&["-t", fstype, "--size", &less], &src, &out);
        run.assert_one_line_error(&[&less]);
        assert_eq!(advised_size(&run), advised, "{fstype}: --size {less}");
        assert!(!out.exists());
    }
}

/// The automatic size leaves ordinary users 1%..10% of the filesystem, as df shows it (statvfs:
/// available blocks over the filesystem's blocks), and never less than 16 MiB: on a tree of
/// `total` bytes in 300 files, for the `extra` options.
fn auto_size_leaves_users_1_to_10_percent_and_16_mib(extra: &[&str], total: u64) {
    let (_tmp, src, out) = setup(|d| build_sized_tree(d, 300, total));
    build(extra, &src, &out).assert_ok();
    let info = fs_info(&out);
    assert!(info.num("Free inodes") > 0, "no free inodes left");
    let mnt = mount_image(&out, PART_OFFSET);
    let st = rustix::fs::statvfs(mnt.path()).unwrap();
    let (avail, size) = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize);
    let pct = 100.0 * avail as f64 / size as f64;
    let shown = format!(
        "automatic size {extra:?}: df says {avail} of {size} bytes ({pct:.1}%) available\n{:#?}",
        info.map
    );
    assert!(avail >= 16 * MIB, "less than 16 MiB: {shown}");
    assert!(
        (1.0..=10.0).contains(&pct) || avail <= 17 * MIB,
        "not 1%..10% (nor the 16 MiB floor): {shown}"
    );
    assert_no_diffs(&compare_trees(&src, mnt.path()), "automatic size");
}

/// A small tree: the 16 MiB floor.
#[test]
fn auto_size_ext2_leaves_users_16_mib_of_a_small_tree() {
    auto_size_leaves_users_1_to_10_percent_and_16_mib(&[], 50 * MIB);
}

/// A large tree on ext4 (whose kernel keeps its own reserve, left out of df's "available"):
/// 1% to 10%.
#[test]
fn auto_size_ext4_leaves_users_1_to_10_percent_of_a_large_tree() {
    auto_size_leaves_users_1_to_10_percent_and_16_mib(&["-t", "ext4"], 600 * MIB);
}

#[test]
fn verbose_reports_the_chosen_size() {
    let (tmp, src, out) = setup(|d| build_sized_tree(d, 30, 5 * MIB));
    let run = build(&["-v"], &src, &out);
    run.assert_ok();
    let info = fs_info(&out);
    let said = format!("{}\n{}", run.stdout, run.stderr);
    let blocks = info.num("Block count");
    assert!(
        mentions_size(&said, info.size_bytes()) || said.contains(&format!("{blocks} blocks")),
        "-v does not state the chosen size ({} bytes = {blocks} blocks)\n{}",
        info.size_bytes(),
        run.describe()
    );
    // With an explicit size, -v states that one.
    let out2 = tmp.path().join("disk2.img");
    let run = build(&["-v", "--size", "64M"], &src, &out2);
    run.assert_ok();
    let said = format!("{}\n{}", run.stdout, run.stderr);
    assert!(
        mentions_size(&said, 64 * MIB),
        "-v --size 64M does not state 64 MiB\n{}",
        run.describe()
    );
}
