//! Mount points inside SOURCE (hole 5 of issue 9). Without -x every mount point crossed is named
//! in one warning line and what is mounted is built into the image (a kernel mount shows it, as
//! it was in SOURCE); a proc filesystem mounted in SOURCE (as in a chroot) is one clear error.
//! With `-x, --one-file-system` the mount points are kept without their contents — an empty
//! directory, an empty file — with the owner, mode and times of what is mounted there (as tar
//! and rsync do: what lies beneath is hidden by the mount), and a bind mount of SOURCE's own
//! filesystem counts as a mount point too. All of it holds for a directory given with `--add`.
//!
//! Root only (mount); never skips.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::*;

/// SOURCE with a directory and a file that have other things bind-mounted on them (a directory
/// and a file of the same filesystem, elsewhere under the test's temp dir).
struct Tree {
    /// First: fields drop in order, and the temp dir cannot be removed while they are mounted.
    _mounts: Vec<MountGuard>,
    _tmp: tempfile::TempDir,
    src: PathBuf,
    out: PathBuf,
    other: PathBuf,
}

fn tree_with_bind_mounts() -> Tree {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let other = tmp.path().join("other");
    let out = tmp.path().join("out");
    for d in [&src, &other, &out] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(src.join("kept.txt"), b"on SOURCE's filesystem").unwrap();
    std::fs::create_dir(src.join("mnt")).unwrap();
    std::fs::write(src.join("mnt/beneath.txt"), b"hidden by the mount").unwrap();
    std::fs::write(src.join("resolv.conf"), b"beneath").unwrap();
    std::fs::create_dir(other.join("sub")).unwrap();
    std::fs::write(other.join("inside.txt"), b"from elsewhere").unwrap();
    std::fs::write(other.join("sub/deep.txt"), b"deeper").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o750)).unwrap();
    let file = tmp.path().join("mounted-file");
    std::fs::write(&file, b"nameserver 192.0.2.1\n").unwrap();
    let mounts = vec![
        MountGuard::bind(&other, &src.join("mnt")),
        MountGuard::bind(&file, &src.join("resolv.conf")),
    ];
    // Atimes in the future, so that reading the tree (the build, the comparison) keeps them.
    entries::set_times(&src);
    Tree {
        _mounts: mounts,
        _tmp: tmp,
        src,
        out,
        other,
    }
}

/// The warning lines of a run.
fn warnings(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect()
}

#[test]
fn mount_points_crossed_are_named_one_line_each() {
    let t = tree_with_bind_mounts();
    let img = t.out.join("disk.img");
    let run = run_bin([t.src.as_os_str(), img.as_os_str()]);
    run.assert_ok();
    let w = warnings(&run);
    assert_eq!(
        w.len(),
        2,
        "want one warning per mount point\n{}",
        run.describe()
    );
    for name in ["/mnt", "/resolv.conf"] {
        let want = format!("{}{name}:", t.src.display());
        assert!(
            w.iter()
                .any(|l| l.contains(&want) && l.contains("mounted") && l.contains("-x")),
            "no warning naming {want}\n{}",
            run.describe()
        );
    }
    // What is mounted is in the image, as SOURCE shows it.
    let mnt = mount_image(&img, PART_OFFSET);
    assert_no_diffs(&compare_trees(&t.src, mnt.path()), "crossing mount points");
    assert!(mnt.path().join("mnt/sub/deep.txt").exists());
}

#[test]
fn one_file_system_keeps_mount_points_empty() {
    let t = tree_with_bind_mounts();
    let img = t.out.join("disk.img");
    let run = run_bin(["-x".as_ref(), t.src.as_os_str(), img.as_os_str()]);
    run.assert_ok();
    assert!(warnings(&run).is_empty(), "{}", run.describe());
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&img, PART_OFFSET);
    let m = mnt.path();
    assert_eq!(
        std::fs::read(m.join("kept.txt")).unwrap(),
        b"on SOURCE's filesystem"
    );
    // The directory mount point: empty, neither what is mounted nor what lies beneath.
    assert!(
        dir_names(&m.join("mnt")).is_empty(),
        "{:?}",
        dir_names(&m.join("mnt"))
    );
    // With the mode of the directory mounted there (0750), as tar and rsync keep it.
    let mode = std::fs::metadata(m.join("mnt")).unwrap().mode() & 0o7777;
    let other = std::fs::metadata(&t.other).unwrap().mode() & 0o7777;
    assert_eq!(mode, other);
    // The file mount point: an empty file.
    let f = std::fs::symlink_metadata(m.join("resolv.conf")).unwrap();
    assert!(f.is_file() && f.len() == 0, "{f:?}");
    let mut names: Vec<_> = dir_names(m).into_iter().collect();
    names.sort();
    assert_eq!(
        names,
        ["kept.txt", "lost+found", "mnt", "resolv.conf"].map(std::ffi::OsString::from)
    );
}

