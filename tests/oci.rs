//! Container images as SOURCE: an OCI image layout directory, an OCI archive and a `docker
//! save` archive (made by skopeo) of the same image give the same disk, as do gzip and zstd
//! layers; its layers are applied
//! with the OCI whiteouts, opaque directories, hard links to lower layers and entries replaced
//! by another type, exactly as `umoci unpack` (an unpacker we did not write) extracts them,
//! compared entry by entry through a kernel mount; `--platform` picks from a multi-platform
//! index; a missing or corrupt blob, or a hostile image, is one clear error; an ordinary user
//! can build one.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::common::oci::{gzip_file, tar_of_dir, Compression, Layout, TarWriter, META};
use crate::common::*;

/// SOURCE_DATE_EPOCH for builds compared byte for byte.
const EPOCH: &str = "1700000000";

/// The full tree (less its path longer than PATH_MAX) in `dir/tree`, as a layer tar.
fn full_tree_layer(dir: &Path) -> Vec<u8> {
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).unwrap();
    build_full_tree_with(
        &tree,
        &FullTree {
            long_path: false,
            ..FullTree::default()
        },
    );
    tar_of_dir(&tree)
}

/// The three-layer image of the tests (the full tree, then [`layers`]) as a layout in
/// `dir/NAME`, layer 2 compressed as `c2` (umoci 0.4 and docker archives take no zstd).
fn full_image(dir: &Path, name: &str, l1: &[u8], c2: Compression) -> Layout {
    let layout = Layout::new(&dir.join(name));
    let l1 = layout.layer(l1, Compression::Gzip);
    let (l2, l3) = layers();
    let l2 = layout.layer(&l2, c2);
    let l3 = layout.layer(&l3, Compression::None);
    let m = layout.image(&[l1, l2, l3], "linux/amd64");
    layout.index(&[m]);
    layout
}

/// Where umoci 0.4 (Debian 12's) does not give what the layers hold, and the image does: it
/// drops these extended attributes ("ignoring forbidden xattr") and those with an empty value
/// (Go's tar reader takes an empty PAX record as a deletion), and it cannot set a time past
/// 2262 (Go's nanosecond times overflow).
fn umoci_misses(diff: &str) -> bool {
    ["security.selinux", "trusted.overlay.opaque", "user.empty"]
        .iter()
        .any(|x| diff.ends_with(&format!("xattr {x} in the image but not in the source")))
        || diff.starts_with("/times/y2400: ")
}

/// Layers 2 and 3 over the full tree: whiteouts (of a file, of a whole directory, of a lower
/// layer's hard link), an opaque directory with entries of its own layer on both sides of its
/// marker, a hard link to a file of layer 1, a file replaced by a directory and a directory by
/// a file, and a file of mostly zero blocks.
fn layers() -> (Vec<u8>, Vec<u8>) {
    let mut mixed = vec![0u8; 1 << 20];
    mixed[5000] = 1;
    mixed[700_000..700_100].fill(7);
    let mut l2 = TarWriter::default();
    l2.whiteout("files/", "small")
        .file(
            "nest/before_marker",
            META,
            b"same layer, before the marker\n",
        )
        .opaque("nest/")
        .dir("nest/a/", META)
        .file("nest/a/after_marker", META, b"same layer, after\n")
        .hardlink("hard/to_layer1", "files/odd_5000")
        .dir("modes/m0777/", META)
        .file("modes/m0777/inside", META, b"a file became a directory\n")
        .file("links", META, b"a directory became a file\n")
        .dir("zeros/", META)
        .file("zeros/mixed", META, &mixed)
        .symlink("zeros/link", "mixed");
    let mut l3 = TarWriter::default();
    l3.whiteout("", "owners")
        .whiteout("hard/", "to_layer1")
        .file("hard/new", META, b"layer 3\n");
    (l2.finish(), l3.finish())
}

fn build(env: &[(&str, &str)], args: &[&Path], opts: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut all: Vec<OsString> = opts.iter().map(OsString::from).collect();
    all.extend(args.iter().map(|p| p.as_os_str().to_owned()));
    run_cmd_timeout(cmd, &all, std::time::Duration::from_secs(600))
}

