//! Unit tests of the whole reader on small archives made in memory (or by GNU tar): entries out
//! of order, replacement, hard links, hostile and damaged archives, PAX metadata, the in-place
//! and spooled data paths, sparse files.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::testutil::Ar;
use super::*;
use crate::source::Timestamp;
use crate::source::{Data, Entry, Kind, Layout};

/// 4 KiB blocks, as the default.
const OPTS: Options = Options { block: 4096 };

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ldmk-tar-unit-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn read_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<Tree> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    read_archive(ArchiveInput::Path(p), dir, OPTS, &mut || {})
}

fn read(bytes: &[u8]) -> Result<Tree> {
    read_file(tmp().path(), "a.tar", bytes)
}

fn err(bytes: &[u8]) -> String {
    format!("{:#}", read(bytes).expect_err("an error"))
}

fn find<'a>(e: &'a Entry, path: &str) -> &'a Entry {
    path.split('/').fold(e, |e, c| {
        e.children()
            .iter()
            .find(|x| &*x.name == c.as_bytes())
            .unwrap_or_else(|| panic!("no {path}"))
    })
}

fn names(e: &Entry) -> Vec<String> {
    e.children()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.name).into_owned())
        .collect()
}

fn content(t: &Tree, e: &Entry) -> Vec<u8> {
    let Kind::File {
        size,
        data: Data::Spool { offset, .. },
        ..
    } = e.kind
    else {
        panic!("not a spooled file");
    };
    let mut v = vec![0u8; size as usize];
    t.spool(0).unwrap().read_exact_at(&mut v, offset).unwrap();
    v
}

#[test]
fn entries_out_of_order_like_tar_extraction() {
    let mut a = Ar::new();
    a.mtime = 500;
    a.file("./x/y/f", b"data");
    a.mtime = 700;
    a.dir("x/y/", 0o700);
    a.mtime = 600;
    a.file("z", b"zz").dir("./x", 0o750);
    let t = read(&a.end()).unwrap();
    assert_eq!(names(&t.root), ["x", "z"]);
    let x = find(&t.root, "x");
    assert_eq!(
        (x.meta.perm, x.meta.uid, x.meta.mtime.sec),
        (0o750, 1000, 600)
    );
    assert_eq!(names(x), ["y"]);
    let y = find(&t.root, "x/y");
    assert_eq!((y.meta.perm, y.meta.mtime.sec), (0o700, 700));
    assert_eq!(content(&t, find(&t.root, "x/y/f")), b"data");
    // No `./` entry: the root is 0755 0:0 with the newest mtime.
    assert_eq!((t.root.meta.perm, t.root.meta.uid), (0o755, 0));
    assert_eq!({ t.root.meta.mtime.sec }, 700);
    assert_eq!((t.entries, t.data_bytes), (4, 6));
}

#[test]
fn implicit_parents_until_described_and_the_root_entry() {
    let mut a = Ar::new();
    a.mtime = 42;
    a.file("p/q", b"").dir(".", 0o751);
    let t = read(&a.end()).unwrap();
    let p = find(&t.root, "p");
    assert_eq!((p.meta.perm, p.meta.uid, p.meta.gid), (0o755, 0, 0));
    assert_eq!(p.meta.mtime, Timestamp { sec: 42, nsec: 0 });
    assert_eq!((t.root.meta.perm, t.root.meta.uid), (0o751, 1000));
    let mut a = Ar::new();
    a.raw(b"./", b'2', 0o777, b"x", b"");
    assert!(err(&a.end()).contains("root must be a directory"));
}

#[test]
fn later_entries_replace_earlier_ones() {
    let mut a = Ar::new();
    a.file("f", b"old").file("f", b"new!");
    a.dir("d", 0o700).file("d/keep", b"k").dir("d", 0o711);
    a.dir("gone", 0o755)
        .file("gone/child", b"c")
        .file("gone", b"now a file");
    let t = read(&a.end()).unwrap();
    assert_eq!(content(&t, find(&t.root, "f")), b"new!");
    assert_eq!(find(&t.root, "d").meta.perm, 0o711);
    assert_eq!(names(find(&t.root, "d")), ["keep"]);
    assert!(!find(&t.root, "gone").is_dir());
    assert_eq!(t.entries, 4);
    assert_eq!(t.data_bytes, 4 + 1 + 10);
}

#[test]
fn hard_links_share_an_identity_and_count_once() {
    let mut a = Ar::new();
    a.file("a", b"shared").link("b", "./a").link("sub/c", "b");
    a.file("d", b"old d").link("e", "d").file("d", b"new d");
    let t = read(&a.end()).unwrap();
    let (ea, eb, ec) = (
        find(&t.root, "a"),
        find(&t.root, "b"),
        find(&t.root, "sub/c"),
    );
    assert_eq!((ea.meta.dev, ea.meta.ino), (eb.meta.dev, eb.meta.ino));
    assert_eq!(ea.meta.ino, ec.meta.ino);
    assert_eq!((ea.meta.nlink, ec.meta.nlink), (3, 3));
    // The link made before `d` was replaced keeps the old inode.
    assert_eq!(content(&t, find(&t.root, "e")), b"old d");
    assert_eq!(find(&t.root, "e").meta.nlink, 1);
    assert_eq!(find(&t.root, "d").meta.nlink, 1);
    assert_ne!(find(&t.root, "d").meta.ino, find(&t.root, "e").meta.ino);
    assert_eq!(t.data_bytes, 6 + 5 + 5);
    assert_eq!(t.entries, 6);
}

