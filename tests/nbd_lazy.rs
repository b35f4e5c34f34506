//! `--serve --lazy`: file data is read from SOURCE when asked for, never copied. The served disk
//! is byte-identical to the image written from the same tree (SOURCE_DATE_EPOCH makes both
//! reproducible), for a directory (every kind of entry, a path longer than PATH_MAX) and for a
//! tar archive; a source file changed while served makes reads of its data fail with EIO (the
//! server names the file on stderr) while the rest of the disk stays readable; `--lazy` without
//! `--serve` is refused.
//!
//! Root only; never skips. See tests/common/nbd.rs.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::*;

const EPOCH: &str = "1700000000";

/// Runs the binary with SOURCE_DATE_EPOCH set, bounded.
fn run_with_epoch(args: &[&OsStr]) -> Run {
    let mut cmd = Command::new(server_bin());
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    run_cmd_timeout(cmd, args, Duration::from_secs(300))
}

/// Writes SRC's image, serves SRC lazily and copies the served disk with nbdcopy; the two files
/// must be equal, and the copy must pass sgdisk and e2fsck.
fn assert_lazy_disk_equals_image(src: &Path, dir: &Path) {
    let (written, served) = (dir.join("written.img"), dir.join("served.img"));
    run_with_epoch(&[
        "-q".as_ref(),
        "-t".as_ref(),
        "ext4".as_ref(),
        src.as_os_str(),
        written.as_os_str(),
    ])
    .assert_ok();
    let cmd = format!("nbdcopy --connections=4 \"$uri\" '{}'", served.display());
    run_with_epoch(&[
        "--serve".as_ref(),
        "--lazy".as_ref(),
        "-q".as_ref(),
        "-t".as_ref(),
        "ext4".as_ref(),
        "--run".as_ref(),
        cmd.as_ref(),
        src.as_os_str(),
    ])
    .assert_ok();
    let same = tool("cmp", [written.as_os_str(), served.as_os_str()]);
    assert_eq!(
        same.code,
        Some(0),
        "the lazily served disk differs from the written image: {}",
        same.out
    );
    check_gpt(&served);
    with_fs_device(&served, PART_OFFSET, assert_e2fsck_clean);
}

#[test]
fn lazily_served_tree_is_the_written_image() {
    require_tools(&["nbdcopy", "sgdisk", "e2fsck", "cmp"]);
    let (tmp, src) = temp_source(build_full_tree);
    assert_lazy_disk_equals_image(&src, tmp.path());
}

#[test]
fn lazily_served_tar_is_the_written_image() {
    require_tools(&["nbdcopy", "sgdisk", "e2fsck", "cmp", "tar"]);
    let (tmp, src) = temp_source(|s| build_sized_tree(s, 40, 12 << 20));
    let tar = tmp.path().join("src.tar");
    tar_c(&src, &tar, &["--sparse"]);
    assert_lazy_disk_equals_image(&tar, tmp.path());
}

#[test]
fn a_file_changed_while_served_gives_eio_and_the_rest_stays_readable() {
    require_tools(&["nbdcopy", "nbdinfo"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), entries::Rng::new(7).bytes(6 << 20)).unwrap();
    std::fs::write(src.join("other"), b"unchanged").unwrap();
    let out = tmp.path().join("copy.img");
    // Copy once (works), grow the file, copy again (must fail), then read the GPT header.
    let script = format!(
        "nbdcopy \"$uri\" '{out}' || exit 10
         printf more >> '{big}'
         if nbdcopy \"$uri\" '{out}.2' 2>'{err}'; then exit 11; fi
         grep -q 'Input/output error' '{err}' || exit 12
         /usr/bin/python3 -c 'import nbd, os, sys
h = nbd.NBD(); h.connect_uri(os.environ[\"uri\"])
sys.exit(0 if h.pread(512, 512)[:8] == b\"EFI PART\" else 13)' || exit 13
         nbdinfo --size \"$uri\" >/dev/null || exit 14",
        out = out.display(),
        big = src.join("big").display(),
        err = tmp.path().join("err").display(),
    );
    let r = run_cmd_timeout(
        Command::new(server_bin()),
        [
            "--serve",
            "--lazy",
            "-t",
            "ext4",
            "--run",
            &script,
            src.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let warning = r
        .stderr
        .lines()
        .find(|l| l.contains("changed since the disk was built"))
        .unwrap_or_else(|| panic!("no warning naming the file: {}", r.describe()));
    assert!(
        warning.contains("big") && warning.contains(&format!("{} bytes", 6 << 20)),
        "{warning}"
    );
}

#[test]
fn lazy_needs_serve() {
    let tmp = tempdir();
    let run = run_bin([
        OsStr::new("--lazy"),
        tmp.path().as_os_str(),
        tmp.path().join("x.img").as_os_str(),
    ]);
    // A usage error, as clap reports them: status 2.
    run.assert_code(2);
    assert!(
        run.stderr.contains("--lazy needs --serve"),
        "{}",
        run.describe()
    );
    assert!(!tmp.path().join("x.img").exists());
}