#[test]
fn image_layers_give_what_umoci_unpack_gives() {
    let tmp = tempdir();
    let l1 = full_tree_layer(tmp.path());
    let layout = full_image(tmp.path(), "layout", &l1, Compression::Gzip);
    let rootfs = layout.umoci_unpack(&tmp.path().join("bundle"));
    let img = tmp.path().join("disk.img");
    build(&[], &[&layout.dir, &img], &["-q", "-t", "ext4"]).assert_ok();
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let mnt = mount_image(&img, PART_OFFSET);
    // What the layers did, seen in the image itself (and so in umoci's rootfs too).
    let m = mnt.path();
    assert!(!m.join("files/small").exists() && !m.join("owners").exists());
    assert_eq!(dir_names(&m.join("nest")), names(&["a", "before_marker"]));
    assert_eq!(dir_names(&m.join("nest/a")), names(&["after_marker"]));
    assert!(m.join("modes/m0777/inside").is_file() && m.join("links").is_file());
    assert!(!m.join("hard/to_layer1").exists() && m.join("hard/new").is_file());
    assert!(
        allocated(&m.join("zeros/mixed")) <= 3 * 4096,
        "zero blocks of a layer's file are holes"
    );
    let diffs: Vec<String> = compare_trees(&rootfs, m)
        .into_iter()
        .filter(|d| !umoci_misses(d))
        .collect();
    assert_no_diffs(&diffs, "image vs umoci unpack");
}

fn names(n: &[&str]) -> std::collections::BTreeSet<OsString> {
    n.iter().map(OsString::from).collect()
}

#[test]
fn layout_oci_archive_docker_archive_and_streams_give_the_same_disk() {
    let tmp = tempdir();
    let l1 = full_tree_layer(tmp.path());
    let layout = full_image(tmp.path(), "layout", &l1, Compression::Gzip);
    let zstd = full_image(tmp.path(), "zstd", &l1, Compression::Zstd);
    let oci_tar = tmp.path().join("image.oci.tar");
    layout.archive(&oci_tar);
    let docker_tar = tmp.path().join("image.docker.tar");
    layout.docker_archive(&docker_tar);
    let gz = gzip_file(&oci_tar);
    let env = [("SOURCE_DATE_EPOCH", EPOCH)];
    let mut images = Vec::new();
    for (what, src) in [
        ("layout", &layout.dir),
        ("OCI archive", &oci_tar),
        ("docker archive", &docker_tar),
        ("gzipped OCI archive", &gz),
        ("layout with a zstd layer", &zstd.dir),
    ] {
        let img = tmp.path().join(format!("{}.img", images.len()));
        let r = build(&env, &[src, &img], &["-q", "-t", "ext4"]);
        assert_eq!(r.code(), Some(0), "{what}:\n{}", r.describe());
        images.push((what, img));
    }
    // The docker archive as a stream on stdin.
    let img = tmp.path().join("stdin.img");
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    let stdin = std::fs::File::open(&docker_tar).unwrap();
    let args = [
        OsString::from("-q"),
        "-t".into(),
        "ext4".into(),
        "-".into(),
        img.clone().into(),
    ];
    run_cmd_with_stdin(
        cmd,
        &args,
        stdin.into(),
        std::time::Duration::from_secs(600),
    )
    .assert_ok();
    images.push(("docker archive on stdin", img));
    let first = std::fs::read(&images[0].1).unwrap();
    for (what, img) in &images[1..] {
        assert!(
            std::fs::read(img).unwrap() == first,
            "the disk from the {what} differs from the layout's"
        );
    }
}

/// A one-layer image holding `/which` = `text`.
fn tiny_image(layout: &Layout, text: &str, platform: &str) -> serde_json::Value {
    let mut t = TarWriter::default();
    t.file("which", META, text.as_bytes());
    let l = layout.layer(&t.finish(), Compression::Gzip);
    layout.image(&[l], platform)
}

fn which(img: &Path) -> String {
    let mnt = mount_image(img, PART_OFFSET);
    std::fs::read_to_string(mnt.path().join("which")).unwrap()
}

