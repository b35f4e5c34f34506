//! Tar input end to end: the full test tree archived by GNU tar (PAX, xattrs, ACLs, sparse
//! files), plain and gzip/xz/bzip2/zstd-compressed, read from a file and from a stream, gives an
//! image whose kernel mount equals the source tree (less what tar cannot carry, see
//! `support::tar_diffs`); hostile and damaged archives fail with one line naming the entry and
//! leave nothing behind (no image, no spool file); a sparse member with a 200,000-entry map is
//! read (its map text once, not once per block: hole 3 of issue 9).

mod support;

use std::path::{Path, PathBuf};

use crate::common::*;
use support::*;

/// The full tree and its plain archive, in a fresh temp dir.
fn tree_and_tar() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, src) = temp_source(build_full_tree);
    let tar = tmp.path().join("x.tar");
    make_tar(&src, &tar);
    (tmp, src, tar)
}

/// Builds the image from `archive` (via a file or a FIFO), checks it with e2fsck, mounts it and
/// compares it with `src`; the spool directory must be empty afterwards.
fn assert_image_equals_tree(tmp: &Path, src: &Path, archive: &Path, via: Via) {
    let spool = tmp.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let out = tmp.join("disk.img");
    let _ = std::fs::remove_file(&out);
    if let Err(e) = build_from_archive(archive, via, &spool, &out) {
        panic!("{} via {via:?}: {e}", archive.display());
    }
    assert!(dir_names(&spool).is_empty(), "spool file left behind");
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&out, PART_OFFSET);
    assert_no_diffs(
        &tar_diffs(src, mnt.path()),
        &format!("image from {} via {via:?}", archive.display()),
    );
}

#[test]
fn plain_tar_file_gives_the_source_tree() {
    let (tmp, src, tar) = tree_and_tar();
    assert_image_equals_tree(tmp.path(), &src, &tar, Via::File);
}

/// Without sparse members, an uncompressed archive file is its own spool: file data is read
/// from where it lies in the archive (the full tree's sparse files make the reader copy).
#[test]
fn uncompressed_archive_file_is_read_in_place() {
    use std::os::unix::fs::MetadataExt;
    let (tmp, src) = temp_source(build_small_tree);
    let tar = tmp.path().join("small.tar");
    make_tar(&src, &tar);
    let tree = linuxdisk_mk::source::read_archive(
        linuxdisk_mk::source::ArchiveInput::Path(tar.clone()),
        tmp.path(),
        linuxdisk_mk::source::tar::Options { block: 4096 },
        &mut || {},
    )
    .unwrap();
    let spool = tree.spool(0).unwrap().metadata().unwrap();
    assert_eq!(spool.ino(), std::fs::metadata(&tar).unwrap().ino());
    drop(tree);
    assert_image_equals_tree(tmp.path(), &src, &tar, Via::File);
}

#[test]
fn plain_tar_stream_gives_the_source_tree() {
    let (tmp, src, tar) = tree_and_tar();
    assert_image_equals_tree(tmp.path(), &src, &tar, Via::Fifo);
}

/// The full tree's archive compressed with `prog` (to `.ext`) and read `via` each way.
fn compressed_tar_gives_the_source_tree(prog: &str, ext: &str, vias: &[Via]) {
    let (tmp, src, tar) = tree_and_tar();
    let compressed = compress(&tar, prog, ext);
    for &via in vias {
        assert_image_equals_tree(tmp.path(), &src, &compressed, via);
    }
}

#[test]
fn gzip_tar_file_and_stream_give_the_source_tree() {
    compressed_tar_gives_the_source_tree("gzip", "gz", &[Via::File, Via::Fifo]);
}

#[test]
fn xz_tar_gives_the_source_tree() {
    compressed_tar_gives_the_source_tree("xz", "xz", &[Via::File]);
}

#[test]
fn zstd_tar_gives_the_source_tree() {
    compressed_tar_gives_the_source_tree("zstd", "zst", &[Via::Fifo]);
}

#[test]
fn bzip2_tar_gives_the_source_tree() {
    compressed_tar_gives_the_source_tree("bzip2", "bz2", &[Via::File]);
}

/// The build fails with one line that mentions every string of `mentions`, and leaves neither
/// an image nor a spool file.
fn assert_refused(tmp: &Path, archive: &Path, via: Via, mentions: &[&str]) {
    let spool = tmp.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let out = tmp.join("refused.img");
    let e = build_from_archive(archive, via, &spool, &out)
        .err()
        .unwrap_or_else(|| panic!("{} via {via:?} was accepted", archive.display()));
    assert!(!e.contains('\n'), "not one line: {e}");
    for m in mentions {
        assert!(e.contains(m), "{e:?} does not mention {m:?}");
    }
    assert!(!out.exists(), "an image was left: {e}");
    assert!(dir_names(&spool).is_empty(), "a spool file was left: {e}");
    let stray: Vec<_> = dir_names(tmp)
        .into_iter()
        .filter(|n| n.to_string_lossy().contains("refused"))
        .collect();
    assert!(stray.is_empty(), "left beside the image: {stray:?}");
}