#[test]
fn mount_points_in_an_added_directory_are_named_or_kept_empty_with_one_file_system() {
    let t = tree_with_bind_mounts();
    let base = t.out.join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::write(base.join("readme"), b"SOURCE").unwrap();
    let add = format!("{}:/added", t.src.display());
    let img = t.out.join("disk.img");
    let args = |x: bool| {
        let mut a: Vec<&std::ffi::OsStr> = vec!["--add".as_ref(), add.as_ref()];
        if x {
            a.push("-x".as_ref());
        }
        a.extend([base.as_os_str(), img.as_os_str()]);
        a
    };
    // Crossed: one warning each, naming the added directory's paths.
    let run = run_bin(args(false));
    run.assert_ok();
    let w = warnings(&run);
    assert_eq!(w.len(), 2, "{}", run.describe());
    for name in ["/mnt", "/resolv.conf"] {
        let want = format!("{}{name}:", t.src.display());
        assert!(
            w.iter().any(|l| l.contains(&want)),
            "no warning naming {want}\n{}",
            run.describe()
        );
    }
    std::fs::remove_file(&img).unwrap();
    // -x: kept empty.
    let run = run_bin(args(true));
    run.assert_ok();
    assert!(warnings(&run).is_empty(), "{}", run.describe());
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&img, PART_OFFSET);
    let m = mnt.path().join("added");
    assert!(dir_names(&m.join("mnt")).is_empty());
    let f = std::fs::symlink_metadata(m.join("resolv.conf")).unwrap();
    assert!(f.is_file() && f.len() == 0, "{f:?}");
    assert_eq!(
        std::fs::read(m.join("kept.txt")).unwrap(),
        b"on SOURCE's filesystem"
    );
}

/// A chroot-like SOURCE with proc mounted on its /proc.
fn tree_with_proc() -> (tempfile::TempDir, PathBuf, PathBuf, MountGuard) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(src.join("proc")).unwrap();
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(src.join("etc/hostname"), b"chroot\n").unwrap();
    let proc = MountGuard::proc(&src.join("proc"));
    (tmp, src, out, proc)
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn proc_mounted_in_source_is_refused_without_one_file_system() {
    let (_tmp, src, out, _proc) = tree_with_proc();
    let run = run_bin([src.as_os_str(), out.join("disk.img").as_os_str()]);
    run.assert_one_line_error(&[&format!("{}/proc", show(&src)), "proc", "-x"]);
    assert!(dir_names(&out).is_empty(), "{:?}", dir_names(&out));
}

#[test]
fn proc_mounted_in_an_added_directory_is_refused_without_one_file_system() {
    let (tmp, src, out, _proc) = tree_with_proc();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let run = run_bin([
        "--add".as_ref(),
        src.as_os_str(),
        base.as_os_str(),
        out.join("disk.img").as_os_str(),
    ]);
    run.assert_one_line_error(&[&format!("{}/proc", show(&src)), "proc", "-x"]);
    assert!(dir_names(&out).is_empty(), "{:?}", dir_names(&out));
}

#[test]
fn proc_mounted_in_source_is_left_empty_with_one_file_system() {
    let (_tmp, src, out, _proc) = tree_with_proc();
    let img = out.join("disk.img");
    run_bin([
        "-q".as_ref(),
        "-x".as_ref(),
        src.as_os_str(),
        img.as_os_str(),
    ])
    .assert_ok();
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&img, PART_OFFSET);
    assert!(dir_names(&mnt.path().join("proc")).is_empty());
    assert_eq!(
        std::fs::read(mnt.path().join("etc/hostname")).unwrap(),
        b"chroot\n"
    );
}