#[test]
fn platform_picks_the_image_from_a_multi_platform_index() {
    let tmp = tempdir();
    let flat = Layout::new(&tmp.path().join("flat"));
    let amd = tiny_image(&flat, "amd64", "linux/amd64");
    let arm = tiny_image(&flat, "arm64", "linux/arm64/v8");
    flat.index(&[arm.clone(), amd.clone()]);
    // The same two behind a nested index, without platforms in the outer one.
    let nested = Layout::new(&tmp.path().join("nested"));
    let amd = tiny_image(&nested, "amd64", "linux/amd64");
    let arm = tiny_image(&nested, "arm64", "linux/arm64/v8");
    let inner = nested.nested_index(&[amd, arm]);
    nested.index(&[inner]);
    for layout in [&flat, &nested] {
        let img = tmp.path().join("d.img");
        build(&[], &[&layout.dir, &img], &["-q", "-f"]).assert_ok();
        assert_eq!(
            which(&img),
            "amd64",
            "the default is this machine's platform"
        );
        build(
            &[],
            &[&layout.dir, &img],
            &["-q", "-f", "--platform", "linux/arm64"],
        )
        .assert_ok();
        assert_eq!(which(&img), "arm64");
        build(
            &[],
            &[&layout.dir, &img],
            &["-q", "-f", "--platform", "linux/arm64/v8"],
        )
        .assert_ok();
        assert_eq!(which(&img), "arm64");
        std::fs::remove_file(&img).unwrap();
        let r = build(
            &[],
            &[&layout.dir, &img],
            &["-q", "--platform", "linux/s390x"],
        );
        r.assert_one_line_error(&["linux/s390x", "linux/amd64", "linux/arm64/v8"]);
        assert!(!img.exists());
    }
}

#[test]
fn a_missing_or_corrupt_blob_is_one_clear_error_and_nothing_is_written() {
    let tmp = tempdir();
    let layout = Layout::new(&tmp.path().join("layout"));
    let mut t = TarWriter::default();
    t.file("f", META, &vec![b'x'; 100_000]);
    let l1 = layout.layer(&t.finish(), Compression::Gzip);
    let mut t = TarWriter::default();
    t.file("g", META, b"second");
    let l2 = layout.layer(&t.finish(), Compression::Zstd);
    let m = layout.image(&[l1.clone(), l2.clone()], "linux/amd64");
    layout.index(&[m]);
    let img = tmp.path().join("d.img");
    build(&[], &[&layout.dir, &img], &["-q"]).assert_ok();
    std::fs::remove_file(&img).unwrap();
    let before = dir_names(tmp.path());
    // One byte changed in layer 2's blob.
    let blob = layout.dir.join(l2.blob.path());
    let good = std::fs::read(&blob).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 5;
    bad[last] ^= 0x40;
    std::fs::write(&blob, &bad).unwrap();
    let r = build(&[], &[&layout.dir, &img], &["-q"]);
    r.assert_one_line_error(&["layer 2 of 2", &l2.blob.digest, "corrupt"]);
    assert_eq!(dir_names(tmp.path()), before, "{}", r.describe());
    // Truncated.
    std::fs::write(&blob, &good[..good.len() - 1]).unwrap();
    let r = build(&[], &[&layout.dir, &img], &["-q"]);
    r.assert_one_line_error(&["layer 2 of 2", &l2.blob.digest]);
    // Missing.
    std::fs::remove_file(&blob).unwrap();
    let r = build(&[], &[&layout.dir, &img], &["-q"]);
    r.assert_one_line_error(&["layer 2 of 2", &l2.blob.digest, "missing"]);
    assert_eq!(dir_names(tmp.path()), before, "{}", r.describe());
    // In an archive too: the OCI archive of a layout whose layer 1 is corrupt.
    std::fs::write(&blob, &good).unwrap();
    let b1 = layout.dir.join(l1.blob.path());
    let mut bad = std::fs::read(&b1).unwrap();
    bad[20] ^= 1;
    std::fs::write(&b1, &bad).unwrap();
    let tar = tmp.path().join("image.tar");
    layout.archive(&tar);
    let r = build(&[], &[&tar, &img], &["-q"]);
    r.assert_one_line_error(&["image.tar", "layer 1 of 2", &l1.blob.digest, "corrupt"]);
    assert!(!img.exists());
}

