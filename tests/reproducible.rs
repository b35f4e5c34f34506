//! Reproducible and rootless builds: with SOURCE_DATE_EPOCH the same tree gives a byte-identical
//! image whatever its atimes, location or inode numbers; identifiers can be given; `--owner`
//! overrides owners; an unprivileged user can build an image with devices and root-owned files.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn build_with_epoch(src: &Path, out: &Path, extra: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    let mut args: Vec<&std::ffi::OsStr> = ["-q", "-t", "ext4"]
        .iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.push(src.as_os_str());
    args.push(out.as_os_str());
    run_cmd_timeout(cmd, args, Duration::from_secs(300)).assert_ok();
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    tool("cmp", [a.as_os_str(), b.as_os_str()]).code == Some(0)
}

#[test]
fn same_tree_gives_byte_identical_images_under_source_date_epoch() {
    let dir = tempdir();
    let a = dir.path().join("a");
    build_full_tree(&a);
    // A copy elsewhere: new inode numbers, new ctimes and birth times, other directory order.
    let b = dir.path().join("elsewhere/b");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::create_dir(&b).unwrap();
    // tar does not archive sockets, nor (here) the path longer than PATH_MAX: leave them out of
    // the original too.
    tool_ok("find", [a.to_str().unwrap(), "-type", "s", "-delete"]);
    tool_ok("rm", ["-rf", a.join("deep").to_str().unwrap()]);
    let copy = format!(
        "tar --sparse --xattrs --xattrs-include='*' --acls --numeric-owner -C '{}' -cpf - . | \
         tar --xattrs --xattrs-include='*' --acls --numeric-owner -C '{}' -xpf -",
        a.display(),
        b.display()
    );
    tool("sh", ["-c", copy.as_str()]); // warns (exit 1) about the pre-1970 time, copies it
    let (ia, ib, ia2) = (
        dir.path().join("a.img"),
        dir.path().join("b.img"),
        dir.path().join("a2.img"),
    );
    build_with_epoch(&a, &ia, &[]);
    // Touch atimes in between (reading every file, as a backup would).
    tool_ok(
        "touch",
        ["-a", "-c", a.join("files/one_byte").to_str().unwrap()],
    );
    tool_ok(
        "sh",
        ["-c", &format!("cat '{}'/files/* > /dev/null", a.display())],
    );
    build_with_epoch(&a, &ia2, &[]);
    assert!(same_bytes(&ia, &ia2), "two builds of the same tree differ");
    build_with_epoch(&b, &ib, &[]);
    // The copy differs in what SOURCE_DATE_EPOCH normalises (atime, ctime, birth time, inode
    // numbers, location); sockets are not archived by tar, so drop them from the original first.
    let diffs: Vec<String> = compare_trees(&a, &b)
        .into_iter()
        .filter(|d| !d.contains("atime"))
        .collect();
    assert_no_diffs(&diffs, "tar copy of the tree");
    assert!(
        same_bytes(&ia, &ib),
        "a copy of the tree gives a different image"
    );
    // Without SOURCE_DATE_EPOCH: random identifiers.
    let r = dir.path().join("r.img");
    build_image(&["-q", "-t", "ext4"], &a, &r);
    assert!(!same_bytes(&ia, &r));
}

#[test]
fn content_change_changes_the_identifiers() {
    let dir = tempdir();
    let a = dir.path().join("a");
    build_small_tree(&a);
    let (i1, i2) = (dir.path().join("1.img"), dir.path().join("2.img"));
    build_with_epoch(&a, &i1, &[]);
    let f = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file() && std::fs::metadata(p).unwrap().len() > 0)
        .expect("a non-empty file in the small tree");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&f, &bytes).unwrap();
    build_with_epoch(&a, &i2, &[]);
    let g1 = check_gpt(&i1);
    let g2 = check_gpt(&i2);
    assert_ne!(
        g1.disk_guid, g2.disk_guid,
        "same disk GUID for different content"
    );
}