#[test]
fn bad_hard_links_name_both_paths() {
    let mut a = Ar::new();
    a.link("l", "missing");
    let e = err(&a.end());
    assert!(e.contains("entry 'l'") && e.contains("'missing'"), "{e}");
    let mut a = Ar::new();
    a.dir("d", 0o755).link("l", "d");
    assert!(err(&a.end()).contains("a directory"));
    let mut a = Ar::new();
    a.link("l", "../x");
    assert!(err(&a.end()).contains("leaves the archive root"));
}

#[test]
fn hostile_paths_are_refused_with_the_entry_name() {
    for name in ["../etc/passwd", "/etc/passwd", "a/../../b"] {
        let mut a = Ar::new();
        a.file("ok", b"").file(name, b"evil");
        let e = err(&a.end());
        assert!(
            e.contains(&format!("a.tar: entry '{name}': "))
                && e.contains("leaves the archive root"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
    let mut a = Ar::new();
    a.file("f", b"").file("f/g", b"");
    assert!(err(&a.end()).contains("'f' is not a directory"));
    let mut a = Ar::new();
    a.raw(b"s", b'2', 0o777, b"/", b"").file("s/x", b"");
    assert!(err(&a.end()).contains("'s' is not a directory"));
}

#[test]
fn damaged_archives_are_clear_errors() {
    let mut a = Ar::new();
    a.file("one", &[7u8; 3000]).file("two", b"2");
    let full = a.end();
    // Cut inside data, inside a header, at a block boundary with no end marker.
    for cut in [1000, 3584 + 100, 4096, 4608] {
        let e = format!(
            "{:#}",
            read(&full[..cut])
                .err()
                .unwrap_or_else(|| panic!("cut {cut}"))
        );
        assert!(e.contains("truncated"), "cut at {cut}: {e}");
    }
    assert!(err(&full[..2000]).contains("entry 'one'"));
    assert!(err(&full[..4608]).contains("no end-of-archive marker at byte 4608, after entry 'two'"));
    let mut bad = full.clone();
    bad[3584 + 10] ^= 0x55;
    let e = err(&bad);
    assert!(
        e.contains("checksum") && e.contains("after entry 'one'"),
        "{e}"
    );
    assert!(err(b"").contains("empty"));
    assert!(err(&[b'x'; 1024]).contains("not a tar archive"));
    // A gzip stream cut short is an error too, even though the tar part seems whole.
    let gz = gzip(&full);
    let d = tmp();
    let e = read_file(d.path(), "a.tgz", &gz[..gz.len() - 4])
        .err()
        .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("a.tgz: ") && e.contains("gzip data: unexpected end"),
        "{e}"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn pax_and_gnu_records_carry_metadata() {
    let long = "d/".repeat(80) + "file";
    let mut a = Ar::new();
    a.pax(&[
        ("path", long.as_bytes()),
        ("mtime", b"1700000000.123456789"),
        ("atime", b"-1.25"),
        ("uid", b"4294967294"),
        ("gid", b"100000"),
        ("SCHILY.xattr.user.bin", b"a\nb\0c"),
        ("SCHILY.xattr.security.selinux", b"label\0"),
        (
            "SCHILY.acl.access",
            b"user::rw-\nuser:7:r--\ngroup::r--\nmask::r--\nother::---\n",
        ),
    ]);
    a.file("short", b"content");
    a.long_name(("e/".repeat(70) + "gnu").as_bytes())
        .file("x", b"");
    a.raw(b"c", b'3', 0o600, b"", b"");
    a.pax(&[("linkpath", "t".repeat(300).as_bytes())]);
    a.raw(b"l", b'2', 0o777, b"", b"");
    let t = read(&a.end()).unwrap();
    let f = find(&t.root, &long);
    assert_eq!(
        f.meta.mtime,
        Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789
        }
    );
    assert_eq!(
        f.meta.atime,
        Timestamp {
            sec: -2,
            nsec: 750_000_000
        }
    );
    assert_eq!((f.meta.ctime, f.meta.btime), (f.meta.mtime, f.meta.mtime));
    assert_eq!((f.meta.uid, f.meta.gid), (4_294_967_294, 100_000));
    let xn: Vec<&[u8]> = f.xattrs.iter().map(|x| x.0.as_slice()).collect();
    assert_eq!(
        xn,
        [
            &b"security.selinux"[..],
            b"system.posix_acl_access",
            b"user.bin"
        ]
    );
    assert_eq!(f.xattrs[2].1, b"a\nb\0c");
    assert!(find(&t.root, &("e/".repeat(70) + "gnu")).meta.atime.sec == 1_000_000);
    assert!(matches!(
        find(&t.root, "c").kind,
        Kind::CharDev { major: 0, minor: 0 }
    ));
    match &find(&t.root, "l").kind {
        Kind::Symlink { target } => assert_eq!(target.len(), 300),
        k => panic!("{k:?}"),
    }
}

#[test]
fn plain_files_are_read_in_place_compressed_ones_spooled() {
    let mut a = Ar::new();
    a.file("f", b"in place");
    let plain = a.end();
    let d = tmp();
    let t = read_file(d.path(), "p.tar", &plain).unwrap();
    let Kind::File {
        data: Data::Spool { offset, .. },
        ..
    } = find(&t.root, "f").kind
    else {
        panic!()
    };
    assert_eq!(offset, 512, "points into the archive");
    assert_eq!(
        t.spool(0).unwrap().metadata().unwrap().len(),
        plain.len() as u64
    );
    let t = read_file(d.path(), "p.tgz", &gzip(&plain)).unwrap();
    assert_eq!(content(&t, find(&t.root, "f")), b"in place");
    let Kind::File {
        data: Data::Spool { offset, .. },
        ..
    } = find(&t.root, "f").kind
    else {
        panic!()
    };
    assert_eq!(offset, 0, "copied into the spool");
    // Only the archives are left: the spool is unlinked.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
}

/// GNU tar's sparse formats (PAX 1.0 and the old GNU header): holes stay holes in the spool, and
/// a plain archive with a sparse member is read again into a spool.
#[test]
fn gnu_tar_sparse_files() {
    let d = tmp();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.write_all_at(b"middle", 3 << 20).unwrap();
    f.write_all_at(b"end", (8 << 20) - 3).unwrap();
    std::fs::write(src.join("dense"), b"dense").unwrap();
    for (format, version) in [
        ("posix", "1.0"),
        ("posix", "0.1"),
        ("posix", "0.0"),
        ("gnu", ""),
    ] {
        let ar = d.path().join(format!("{format}{version}.tar"));
        let mut args = vec!["-S".to_string(), format!("--format={format}")];
        if !version.is_empty() {
            args.push(format!("--sparse-version={version}"));
        }
        let st = std::process::Command::new("tar")
            .args(&args)
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&ar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let mut calls = 0;
        let t = read_archive(ArchiveInput::Path(ar), d.path(), OPTS, &mut || calls += 1).unwrap();
        let format = format!("{format} {version}");
        assert_eq!(calls, 3, "{format}: progress once per member");
        let e = find(&t.root, "sparse");
        let Kind::File {
            size,
            layout: Layout::Sparse(r),
            ..
        } = &e.kind
        else {
            panic!("{format}: {:?}", e.kind)
        };
        assert_eq!(*size, 8 << 20);
        assert!(
            r.iter().map(|(a, b)| b - a).sum::<u64>() <= 64 << 10,
            "{format}: {r:?}"
        );
        let c = content(&t, e);
        assert_eq!(&c[3 << 20..(3 << 20) + 6], b"middle");
        assert_eq!(&c[c.len() - 3..], b"end");
        assert_eq!(c.iter().filter(|&&b| b != 0).count(), 9);
        assert_eq!(content(&t, find(&t.root, "dense")), b"dense");
        assert_eq!(find(&t.root, "sparse").meta.nlink, 1);
    }
}

/// Stdin, in a child process of this test binary: a redirected file is read in place, a pipe
/// (gzip-compressed here) is spooled.
#[test]
fn stdin_file_in_place_and_pipe_spooled() {
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};
    const CHILD: &str = "LDMK_TAR_STDIN_CHILD";
    let me = "source::tar::tests::stdin_file_in_place_and_pipe_spooled";
    if let Some(dir) = std::env::var_os(CHILD) {
        let t = read_archive(ArchiveInput::Stdin, Path::new(&dir), OPTS, &mut || {}).unwrap();
        let spool = t.spool(0).unwrap().metadata().unwrap().ino();
        let stdin = std::fs::metadata("/proc/self/fd/0").unwrap().ino();
        let f = content(&t, find(&t.root, "f"));
        println!("CHILD {} {}", spool == stdin, String::from_utf8_lossy(&f));
        return;
    }
    let mut a = Ar::new();
    a.file("f", b"via-stdin");
    let d = tmp();
    let plain = d.path().join("s.tar");
    std::fs::write(&plain, a.end()).unwrap();
    let child = |stdin: Stdio, input: Option<Vec<u8>>| {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([me, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, d.path())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = input {
            c.stdin.take().unwrap().write_all(&bytes).unwrap();
        }
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        out.lines()
            .find_map(|l| l.split_once("CHILD ").map(|(_, r)| r.to_owned()))
            .unwrap_or_else(|| panic!("no CHILD line in {out}"))
    };
    let file = std::fs::File::open(&plain).unwrap();
    assert_eq!(child(Stdio::from(file), None), "true via-stdin");
    assert_eq!(
        child(Stdio::piped(), Some(gzip(&a.end()))),
        "false via-stdin"
    );
}
