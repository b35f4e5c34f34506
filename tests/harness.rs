//! Checks the test harness itself, without the binary under test: images made by the real
//! `mke2fs -d` (1.47.0 drops nanoseconds, mangles dates after 2038, resets the root directory to 0755
//! root:root and splits hard-linked symlinks) must make the comparator report exactly those
//! differences, and deliberate damage done with debugfs must be reported too. So an empty difference
//! list in the other tests means something.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::common::*;

fn mke2fs_image_of(
    tree_builder: impl FnOnce(&Path),
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let (tmp, src) = temp_source(tree_builder);
    let img = tmp.path().join("fs.img");
    mke2fs_d(&src, &img, "ext4", "300M");
    assert_e2fsck_clean(&img);
    (tmp, src, img)
}

/// Is `d` a time difference that only mke2fs's truncation explains (nanoseconds dropped, or a date
/// after 2038 wrapped)?
fn is_time_diff(d: &str) -> bool {
    d.contains(": mtime ") || d.contains(": atime ")
}

#[test]
fn harness_detects_differences() {
    let (_tmp, src, img) = mke2fs_image_of(build_small_tree);
    let mnt = mount_image(&img, 0);
    let diffs = compare_trees(&src, mnt.path());
    assert!(
        diffs
            .iter()
            .any(|d| d.starts_with("/: mode 0751 in source, 0755 in image")),
        "comparator missed the root directory's mode reset by mke2fs -d:\n{}",
        diffs.join("\n")
    );
    // Same second, different nanoseconds on a regular file.
    let ns_diff = diffs.iter().any(|d| {
        let Some(rest) = d.strip_prefix("/hello.txt: mtime ") else {
            return false;
        };
        let v: Vec<&str> = rest.split([' ', ',']).filter(|w| w.contains('.')).collect();
        v.len() == 2 && v[0].split('.').next() == v[1].split('.').next() && v[0] != v[1]
    });
    assert!(
        ns_diff,
        "comparator missed the nanosecond mtime mke2fs -d dropped:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn harness_full_tree_differs_from_mke2fs_only_where_mke2fs_is_known_wrong() {
    let spec = FullTree {
        long_path: false,
        ..FullTree::default()
    };
    let (_tmp, src, img) = mke2fs_image_of(|d| build_full_tree_with(d, &spec));
    let mnt = mount_image(&img, 0);
    let diffs = compare_trees(&src, mnt.path());
    let known = |d: &str| {
        is_time_diff(d)
            || d.starts_with("/: mode 0751 in source, 0755 in image")
            || d.starts_with("/: uid 1000 in source, 0 in image")
            || d.starts_with("/: gid 1000 in source, 0 in image")
            // mke2fs -d does not treat symlinks as hard links.
            || d.starts_with("/hard/sym_a: link count")
            || d.starts_with("/hard/sym_b: link count")
            || d.contains("hard-link group {/hard/sym_a, /hard/sym_b}")
    };
    let unexpected: Vec<String> = diffs.iter().filter(|d| !known(d)).cloned().collect();
    assert_no_diffs(
        &unexpected,
        "full tree vs mke2fs -d (beyond mke2fs's known losses)",
    );
    // And the known losses are seen (a comparator that compares nothing would pass the above).
    assert!(diffs
        .iter()
        .any(|d| d.starts_with("/times/y2100: mtime 4102444800.987654321")));
    assert!(diffs
        .iter()
        .any(|d| d.starts_with("/: uid 1000 in source, 0 in image")));
}

#[test]
fn harness_detects_tampered_uid_content_xattr_symlink_and_links() {
    let (_tmp, src, img) = mke2fs_image_of(build_small_tree);
    let cmds = _tmp.path().join("debugfs.cmds");
    std::fs::write(
        &cmds,
        "sif /sub/data.bin uid 4242\n\
         unlink /sub/deeper/empty\n\
         unlink /sub/hello-again.txt\n\
         ea_set /hello.txt user.note tampered\n\
         ea_set / user.root tampered-root\n\
         sif /link block[0] 0x41414141\n",
    )
    .unwrap();
    tool_ok(
        "debugfs",
        [
            OsStr::new("-w"),
            OsStr::new("-f"),
            cmds.as_os_str(),
            img.as_os_str(),
        ],
    );
    // Overwrite the first data block of sub/data.bin behind the filesystem's back.
    let bmap = tool_ok(
        "debugfs",
        [
            OsStr::new("-R"),
            OsStr::new("bmap /sub/data.bin 0"),
            img.as_os_str(),
        ],
    );
    let block: u64 = bmap
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("debugfs bmap printed {bmap:?}"));
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(b"TAMPERED", block * 4096).unwrap();
    drop(f);

    let mnt = mount_image(&img, 0);
    let diffs = compare_trees(&src, mnt.path());
    let all = diffs.join("\n");
    for want in [
        "/sub/data.bin: uid 100000 in source, 4242 in image",
        "/sub/deeper/empty: missing from the image",
        "/sub/hello-again.txt: missing from the image",
        "/hello.txt: xattr user.note is \"small tree\" in source, \"tampered\" in image",
        "/link: symlink target sub/data.bin in source, AAAAdata.bin in image",
        "/sub/data.bin: content differs at byte 0",
        "/: xattr user.root is \"root directory xattr\" in source, \"tampered-root\" in image",
        "hard-link group {/hello.txt, /sub/hello-again.txt} (2 names) of the source is not one inode",
    ] {
        assert!(diffs.iter().any(|d| d.contains(want)), "comparator missed {want:?}; it reported:\n{all}");
    }
}

#[test]
fn harness_detects_filled_holes_rdev_type_mode_and_size() {
    use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
    let tmp = tempdir();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, dense) in [(&a, false), (&b, true)] {
        std::fs::create_dir(dir).unwrap();
        let f = std::fs::File::create(dir.join("sparse")).unwrap();
        if dense {
            // Not zeros: mke2fs -d turns zero blocks into holes itself.
            f.write_all_at(&vec![0xAAu8; 8 << 20], 0).unwrap();
        }
        f.write_all_at(b"data", 0).unwrap();
        f.set_len(8 << 20).unwrap();
        let minor = if dense { 5 } else { 3 };
        mknodat(
            CWD,
            dir.join("dev"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            makedev(1, minor),
        )
        .unwrap();
        if dense {
            std::fs::write(dir.join("kind"), b"now a file").unwrap();
        } else {
            mknodat(
                CWD,
                dir.join("kind"),
                FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
        }
        std::fs::write(
            dir.join("sized"),
            if dense { &b"12345"[..] } else { b"1234" },
        )
        .unwrap();
        let mode = if dense { 0o2640 } else { 0o640 };
        std::os::unix::fs::chown(dir.join("sized"), Some(0), Some(if dense { 7 } else { 0 }))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("sized"), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let img = tmp.path().join("fs.img");
    mke2fs_d(&b, &img, "ext4", "64M");
    let mnt = mount_image(&img, 0);
    let diffs = compare_trees(&a, mnt.path());
    let all = diffs.join("\n");
    for want in [
        "/sparse: holes filled",
        "/dev: rdev 1:3 in source, 1:5 in image",
        "/kind: type fifo in source, file in image",
        "/sized: mode 0640 in source, 2640 in image",
        "/sized: gid 0 in source, 7 in image",
        "/sized: size 4 in source, 5 in image",
    ] {
        assert!(
            diffs.iter().any(|d| d.contains(want)),
            "comparator missed {want:?}; it reported:\n{all}"
        );
    }
}