#[test]
fn times_are_clamped_and_superblock_uses_the_epoch() {
    let dir = tempdir();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    std::fs::write(a.join("future"), b"x").unwrap();
    std::fs::write(a.join("past"), b"y").unwrap();
    tool_ok(
        "touch",
        ["-d", "2100-01-01", a.join("future").to_str().unwrap()],
    );
    tool_ok(
        "touch",
        [
            "-d",
            "2001-02-03 04:05:06.789",
            a.join("past").to_str().unwrap(),
        ],
    );
    let img = dir.path().join("x.img");
    build_with_epoch(&a, &img, &[]);
    let m = mount_image(&img, PART_OFFSET);
    use std::os::unix::fs::MetadataExt;
    let fut = std::fs::metadata(m.path().join("future")).unwrap();
    assert_eq!((fut.mtime(), fut.mtime_nsec()), (1_700_000_000, 0));
    assert_eq!(fut.atime(), 1_700_000_000, "atime does not leak the host's");
    let past = std::fs::metadata(m.path().join("past")).unwrap();
    assert_eq!(
        (past.mtime(), past.mtime_nsec()),
        (981_173_106, 789_000_000)
    );
    assert_eq!((past.atime(), past.ctime()), (981_173_106, 981_173_106));
    drop(m);
    with_fs_device(&img, PART_OFFSET, |dev| {
        let info = FsInfo::read(dev);
        assert!(
            info.get("Filesystem created").contains("2023"),
            "{}",
            info.get("Filesystem created")
        );
    });
}