const HOSTILE: &str = r#"
import io, sys, tarfile
kind = sys.argv[1].rsplit('/', 1)[1].split('.')[0]
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:
    def add(name, data=b'x', **kw):
        i = tarfile.TarInfo(name)
        for k, v in kw.items():
            setattr(i, k, v)
        i.size = len(data) if i.type == tarfile.REGTYPE else 0
        t.addfile(i, io.BytesIO(data) if i.type == tarfile.REGTYPE else None)
    add('fine', b'ok')
    if kind == 'dotdot':
        add('../escaped')
    elif kind == 'inner':
        add('a/b/../../../escaped')
    elif kind == 'absolute':
        add('/etc/passwd-evil')
    elif kind == 'missinglink':
        add('link', type=tarfile.LNKTYPE, linkname='not/here')
    elif kind == 'linkout':
        add('link', type=tarfile.LNKTYPE, linkname='../../etc/shadow')
    elif kind == 'viasymlink':
        add('s', type=tarfile.SYMTYPE, linkname='/etc')
        add('s/cron.d/evil')
"#;

#[test]
fn hostile_archives_are_refused_naming_the_entry() {
    let tmp = tempdir();
    for (kind, mentions) in [
        (
            "dotdot",
            &["entry '../escaped'", "leaves the archive root"][..],
        ),
        (
            "inner",
            &["entry 'a/b/../../../escaped'", "leaves the archive root"],
        ),
        (
            "absolute",
            &["entry '/etc/passwd-evil'", "leaves the archive root"],
        ),
        ("missinglink", &["entry 'link'", "'not/here'"]),
        ("linkout", &["entry 'link'", "leaves the archive root"]),
        (
            "viasymlink",
            &["entry 's/cron.d/evil'", "'s' is not a directory"],
        ),
    ] {
        let ar = tmp.path().join(format!("{kind}.tar"));
        python(HOSTILE, &ar);
        assert_refused(tmp.path(), &ar, Via::File, mentions);
        assert_refused(tmp.path(), &ar, Via::Fifo, mentions);
    }
}

#[test]
fn truncated_and_corrupt_archives_are_refused() {
    let (tmp, src) = temp_source(build_small_tree);
    let tar = tmp.path().join("small.tar");
    make_tar(&src, &tar);
    let len = std::fs::metadata(&tar).unwrap().len();
    let bytes = std::fs::read(&tar).unwrap();
    // A cut inside a file's data, inside a header, on a block boundary, and the archive without
    // its end-of-archive blocks (head -c).
    let cuts = [len / 2 + 7, 512 + 100, len / 2 / 512 * 512, len - 10240];
    for (i, cut) in cuts.into_iter().enumerate() {
        let t = tmp.path().join(format!("cut{i}.tar"));
        let f = std::fs::File::create(&t).unwrap();
        let st = std::process::Command::new("head")
            .args(["-c", &cut.to_string()])
            .arg(&tar)
            .stdout(f)
            .status()
            .unwrap();
        assert!(st.success());
        assert_refused(tmp.path(), &t, Via::File, &["cut", "truncated"]);
    }
    // A compressed archive cut short: the decoder's error, whatever the tar part looks like.
    let gz = compress(&tar, "gzip", "gz");
    let z = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &z[..z.len() - 8]).unwrap();
    assert_refused(tmp.path(), &gz, Via::Fifo, &["gzip data"]);
    // A header with a flipped byte.
    let mut bad = bytes.clone();
    bad[3] ^= 0x40;
    let b = tmp.path().join("corrupt.tar");
    std::fs::write(&b, &bad).unwrap();
    assert_refused(tmp.path(), &b, Via::File, &["corrupt.tar", "checksum"]);
    // Not an archive at all.
    let n = tmp.path().join("notatar.tar");
    std::fs::write(&n, b"hello, this is text\n".repeat(100)).unwrap();
    assert_refused(tmp.path(), &n, Via::File, &["not a tar archive"]);
}

/// Writes sys.argv[1]: a PAX 1.0 sparse member (GNU tar's `--sparse --format=posix` layout)
/// named `sparse`, whose 200,000-entry map gives one data byte at every even offset, byte i
/// being i % 251 + 1: 1.7 MB of map text before the data.
const SPARSE_MAP_200K: &str = r#"
import io, sys, tarfile
n = 200000
text = ("%d\n" % n + "".join("%d\n1\n" % (2 * i) for i in range(n))).encode()
text += b"\0" * (-len(text) % 512)
data = bytes(i % 251 + 1 for i in range(n))
ti = tarfile.TarInfo("GNUSparseFile.0/sparse")
ti.size = len(text) + len(data)
ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                  "GNU.sparse.name": "sparse", "GNU.sparse.realsize": str(2 * n)}
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    t.addfile(ti, io.BytesIO(text + data))
"#;

#[test]
fn a_sparse_member_with_a_200000_entry_map_is_read() {
    let tmp = tempdir();
    let tar = tmp.path().join("sparse.tar");
    python(SPARSE_MAP_200K, &tar);
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let out = tmp.path().join("disk.img");
    build_from_archive(&tar, Via::File, &spool, &out).unwrap_or_else(|e| panic!("{e}"));
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&out, PART_OFFSET);
    let got = std::fs::read(mnt.path().join("sparse")).unwrap();
    let want: Vec<u8> = (0..400_000u32)
        .map(|o| {
            if o % 2 == 0 {
                (o / 2 % 251 + 1) as u8
            } else {
                0
            }
        })
        .collect();
    assert!(got == want, "the sparse file's bytes differ from its map");
}
