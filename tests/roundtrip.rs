//! Round trip: the full source tree -> `linuxdisk-mk` -> image, then checked with real tools:
//! `sgdisk -v` and `sgdisk -i 1` (GPT), `e2fsck -fn` (clean), `dumpe2fs -h` (features of the type,
//! label, block size) and a kernel mount compared entry by entry with the source. For ext2, ext3,
//! ext4, `--partition none`, block sizes 1024 and 2048; plus sparseness, the default type, random
//! identifiers and `-q`.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;

struct Case {
    fstype: Option<&'static str>,
    block_size: Option<u32>,
    partition_none: bool,
    label: &'static str,
}

fn args_for(case: &Case, src: &Path, out: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    if let Some(t) = case.fstype {
        a.extend(["-t".into(), t.into()]);
    }
    a.extend(["-L".into(), case.label.into()]);
    if let Some(bs) = case.block_size {
        a.extend(["--block-size".into(), bs.to_string().into()]);
    }
    if case.partition_none {
        a.extend(["--partition".into(), "none".into()]);
    }
    a.extend([src.into(), out.into()]);
    a
}

/// What is wrong with the features `dumpe2fs -h` lists, against mke2fs's defaults for the type.
fn feature_problems(info: &FsInfo, fstype: &str) -> Vec<String> {
    let f = info.features();
    let (want, not): (&[&str], &[&str]) = match fstype {
        "ext4" => (
            &[
                "has_journal",
                "extent",
                "64bit",
                "flex_bg",
                "metadata_csum",
                "dir_nlink",
                "extra_isize",
                "huge_file",
            ],
            &[],
        ),
        "ext3" => (&["has_journal"], &["extent"]),
        "ext2" => (&[], &["has_journal", "extent"]),
        _ => unreachable!(),
    };
    let mut p: Vec<String> = Vec::new();
    p.extend(
        want.iter()
            .filter(|x| !f.contains(**x))
            .map(|x| format!("{fstype} lacks feature {x}: {f:?}")),
    );
    p.extend(
        not.iter()
            .filter(|x| f.contains(**x))
            .map(|x| format!("{fstype} must not have {x}: {f:?}")),
    );
    if fstype == "ext4" && info.num("Inode size") != 256 {
        p.push(format!(
            "ext4 inode size {}, want 256",
            info.num("Inode size")
        ));
    }
    p
}

/// Asserts the features match the type.
fn assert_features(info: &FsInfo, fstype: &str) {
    let p = feature_problems(info, fstype);
    assert!(p.is_empty(), "{}", p.join("\n"));
}

