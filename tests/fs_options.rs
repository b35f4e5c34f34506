//! mke2fs-style knobs, checked with dumpe2fs and e2fsck: -O feature edits, -N inode count,
//! -m reserved percentage, -I inode size.

use crate::common::*;

fn build(extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let a = dir.path().join("a");
    build_small_tree(&a);
    let img = dir.path().join("x.img");
    let mut args: Vec<&str> = vec!["-q"];
    args.extend_from_slice(extra);
    args.push(a.to_str().unwrap());
    args.push(img.to_str().unwrap());
    run_bin(args).assert_ok();
    (dir, img)
}

#[test]
fn feature_edits_reach_the_superblock() {
    let (dir, img) = build(&["-t", "ext4", "-O", "^metadata_csum,inline_data"]);
    with_fs_device(&img, PART_OFFSET, |dev| {
        let f = FsInfo::read(dev).features();
        assert!(!f.contains("metadata_csum"), "{f:?}");
        assert!(f.contains("inline_data") && f.contains("extent"), "{f:?}");
        assert_e2fsck_clean(dev);
    });
    let src = dir.path().join("a");
    assert_image_holds(&img, PART_OFFSET, &src, "-O ^metadata_csum,inline_data");
}

#[test]
fn ext2_with_a_journal_is_ext3() {
    let (_dir, img) = build(&["-t", "ext2", "-O", "has_journal"]);
    with_fs_device(&img, PART_OFFSET, |dev| {
        assert!(FsInfo::read(dev).features().contains("has_journal"));
        assert_e2fsck_clean(dev);
    });
}

#[test]
fn inode_count_reserved_percent_and_inode_size() {
    let (_dir, img) = build(&["-t", "ext4", "-N", "20000", "-m", "1", "-I", "512"]);
    with_fs_device(&img, PART_OFFSET, |dev| {
        let info = FsInfo::read(dev);
        assert!(
            info.num("Inode count") >= 20000,
            "{}",
            info.get("Inode count")
        );
        assert_eq!(info.num("Inode size"), 512);
        let reserved = info.num("Reserved block count") as f64;
        let blocks = info.num("Block count") as f64;
        assert!(
            (reserved / blocks - 0.01).abs() < 0.001,
            "reserved {reserved} of {blocks}"
        );
        assert_e2fsck_clean(dev);
    });
}

#[test]
fn small_inodes_keep_the_tree_but_lose_extra_fields() {
    let (dir, img) = build(&["-t", "ext2", "-I", "128"]);
    with_fs_device(&img, PART_OFFSET, |dev| {
        assert_eq!(FsInfo::read(dev).num("Inode size"), 128);
        assert_e2fsck_clean(dev);
    });
    let m = mount_image(&img, PART_OFFSET);
    // Names, types, contents and owners arrive; nanoseconds cannot.
    let diffs: Vec<String> = compare_trees(&dir.path().join("a"), m.path())
        .into_iter()
        .filter(|d| !d.contains("time"))
        .collect();
    assert_no_diffs(&diffs, "-I 128");
}

#[test]
fn bad_knobs_are_usage_errors() {
    let dir = tempdir();
    let img = dir.path().join("x.img");
    for args in [
        vec!["-O", "frobnicate"],
        vec!["-t", "ext4", "-O", "^extent"],
        vec!["-I", "100"],
        vec!["-m", "90"],
        vec!["--owner", "root:root"],
        vec!["--part-type", "nonsense"],
        vec!["--block-size", "1024", "-I", "2048"],
    ] {
        let mut a = args.clone();
        a.push(dir.path().to_str().unwrap());
        a.push(img.to_str().unwrap());
        let r = run_bin(&a);
        assert_eq!(r.code(), Some(2), "{args:?}: {}", r.describe());
        assert!(!img.exists());
    }
    let r = run_bin([
        "-N",
        "3",
        dir.path().to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    r.assert_one_line_error(&["-N"]);
}