#[test]
fn identifiers_and_partition_type_can_be_given() {
    let dir = tempdir();
    let a = dir.path().join("a");
    build_small_tree(&a);
    let img = dir.path().join("x.img");
    let ids = [
        ["--uuid", "11111111-2222-4333-8444-555555555555"],
        ["--disk-guid", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"],
        ["--part-guid", "12345678-9abc-4def-8123-456789abcdef"],
        ["--part-type", "root-x86-64"],
        ["--part-label", "root"],
    ];
    build_image(
        &[&["-q", "-t", "ext4"], ids.as_flattened()].concat(),
        &a,
        &img,
    );
    let g = check_gpt(&img);
    assert_eq!(g.type_guid, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "{g:?}");
    assert_eq!(g.part_guid, "12345678-9ABC-4DEF-8123-456789ABCDEF");
    assert_eq!(g.disk_guid, "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE");
    let i1 = tool_ok("sgdisk", ["-i", "1", img.to_str().unwrap()]);
    assert!(i1.contains("'root'"), "{i1}");
    with_fs_device(&img, PART_OFFSET, |dev| {
        assert_eq!(
            FsInfo::read(dev).get("Filesystem UUID"),
            "11111111-2222-4333-8444-555555555555"
        );
        assert_e2fsck_clean(dev);
    });
    let img2 = dir.path().join("y.img");
    build_image(
        &["--part-type", "0FC63DAF-8483-4772-8E79-3D69D8477DE5"],
        &a,
        &img2,
    );
    assert_eq!(
        check_gpt(&img2).type_guid,
        "0FC63DAF-8483-4772-8E79-3D69D8477DE5"
    );
}

#[test]
fn owner_override_gives_every_entry_that_owner() {
    let dir = tempdir();
    let a = dir.path().join("a");
    build_small_tree(&a);
    tool_ok("chown", ["-R", "1234:5678", a.to_str().unwrap()]);
    let img = dir.path().join("x.img");
    build_image(&["-q", "--owner", "0:0"], &a, &img);
    let m = mount_image(&img, PART_OFFSET);
    let out = tool_ok(
        "find",
        [m.path().to_str().unwrap(), "-not", "-user", "0", "-print"],
    );
    assert!(out.trim().is_empty(), "entries not owned by root: {out}");
    let out = tool_ok(
        "find",
        [m.path().to_str().unwrap(), "-not", "-group", "0", "-print"],
    );
    assert!(out.trim().is_empty(), "entries not in group 0: {out}");
}

#[test]
fn unprivileged_user_builds_devices_and_root_owned_files() {
    let dir = tempdir();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    tool_ok(
        "mknod",
        [a.join("console").to_str().unwrap(), "c", "5", "1"],
    );
    tool_ok("mknod", [a.join("sda").to_str().unwrap(), "b", "8", "0"]);
    std::fs::write(a.join("shadow"), b"secret-ish").unwrap();
    tool_ok("chmod", ["0644", a.join("shadow").to_str().unwrap()]);
    tool_ok("chown", ["0:42", a.join("shadow").to_str().unwrap()]);
    tool_ok("chmod", ["0755", dir.path().to_str().unwrap()]);
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    tool_ok("chown", ["65534:65534", outdir.to_str().unwrap()]);
    let img = outdir.join("x.img");
    let mut cmd = as_nobody();
    cmd.env("TMPDIR", &outdir);
    let r = run_cmd_timeout(
        cmd,
        [
            "-q",
            "-t",
            "ext4",
            a.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        r.code(),
        Some(0),
        "unprivileged build failed: {}",
        r.describe()
    );
    let m = mount_image(&img, PART_OFFSET);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let c = std::fs::symlink_metadata(m.path().join("console")).unwrap();
    assert!(c.file_type().is_char_device());
    assert_eq!(c.rdev(), rustix::fs::makedev(5, 1));
    let s = std::fs::symlink_metadata(m.path().join("shadow")).unwrap();
    assert_eq!((s.uid(), s.gid()), (0, 42));
    assert!(std::fs::symlink_metadata(m.path().join("sda"))
        .unwrap()
        .file_type()
        .is_block_device());
}

#[test]
fn tar_and_the_directory_it_came_from_give_the_same_image() {
    let dir = tempdir();
    let a = dir.path().join("a");
    build_full_tree(&a);
    // What tar cannot carry: sockets; (GNU tar here) the path longer than PATH_MAX.
    tool_ok("find", [a.to_str().unwrap(), "-type", "s", "-delete"]);
    tool_ok("rm", ["-rf", a.join("deep").to_str().unwrap()]);
    let tar = dir.path().join("a.tar");
    let cmd = format!(
        "tar --sparse --xattrs --xattrs-include='*' --acls --format=posix --numeric-owner -C '{}' -cf '{}' .",
        a.display(),
        tar.display()
    );
    tool("sh", ["-c", cmd.as_str()]); // warns (exit 1) about the pre-1970 time, archives it
    let (from_dir, from_tar) = (dir.path().join("dir.img"), dir.path().join("tar.img"));
    build_with_epoch(&a, &from_dir, &[]);
    build_with_epoch(&tar, &from_tar, &[]);
    assert!(
        same_bytes(&from_dir, &from_tar),
        "a tar of the tree gives another image than the tree"
    );
}

#[test]
fn unprivileged_user_builds_from_a_tar_stream() {
    let dir = tempdir();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    tool_ok("mknod", [a.join("null").to_str().unwrap(), "c", "1", "3"]);
    std::fs::write(a.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    tool_ok("chown", ["0:0", a.join("passwd").to_str().unwrap()]);
    let tar = dir.path().join("a.tar.gz");
    tar_c(&a, &tar, &["--numeric-owner", "-z"]);
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    tool_ok("chown", ["65534:65534", outdir.to_str().unwrap()]);
    tool_ok("chmod", ["0755", dir.path().to_str().unwrap()]);
    tool_ok("chmod", ["0644", tar.to_str().unwrap()]);
    let img = outdir.join("root.img");
    let mut cmd = as_nobody();
    cmd.env("TMPDIR", &outdir);
    let stdin = std::fs::File::open(&tar).unwrap();
    let r = run_cmd_with_stdin(
        cmd,
        [
            "-q".as_ref(),
            "-t".as_ref(),
            "ext4".as_ref(),
            "-".as_ref(),
            img.as_os_str(),
        ],
        stdin.into(),
        Duration::from_secs(120),
    );
    assert_eq!(
        r.code(),
        Some(0),
        "unprivileged tar build failed: {}",
        r.describe()
    );
    let m = mount_image(&img, PART_OFFSET);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let n = std::fs::symlink_metadata(m.path().join("null")).unwrap();
    assert!(n.file_type().is_char_device() && n.rdev() == rustix::fs::makedev(1, 3));
    let p = std::fs::symlink_metadata(m.path().join("passwd")).unwrap();
    assert_eq!((p.uid(), p.gid()), (0, 0));
}
