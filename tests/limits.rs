//! Limits of the filesystem types, found before anything is written: files too large for the
//! type and block size, sizes beyond what the type addresses, a /lost+found that is not a
//! directory. Each is one clear line, exit 1, and no output.

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
    let out = dir.path().join("ok.img");
    run_bin([
        "-q",
        "-t",
        "ext4",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .assert_ok();
    assert!(allocated(&out) < 64 * MIB, "the hole was written");
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
}

#[test]
fn size_beyond_what_the_type_addresses_is_refused() {
    let dir = tempdir();
    let src = dir.path().join("src");
    build_small_tree(&src);
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
    let src = dir.path().join("src");
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
    let out = dir.path().join("ok.img");
    run_bin([
        "-q",
        "-t",
        "ext4",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
    ])
    .assert_ok();
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
    let m = mount_image(&out, PART_OFFSET);
    assert_eq!(
        std::fs::read_dir(m.path().join("d")).unwrap().count(),
        66_000
    );
}