#[test]
fn an_ordinary_user_builds_a_disk_from_an_image_archive() {
    let tmp = tempdir();
    let layout = Layout::new(&tmp.path().join("layout"));
    let mut t = TarWriter::default();
    let root = META;
    t.dir("dev/", root)
        .file(
            "etc/shadow",
            crate::common::oci::Meta {
                mode: 0o640,
                gid: 42,
                ..root
            },
            b"x",
        )
        .file(
            "usr/bin/su",
            crate::common::oci::Meta {
                mode: 0o4755,
                ..root
            },
            b"#!",
        )
        .file(
            "home/u/f",
            crate::common::oci::Meta {
                uid: 1000,
                gid: 1000,
                ..root
            },
            b"mine",
        );
    let l = layout.layer(&t.finish(), Compression::Gzip);
    let m = layout.image(&[l], "linux/amd64");
    layout.index(&[m]);
    let tar = tmp.path().join("image.tar");
    layout.archive(&tar);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    rustix::fs::chown(&out, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    let img = out.join("d.img");
    let args = [OsString::from("-q"), tar.clone().into(), img.clone().into()];
    let mut cmd = as_nobody();
    cmd.env("TMPDIR", &out);
    run_cmd_timeout(cmd, &args, std::time::Duration::from_secs(300)).assert_ok();
    let mnt = mount_image(&img, PART_OFFSET);
    use std::os::unix::fs::MetadataExt;
    let st = |p: &str| std::fs::symlink_metadata(mnt.path().join(p)).unwrap();
    assert_eq!(
        (
            st("etc/shadow").uid(),
            st("etc/shadow").gid(),
            st("etc/shadow").mode() & 0o7777
        ),
        (0, 42, 0o640)
    );
    assert_eq!(st("usr/bin/su").mode() & 0o7777, 0o4755);
    assert_eq!((st("home/u/f").uid(), st("home/u/f").gid()), (1000, 1000));
}

/// `--add` takes an image too: its layers merged at DEST.
#[test]
fn an_image_is_added_at_a_path() {
    let tmp = tempdir();
    let layout = Layout::new(&tmp.path().join("layout"));
    let amd = tiny_image(&layout, "added image", "linux/amd64");
    layout.index(&[amd]);
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    build_small_tree(&base);
    let img = tmp.path().join("d.img");
    let add: PathBuf = format!("{}:/srv/app", layout.dir.display()).into();
    build(&[], &[&base, &img], &["-q", "--add", add.to_str().unwrap()]).assert_ok();
    let mnt = mount_image(&img, PART_OFFSET);
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("srv/app/which")).unwrap(),
        "added image"
    );
    assert!(mnt.path().join("sub/data.bin").is_file());
}

/// An image's JSON and layers are input like any archive: paths out of the image, a FIFO as a
/// blob, an index that names itself, a layer member leaving the root are each one error naming
/// the problem, and never a hang.
#[test]
fn hostile_images_are_refused_naming_the_problem() {
    let tmp = tempdir();
    let img = tmp.path().join("d.img");
    let refused = |src: &Path, mentions: &[&str]| {
        let args = [OsString::from("-q"), src.into(), img.clone().into()];
        run_bin_timeout(args, std::time::Duration::from_secs(120)).assert_one_line_error(mentions);
        assert!(!img.exists());
    };
    // A docker-save archive whose layer path leaves the archive.
    let d = tmp.path().join("docker");
    std::fs::create_dir(&d).unwrap();
    let diff = format!("sha256:{}", "0".repeat(64));
    std::fs::write(
        d.join("manifest.json"),
        r#"[{"Config":"c.json","Layers":["../../etc/passwd"]}]"#,
    )
    .unwrap();
    std::fs::write(
        d.join("c.json"),
        format!(r#"{{"os":"linux","architecture":"amd64","rootfs":{{"diff_ids":["{diff}"]}}}}"#),
    )
    .unwrap();
    let tar = tmp.path().join("docker.tar");
    tool_ok(
        "tar",
        [
            OsStr::new("-C"),
            d.as_os_str(),
            OsStr::new("-cf"),
            tar.as_os_str(),
            OsStr::new("."),
        ],
    );
    refused(&tar, &["docker.tar", "layer 1 of 1", "../../etc/passwd"]);
    // A layout whose layer blob is a FIFO.
    let layout = Layout::new(&tmp.path().join("fifo"));
    let mut t = TarWriter::default();
    t.file("f", META, b"x");
    let l = layout.layer(&t.finish(), Compression::None);
    let m = layout.image(std::slice::from_ref(&l), "linux/amd64");
    layout.index(&[m]);
    let blob = layout.dir.join(l.blob.path());
    std::fs::remove_file(&blob).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &blob,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    refused(&layout.dir, &["layer 1 of 1", "not a regular file"]);
    // An index that lists itself (through a blob naming the blob's own digest cannot be made;
    // an index.json listing a nested index more deeply than allowed can).
    let deep = Layout::new(&tmp.path().join("deep"));
    let mut d = tiny_image(&deep, "x", "linux/amd64");
    for _ in 0..6 {
        d = deep.nested_index(&[d]);
    }
    deep.index(&[d]);
    refused(&deep.dir, &["nested more than"]);
    // A layer member that leaves the root.
    let evil = Layout::new(&tmp.path().join("evil"));
    let mut t = TarWriter::default();
    t.file("../evil", META, b"x");
    let l = evil.layer(&t.finish(), Compression::Gzip);
    let m = evil.image(&[l], "linux/amd64");
    evil.index(&[m]);
    refused(&evil.dir, &["layer 1 of 1", "'../evil'", ".."]);
}