/// Builds the full tree, runs the binary and checks the image every way we can.
fn roundtrip(case: Case) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let bs = case.block_size.unwrap_or(4096);
    build_full_tree_with(
        &src,
        &FullTree {
            block_size: bs,
            ..FullTree::default()
        },
    );
    let out = tmp.path().join("disk.img");
    run_bin(args_for(&case, &src, &out)).assert_ok();
    let left: Vec<OsString> = dir_names(tmp.path()).into_iter().collect();
    assert_eq!(
        left,
        ["disk.img", "src"],
        "unexpected files beside OUTPUT after a build"
    );

    // Collect every problem (GPT, fsck, features, content) so one run says all that is wrong.
    let mut problems: Vec<String> = Vec::new();
    let mut check = |ok: bool, msg: String| {
        if !ok {
            problems.push(msg)
        }
    };
    let offset = if case.partition_none { 0 } else { PART_OFFSET };
    let mut part_bytes = None;
    if !case.partition_none {
        match gpt_info(&out) {
            Err(e) => check(false, e),
            Ok(g) => {
                check(
                    g.partitions == 1,
                    format!("want exactly one partition: {g:?}"),
                );
                check(
                    g.first_sector == 2048,
                    format!("partition 1 must start at LBA 2048: {g:?}"),
                );
                check(
                    g.type_guid == LINUX_FS_GUID,
                    format!("partition type GUID: {g:?}"),
                );
                for guid in [&g.part_guid, &g.disk_guid] {
                    let random =
                        guid.len() == 36 && guid.chars().any(|c| c.is_ascii_hexdigit() && c != '0');
                    check(random, format!("GUID not random: {g:?}"));
                }
                part_bytes = Some((g.last_sector + 1).saturating_sub(g.first_sector) * 512);
            }
        }
    }
    let fstype = case.fstype.unwrap_or("ext2");
    with_fs_device(&out, offset, |dev| {
        if let Some(e) = e2fsck_problem(dev) {
            check(false, e);
        }
        let info = FsInfo::read(dev);
        for e in feature_problems(&info, fstype) {
            check(false, e);
        }
        check(
            info.label() == case.label,
            format!("label {:?}, want {:?}", info.label(), case.label),
        );
        check(
            info.block_size() == bs as u64,
            format!("block size {}, want {bs}", info.block_size()),
        );
        let state = info.get("Filesystem state");
        check(state == "clean", format!("filesystem state {state:?}"));
        let fs = info.size_bytes();
        match part_bytes {
            Some(p) => check(
                fs <= p,
                format!("filesystem ({fs} bytes) larger than its partition ({p} bytes)"),
            ),
            None => {
                let len = std::fs::metadata(&out).unwrap().len();
                check(
                    len == fs,
                    format!("--partition none: file is {len} bytes, filesystem {fs}"),
                );
            }
        }
    });

    let mnt = mount_image(&out, offset);
    match std::fs::symlink_metadata(mnt.path().join("lost+found")) {
        Ok(lf) => check(
            lf.is_dir() && lf.mode() & 0o7777 == 0o700,
            format!("lost+found: {lf:?}"),
        ),
        Err(e) => check(false, format!("no lost+found in the image: {e}")),
    }
    let diffs = compare_trees(&src, mnt.path());
    drop(mnt);
    let n = diffs.len();
    problems.extend(diffs.into_iter().take(200));
    if n > 200 {
        problems.push(format!("... and {} more differences", n - 200));
    }
    assert!(
        problems.is_empty(),
        "{fstype} round trip: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn ext2_image_holds_the_full_tree_exactly() {
    roundtrip(Case {
        fstype: Some("ext2"),
        block_size: None,
        partition_none: false,
        label: "rt-ext2-16-bytes",
    });
}

#[test]
fn ext3_image_holds_the_full_tree_exactly() {
    roundtrip(Case {
        fstype: Some("ext3"),
        block_size: None,
        partition_none: false,
        label: "rt-ext3-16-bytes",
    });
}

#[test]
fn ext4_image_holds_the_full_tree_exactly() {
    roundtrip(Case {
        fstype: Some("ext4"),
        block_size: None,
        partition_none: false,
        label: "rt-ext4-16-bytes",
    });
}

#[test]
fn partition_none_writes_a_bare_filesystem_at_offset_0() {
    roundtrip(Case {
        fstype: Some("ext4"),
        block_size: None,
        partition_none: true,
        label: "bare",
    });
}

#[test]
fn block_size_1024_ext4_holds_the_full_tree_exactly() {
    roundtrip(Case {
        fstype: Some("ext4"),
        block_size: Some(1024),
        partition_none: false,
        label: "bs1024",
    });
}

#[test]
fn block_size_2048_ext3_holds_the_full_tree_exactly() {
    roundtrip(Case {
        fstype: Some("ext3"),
        block_size: Some(2048),
        partition_none: false,
        label: "bs2048",
    });
}

fn small_build(extra: &[&str]) -> (tempfile::TempDir, PathBuf, Run) {
    let (tmp, src) = temp_source(build_small_tree);
    let out = tmp.path().join("disk.img");
    let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    args.extend([src.as_os_str(), out.as_os_str()]);
    let run = run_bin(&args);
    run.assert_ok();
    (tmp, out, run)
}

