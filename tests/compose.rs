//! `--add SRC[:DEST]`: directories, tar archives and single files merged over SOURCE in order
//! (later replaces earlier, directory over directory merges with the later metadata, missing
//! parents made 0755 root, DEST resolved through the image's symlinks, a file into a directory
//! DEST), compared entry by entry through a kernel mount with the tree `cp -a` makes of the
//! same sources; hard links never span two sources; served with `--lazy` (files
//! read from their own sources) the disk is the written one; `--owner` covers added entries and
//! made parents; the reproducible digest covers every source; the `:` rule; errors.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::entries::*;
use crate::common::*;

const EPOCH: &str = "1700000000";

/// The sources of the tests below `dir`: base (SOURCE), over (a directory), tree.tar.gz,
/// motd (a file), mods (a directory for /lib/modules, /lib being a symlink in base).
struct Sources {
    base: PathBuf,
    over: PathBuf,
    /// The tree the tar archive was made of (GNU tar keeps every time in PAX records).
    tar_tree: PathBuf,
    tar: PathBuf,
    motd: PathBuf,
    mods: PathBuf,
}

fn sources(dir: &Path) -> Sources {
    let base = dir.join("base");
    mkdir(&base, b"etc/conf.d");
    write(&base, b"etc/a", b"base a\n");
    write(&base, b"etc/b", b"base b\n");
    write(&base, b"etc/conf.d/keep", b"kept\n");
    write(&base, b"file-becomes-dir", b"a file in base\n");
    mkdir(&base, b"dir-becomes-file/inner");
    write(&base, b"dir-becomes-file/inner/x", b"x\n");
    mkdir(&base, b"usr/lib");
    write(&base, b"usr/lib/libc.so", &Rng::new(1).bytes(50_000));
    symlink(&base, b"lib", b"usr/lib");
    write(&base, b"hard1", b"base hard link\n");
    hardlink(&base, b"hard1", b"etc/hard2");
    chmod(&base, b"etc", 0o755);
    set_times(&base);

    let over = dir.join("over");
    mkdir(&over, b"etc/conf.d");
    write(&over, b"etc/b", b"over b, replaces base b\n");
    write(&over, b"etc/c", b"over c\n");
    write(&over, b"etc/conf.d/new", b"new\n");
    mkdir(&over, b"file-becomes-dir");
    write(&over, b"file-becomes-dir/in", b"now a directory\n");
    write(&over, b"dir-becomes-file", b"now a file\n");
    mkdir(&over, b"links");
    write(&over, b"links/h1", b"overlay hard link\n");
    hardlink(&over, b"links/h1", b"links/h2");
    xattr(&over, b"etc/c", "user.from", b"over");
    chmod(&over, b"etc", 0o750);
    chown(&over, b"etc", 0, 4);
    chmod(&over, b"", 0o700);
    set_times(&over);

    let t = dir.join("t");
    mkdir(&t, b"bin");
    write(&t, b"bin/tool", b"#!/bin/sh\necho tool\n");
    chmod(&t, b"bin/tool", 0o755);
    write(&t, b"zeros", &[0u8; 300_000]);
    set_times(&t);
    let tar = dir.join("tree.tar");
    crate::common::oci::tar_file_of_dir(&t, &tar);
    let tar = crate::common::oci::gzip_file(&tar);

    let motd = dir.join("motd");
    std::fs::write(&motd, b"welcome\n").unwrap();
    set_entry_times(&motd, atime_for(500), mtime_for(500));

    let mods = dir.join("mods");
    mkdir(&mods, b"6.1/kernel");
    write(&mods, b"6.1/kernel/m.ko", b"module\n");
    set_times(&mods);
    Sources {
        base,
        over,
        tar_tree: t,
        tar,
        motd,
        mods,
    }
}

/// The `--add` options of the tests, in order.
fn adds(s: &Sources) -> Vec<String> {
    vec![
        format!("{}", s.over.display()),
        format!("{}:/opt/tar", s.tar.display()),
        format!("{}:/etc/", s.motd.display()),
        format!("{}:/etc/conf.d/renamed", s.motd.display()),
        format!("{}:/copy-of-base", s.base.display()),
        format!("{}:/lib/modules", s.mods.display()),
    ]
}

