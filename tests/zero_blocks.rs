//! All-zero blocks become holes: in files read from a tar archive (always: their bytes pass
//! through the reader), at the filesystem's block size and aligned to the file's own offsets;
//! in a directory's files with `--sparse` (holes they already have are kept either way). The
//! image then stores no more than `mke2fs -d` does, auto-size counts only stored blocks, the
//! content reads back the same through a kernel mount, NBD block status reports the holes, and
//! `--lazy` serves the same bytes as the written disk. The real case: /var/log/lastlog in a
//! `docker export` stream.

use std::ffi::OsString;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::entries::*;
use crate::common::nbd::{nbd_map, ServerGuard};
use crate::common::*;

const EPOCH: &str = "1700000000";

/// `tar -C dir -cf out .`, without --sparse: zeros stored as data, as `docker export` does.
fn dense_tar(dir: &Path, out: &Path) {
    tool_ok(
        "tar",
        [
            "--format=posix".into(),
            "--numeric-owner".into(),
            OsString::from("-C"),
            dir.into(),
            "-cf".into(),
            out.into(),
            ".".into(),
        ],
    );
}

fn build(args: &[OsString]) -> Run {
    run_bin_timeout(args, Duration::from_secs(300))
}

/// [`build`] under SOURCE_DATE_EPOCH (reproducible: to compare disks byte for byte).
fn build_reproducible(args: &[OsString]) -> Run {
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    run_cmd_timeout(cmd, args, Duration::from_secs(300))
}

fn args(a: &[&str], paths: &[&Path]) -> Vec<OsString> {
    let mut v: Vec<OsString> = a.iter().map(OsString::from).collect();
    v.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
    v
}

/// `filefrag`'s count of extents of a file.
fn extents(path: &Path) -> u64 {
    let out = tool_ok("filefrag", [path]);
    let n = out
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    n.unwrap_or_else(|| panic!("filefrag said {out:?}"))
}

/// A tree of 100 MiB of zeros and a small file, and its tar.
fn zeros_tree(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    mkdir(&src, b"data");
    let f = std::fs::File::create(src.join("data/zeros")).unwrap();
    f.write_all_at(&vec![0u8; 100 << 20], 0).unwrap();
    write(&src, b"data/small", b"not zero\n");
    set_times(&src);
    let tar = dir.join("src.tar");
    dense_tar(&src, &tar);
    (src, tar)
}

#[test]
fn a_tar_of_100_mib_of_zeros_stores_no_more_than_mke2fs_d() {
    let tmp = tempdir();
    let (src, tar) = zeros_tree(tmp.path());
    let img = tmp.path().join("d.img");
    build(&args(&["-q"], &[&tar, &img])).assert_ok();
    let ours = with_fs_device(&img, PART_OFFSET, |dev| {
        assert_e2fsck_clean(dev);
        FsInfo::read(dev)
    });
    // The size chosen counts only the blocks stored: 16 MiB for users and a little more.
    assert!(
        ours.size_bytes() < 32 * MIB,
        "a {}-byte filesystem for 100 MiB of zeros",
        ours.size_bytes()
    );
    // mke2fs -d of the same tree, given the same size, stores as many blocks (or more).
    let theirs = tmp.path().join("mke2fs.img");
    mke2fs_d(&src, &theirs, "ext2", &ours.size_bytes().to_string());
    let used = |i: &FsInfo| i.num("Block count") - i.num("Free blocks");
    let theirs = FsInfo::read(&theirs);
    assert!(
        used(&ours) <= used(&theirs),
        "{} blocks used here, {} by mke2fs -d",
        used(&ours),
        used(&theirs)
    );
    assert!(
        allocated(&img) < 4 * MIB,
        "{} bytes allocated",
        allocated(&img)
    );
    let mnt = mount_image(&img, PART_OFFSET);
    let z = mnt.path().join("data/zeros");
    assert_eq!((allocated(&z), extents(&z)), (0, 0));
    assert_no_diffs(&compare_trees(&src, mnt.path()), "100 MiB of zeros");
}

#[test]
fn zero_blocks_are_the_filesystems_blocks_at_the_files_offsets() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    mkdir(&src, b"");
    // 1 KiB blocks 0, 3 and 5 hold data (4 KiB blocks 0 and 1), block 40 one byte at its end.
    // (On ext4: its few extents fit in the inode, so only data blocks are allocated.)
    let mut data = vec![0u8; 64 << 10];
    for k in [0usize, 3, 5] {
        data[k * 1024 + 100] = k as u8 + 1;
    }
    data[41 * 1024 - 1] = 9;
    write(&src, b"mixed", &data);
    set_times(&src);
    let tar = tmp.path().join("src.tar");
    dense_tar(&src, &tar);
    for (bs, want) in [("1024", 4 * 1024), ("4096", 3 * 4096)] {
        let img = tmp.path().join(format!("{bs}.img"));
        build(&args(
            &["-q", "-t", "ext4", "--block-size", bs],
            &[&tar, &img],
        ))
        .assert_ok();
        with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
        let mnt = mount_image(&img, PART_OFFSET);
        assert_eq!(
            allocated(&mnt.path().join("mixed")),
            want,
            "--block-size {bs}"
        );
        assert_no_diffs(&compare_trees(&src, mnt.path()), bs);
    }
}