#[test]
fn default_type_is_ext2() {
    let (tmp, out, _) = small_build(&[]);
    with_fs_device(&out, PART_OFFSET, |dev| {
        assert_features(&FsInfo::read(dev), "ext2")
    });
    assert_image_holds(&out, PART_OFFSET, &tmp.path().join("src"), "default type");
}

#[test]
fn image_is_sparse_free_space_is_a_hole() {
    let (_tmp, out, _) = small_build(&["-t", "ext4", "--size", "1G"]);
    let len = std::fs::metadata(&out).unwrap().len();
    assert!(
        len > 1 << 30,
        "image of a 1 GiB filesystem is only {len} bytes long"
    );
    let used = allocated(&out);
    assert!(
        used < len / 10,
        "image not sparse: {used} of {len} bytes allocated (a 1 GiB fs holding ~100 KB)"
    );
}

#[test]
fn uuid_hash_seed_and_gpt_guids_are_random_per_build() {
    let ids = |out: &Path| {
        let g = check_gpt(out);
        let info = with_fs_device(out, PART_OFFSET, FsInfo::read);
        let uuid = info.get("Filesystem UUID").to_owned();
        let seed = info.get("Directory Hash Seed").to_owned();
        for v in [&uuid, &seed] {
            assert!(
                v.chars().any(|c| c.is_ascii_hexdigit() && c != '0'),
                "zero/absent id: {v:?}"
            );
        }
        (g.disk_guid, g.part_guid, uuid, seed)
    };
    let (_t1, out1, _) = small_build(&["-t", "ext4"]);
    let (_t2, out2, _) = small_build(&["-t", "ext4"]);
    let (a, b) = (ids(&out1), ids(&out2));
    assert_ne!(a.0, b.0, "disk GUID repeated between builds");
    assert_ne!(a.1, b.1, "partition GUID repeated between builds");
    assert_ne!(a.2, b.2, "filesystem UUID repeated between builds");
    assert_ne!(a.3, b.3, "directory hash seed repeated between builds");
}

#[test]
fn quiet_build_prints_nothing() {
    let (_tmp, _out, run) = small_build(&["-q"]);
    assert!(
        run.stdout.is_empty() && run.stderr.is_empty(),
        "-q printed something\n{}",
        run.describe()
    );
}

#[test]
fn output_inside_source_is_not_copied_into_itself() {
    let (_tmp, src) = temp_source(build_small_tree);
    let out = src.join("disk.img");
    run_bin([src.as_os_str(), out.as_os_str()]).assert_ok();
    let mnt = mount_image(&out, PART_OFFSET);
    assert!(
        std::fs::symlink_metadata(mnt.path().join("disk.img")).is_err(),
        "OUTPUT inside SOURCE was copied into the image"
    );
    // Everything else arrives; the source root's mtime changed when OUTPUT appeared, so compare
    // all but that and the image file itself.
    let diffs: Vec<String> = compare_trees(&src, mnt.path())
        .into_iter()
        .filter(|d| !d.starts_with("/disk.img: missing") && !d.starts_with("/: mtime"))
        .collect();
    assert_no_diffs(&diffs, "OUTPUT inside SOURCE");
}

#[test]
fn lost_found_of_the_source_is_used() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(src.join("lost+found")).unwrap();
    std::fs::write(src.join("lost+found/#12345"), b"recovered long ago\n").unwrap();
    std::os::unix::fs::chown(src.join("lost+found"), Some(4321), Some(4321)).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o750);
    std::fs::set_permissions(src.join("lost+found"), mode).unwrap();
    build_small_tree(&src);
    let out = tmp.path().join("disk.img");
    build_image(&["-t", "ext4"], &src, &out);
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
    assert_image_holds(&out, PART_OFFSET, &src, "source with its own lost+found");
}