/// The tree the sources make, built with cp -a as the rules say.
fn expected(dir: &Path, s: &Sources) -> PathBuf {
    let exp = dir.join("expected");
    cp_a(&[&s.base], &exp);
    // over at /: its entries merged; / keeps its own metadata.
    merge(&s.over, &exp);
    // The tar at /opt/tar: /opt made (0755 root, the archive root's time), the archive's
    // root (the tree it was made of) becomes /opt/tar.
    made_dir(&exp.join("opt"), &s.tar_tree);
    keeping_times(&exp.join("opt"), || {
        cp_a(&[&s.tar_tree], &exp.join("opt/tar"))
    });
    // motd into /etc, and as /etc/conf.d/renamed: the directories keep their times.
    keeping_times(&exp.join("etc"), || cp_a(&[&s.motd], &exp.join("etc/motd")));
    keeping_times(&exp.join("etc/conf.d"), || {
        cp_a(&[&s.motd], &exp.join("etc/conf.d/renamed"))
    });
    // base again, at /copy-of-base: its own inodes.
    keeping_times(&exp, || cp_a(&[&s.base], &exp.join("copy-of-base")));
    // mods at /lib/modules, which is /usr/lib/modules.
    keeping_times(&exp.join("usr/lib"), || {
        cp_a(&[&s.mods], &exp.join("usr/lib/modules"))
    });
    exp
}

fn cp_a(from: &[&Path], to: &Path) {
    let mut args = vec![OsString::from("-a"), OsString::from("-T")];
    args.extend(from.iter().map(|p| p.as_os_str().to_owned()));
    args.push(to.as_os_str().to_owned());
    tool_ok("cp", &args);
}

/// Merges the entries of directory `src` into directory `dst` as `--add` does: replaced where
/// the types differ, merged (with the later metadata, by cp -a) where both are directories;
/// `dst` keeps its own metadata and times.
fn merge(src: &Path, dst: &Path) {
    keeping_times(dst, || {
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let (s, d) = (e.path(), dst.join(e.file_name()));
            let s_dir = e.file_type().unwrap().is_dir();
            match std::fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() && s_dir => {
                    merge(&s, &d);
                    copy_metadata(&s, &d);
                }
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&d).unwrap(),
                Ok(_) => std::fs::remove_file(&d).unwrap(),
                Err(_) => {}
            }
            if !d.exists() {
                cp_a(&[&s], &d);
            }
        }
    });
}

/// cp -a's metadata of `src` (a directory) onto the directory `dst`: owner, mode, times.
fn copy_metadata(src: &Path, dst: &Path) {
    let m = std::fs::metadata(src).unwrap();
    std::os::unix::fs::chown(dst, Some(m.uid()), Some(m.gid())).unwrap();
    std::fs::set_permissions(dst, m.permissions()).unwrap();
    set_entry_times(
        dst,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    );
}

/// Runs `f`, then gives `dir` back the times it had.
fn keeping_times(dir: &Path, f: impl FnOnce()) {
    let m = std::fs::metadata(dir).unwrap();
    f();
    set_entry_times(
        dir,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    );
}

/// A directory `--add` makes as a missing parent: 0755, root, every time the added tree's.
fn made_dir(path: &Path, added_root: &Path) {
    let parent = path.parent().unwrap();
    keeping_times(parent, || std::fs::create_dir(path).unwrap());
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let m = std::fs::metadata(added_root).unwrap();
    set_entry_times(
        path,
        (m.mtime(), m.mtime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    );
}

fn add_args(s: &Sources) -> Vec<OsString> {
    adds(s)
        .into_iter()
        .flat_map(|a| [OsString::from("--add"), OsString::from(a)])
        .collect()
}

fn build(env: &[(&str, &str)], args: &[OsString]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd_timeout(cmd, args, Duration::from_secs(300))
}

#[test]
fn added_directories_archives_and_files_merge_in_order() {
    let tmp = tempdir();
    let s = sources(tmp.path());
    let exp = expected(tmp.path(), &s);
    let img = tmp.path().join("d.img");
    let mut args: Vec<OsString> = vec!["-q".into(), "-t".into(), "ext4".into()];
    args.extend(add_args(&s));
    args.extend([s.base.clone().into(), img.clone().into()]);
    build(&[], &args).assert_ok();
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&img, PART_OFFSET);
    let m = mnt.path();
    // The rules, seen directly.
    assert_eq!(
        std::fs::read(m.join("etc/b")).unwrap(),
        b"over b, replaces base b\n"
    );
    assert_eq!(
        std::fs::metadata(m.join("etc")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        std::fs::metadata(m).unwrap().mode() & 0o7777,
        0o755,
        "/ keeps its mode"
    );
    assert!(m.join("file-becomes-dir/in").is_file() && m.join("dir-becomes-file").is_file());
    assert!(m.join("usr/lib/modules/6.1/kernel/m.ko").is_file() && m.join("lib").is_symlink());
    let hard = |p: &str| std::fs::metadata(m.join(p)).unwrap();
    assert_eq!(hard("hard1").ino(), hard("etc/hard2").ino());
    assert_ne!(
        hard("hard1").ino(),
        hard("copy-of-base/hard1").ino(),
        "no link across sources"
    );
    assert_eq!(hard("hard1").nlink(), 2);
    assert_eq!(
        allocated(&m.join("opt/tar/zeros")),
        0,
        "zero blocks of a tar are holes"
    );
    assert_no_diffs(&compare_trees(&exp, m), "--add");
}

#[test]
fn added_sources_are_served_lazily_from_where_they_are() {
    let tmp = tempdir();
    let s = sources(tmp.path());
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];
    let img = tmp.path().join("d.img");
    let mut args: Vec<OsString> = vec!["-q".into(), "-t".into(), "ext4".into()];
    args.extend(add_args(&s));
    let mut write = args.clone();
    write.extend([s.base.clone().into(), img.clone().into()]);
    build(&env, &write).assert_ok();
    let served = tmp.path().join("served.img");
    let mut serve: Vec<OsString> = vec!["--serve".into(), "--lazy".into()];
    serve.extend(args);
    serve.extend([
        s.base.clone().into(),
        "--run".into(),
        format!("nbdcopy \"$uri\" {}", served.display()).into(),
    ]);
    build(&env, &serve).assert_ok();
    assert!(
        std::fs::read(&served).unwrap() == std::fs::read(&img).unwrap(),
        "the lazily served disk differs from the written one"
    );
}