#[test]
fn lastlog_in_a_docker_export_stream_is_stored_sparse() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    mkdir(&src, b"var/log");
    // lastlog: a 292-byte record per uid, at uid × 292; root's and nobody's written.
    let f = std::fs::File::create(src.join("var/log/lastlog")).unwrap();
    let mut rec = vec![0u8; 292];
    rec[..4].copy_from_slice(&1_700_000_000u32.to_le_bytes());
    rec[4..9].copy_from_slice(b"ttyS0");
    f.write_all_at(&rec, 0).unwrap();
    f.write_all_at(&rec, 65534 * 292).unwrap();
    set_times(&src);
    let tar = tmp.path().join("export.tar");
    dense_tar(&src, &tar);
    assert!(
        std::fs::metadata(&tar).unwrap().len() > 65534 * 292,
        "stored dense"
    );
    let img = tmp.path().join("d.img");
    let stdin = std::fs::File::open(&tar).unwrap();
    let cmd = std::process::Command::new(BIN);
    let a = args(&["-q", "-t", "ext4", "-"], &[&img]);
    run_cmd_with_stdin(cmd, &a, stdin.into(), Duration::from_secs(300)).assert_ok();
    let mnt = mount_image(&img, PART_OFFSET);
    let l = mnt.path().join("var/log/lastlog");
    assert_eq!(std::fs::metadata(&l).unwrap().size(), 65535 * 292);
    assert_eq!(
        allocated(&l),
        2 * 4096,
        "two blocks of records, the rest holes"
    );
    assert_no_diffs(&compare_trees(&src, mnt.path()), "lastlog");
}

#[test]
fn directories_keep_their_holes_and_lose_zero_blocks_with_sparse() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    mkdir(&src, b"");
    let f = std::fs::File::create(src.join("dense_zeros")).unwrap();
    f.write_all_at(&vec![0u8; 4 << 20], 0).unwrap();
    let f = std::fs::File::create(src.join("holey")).unwrap();
    f.write_all_at(b"tail after a hole", 8 << 20).unwrap();
    let mut mixed = vec![0u8; 1 << 20];
    mixed[1 << 19] = 1;
    write(&src, b"mixed", &mixed);
    set_times(&src);
    for (opt, dense, mixed_blocks) in [(None, 4 << 20, 1 << 20), (Some("--sparse"), 0, 4096)] {
        let img = tmp.path().join("d.img");
        let mut a = vec!["-q", "-f", "-t", "ext4"];
        a.extend(opt);
        build(&args(&a, &[&src, &img])).assert_ok();
        let mnt = mount_image(&img, PART_OFFSET);
        let m = mnt.path();
        assert_eq!(allocated(&m.join("dense_zeros")), dense, "{opt:?}");
        assert_eq!(allocated(&m.join("mixed")), mixed_blocks, "{opt:?}");
        assert!(allocated(&m.join("holey")) <= 8192, "{opt:?}: holes kept");
        assert_no_diffs(&compare_trees(&src, m), &format!("{opt:?}"));
    }
}

#[test]
fn block_status_and_lazy_reads_agree_with_the_holes() {
    let tmp = tempdir();
    let (_src, tar) = zeros_tree(tmp.path());
    let opts = ["-q", "-t", "ext4", "--size", "200M"];
    let img = tmp.path().join("written.img");
    build_reproducible(&args(&opts, &[&tar, &img])).assert_ok();
    // Served: block status says the 100 MiB are not data.
    let sock = tmp.path().join("s.sock");
    let mut a: Vec<OsString> = opts.iter().map(OsString::from).collect();
    a.extend(["--socket".into(), sock.clone().into(), tar.clone().into()]);
    let server = ServerGuard::start(&a);
    let data: u64 = nbd_map(server.uri())
        .iter()
        .filter(|e| e.flags & 1 == 0)
        .map(|e| e.len)
        .sum();
    assert!(data < 8 * MIB, "{data} bytes of data in block status");
    drop(server);
    // Served lazily: the same bytes as the written disk.
    let served = tmp.path().join("served.img");
    let mut a: Vec<OsString> = vec!["--serve".into(), "--lazy".into()];
    a.extend(opts.iter().map(OsString::from));
    a.extend([
        "--run".into(),
        format!("nbdcopy \"$uri\" '{}'", served.display()).into(),
        tar.into(),
    ]);
    build_reproducible(&a).assert_ok();
    assert!(std::fs::read(&served).unwrap() == std::fs::read(&img).unwrap());
}