#[test]
fn owner_covers_added_entries_and_made_parents() {
    let tmp = tempdir();
    let s = sources(tmp.path());
    let img = tmp.path().join("d.img");
    let mut args: Vec<OsString> = vec!["-q".into(), "--owner".into(), "123:456".into()];
    args.extend(add_args(&s));
    args.extend([s.base.clone().into(), img.clone().into()]);
    build(&[], &args).assert_ok();
    let mnt = mount_image(&img, PART_OFFSET);
    let mut seen = 0;
    let mut stack = vec![mnt.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if e.file_name() != "lost+found" {
                assert_eq!((m.uid(), m.gid()), (123, 456), "{}", e.path().display());
                seen += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(seen > 20, "{seen} entries");
    assert!(mnt.path().join("opt").is_dir());
}

#[test]
fn the_reproducible_digest_covers_every_source() {
    let tmp = tempdir();
    let s = sources(tmp.path());
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];
    let uuid = |img: &Path| {
        with_fs_device(img, PART_OFFSET, |dev| {
            FsInfo::read(dev).get("Filesystem UUID").to_string()
        })
    };
    let make = |name: &str| {
        let img = tmp.path().join(name);
        let mut args: Vec<OsString> = vec!["-q".into()];
        args.extend(add_args(&s));
        args.extend([s.base.clone().into(), img.clone().into()]);
        build(&env, &args).assert_ok();
        img
    };
    let (a, b) = (make("a.img"), make("b.img"));
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // One byte of an added file changed, its size and times kept.
    let f = s.mods.join("6.1/kernel/m.ko");
    let m = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, b"modulE\n").unwrap();
    set_entry_times(&f, (m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()));
    let c = make("c.img");
    assert_ne!(
        uuid(&a),
        uuid(&c),
        "the added file's content is not in the digest"
    );
}

#[test]
fn colons_in_src_and_dest() {
    let tmp = tempdir();
    let base = tmp.path().join("base");
    mkdir(&base, b"etc");
    let odd = tmp.path().join("x:");
    mkdir(&odd, b"sub");
    write(&odd, b"sub/f", b"from x:/sub\n");
    let colon = tmp.path().join("we:ird");
    std::fs::write(&colon, b"colon in the name\n").unwrap();
    let img = tmp.path().join("d.img");
    let args: Vec<OsString> = vec![
        "-q".into(),
        // SRC with ":/" in it: an explicit DEST.
        format!("--add={}/sub:/", odd.display()).into(),
        // SRC with ":" and no DEST; DEST with ":".
        "--add".into(),
        colon.clone().into(),
        "--add".into(),
        format!("{}:/opt/a:b", colon.display()).into(),
        base.into(),
        img.clone().into(),
    ];
    build(&[], &args).assert_ok();
    let mnt = mount_image(&img, PART_OFFSET);
    let m = mnt.path();
    assert_eq!(std::fs::read(m.join("f")).unwrap(), b"from x:/sub\n");
    assert!(m.join("we:ird").is_file());
    assert_eq!(
        std::fs::read(m.join("opt/a:b")).unwrap(),
        b"colon in the name\n"
    );
}

#[test]
fn add_errors_are_one_line_and_leave_nothing() {
    let tmp = tempdir();
    let s = sources(tmp.path());
    let img = tmp.path().join("d.img");
    let before = dir_names(tmp.path());
    let run = |extra: &[&str]| {
        let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
        args.extend([s.base.clone().into(), img.clone().into()]);
        build(&[], &args)
    };
    let missing = tmp.path().join("no-such-dir");
    run(&["--add", missing.to_str().unwrap()]).assert_one_line_error(&["no-such-dir"]);
    let under_file = format!("{}:/etc/a/sub", s.over.display());
    run(&["--add", &under_file]).assert_one_line_error(&["/etc/a is not a directory"]);
    run(&["--add", "x:/../y"]).assert_code(2);
    run(&["--add", "-", "--add", "-"]).assert_code(2);
    assert_eq!(dir_names(tmp.path()), before);
}
