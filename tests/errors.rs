//! Failures and safety: every bad input of the issue exits 1 (runtime error: exactly one line on
//! stderr naming the path and the cause) or 2 (usage error), leaves no file at OUTPUT and nothing
//! (no temp file either) in OUTPUT's directory. An existing OUTPUT is untouched without `-f` and
//! replaced with it; a full disk, an unreadable source (run as an unprivileged user, or left out
//! with --skip-unreadable) and SIGINT/SIGTERM at any moment clean up (an old OUTPUT stays as it
//! was, or once renamed into place the new one is whole, and the next run works); a FIFO in the
//! source is never opened. The signals come while the build is held (through fanotify,
//! `common::opens`) at a known point: SOURCE opened, a directory opened mid-scan, the first file
//! copied, the last file read, OUTPUT's directory opened after the rename.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::opens::{Gate, Watch};
use crate::common::*;

/// A temp dir with a small source tree `src` and an empty output directory `out`.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, src) = temp_source(build_small_tree);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (tmp, src, out)
}

fn args(extra: &[&str], src: &Path, out: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = extra.iter().map(OsString::from).collect();
    a.extend([src.as_os_str().to_owned(), out.as_os_str().to_owned()]);
    a
}

fn assert_empty_dir(dir: &Path, run: &Run) {
    let left = dir_names(dir);
    assert!(
        left.is_empty(),
        "left in {}: {left:?}\n{}",
        dir.display(),
        run.describe()
    );
}

/// Asserts that `run` (of the options `what`) failed with one of `codes`, said why, and left
/// `out` empty.
fn assert_refused(run: &Run, codes: &[i32], what: &str, out: &Path) {
    assert!(
        run.code().is_some_and(|c| codes.contains(&c)),
        "{what} must fail with exit {codes:?}\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.trim().is_empty(),
        "{what}: no error message\n{}",
        run.describe()
    );
    assert_empty_dir(out, run);
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn missing_source_exits_1_and_names_the_path() {
    let (tmp, _, out) = setup();
    let src = tmp.path().join("no-such-dir");
    let run = run_bin(args(&[], &src, &out.join("disk.img")));
    run.assert_one_line_error(&["no-such-dir"]);
    assert_empty_dir(&out, &run);
}

#[test]
fn source_that_is_a_regular_file_exits_1_and_names_the_path() {
    let (tmp, _, out) = setup();
    let src = tmp.path().join("plain-file");
    std::fs::write(&src, b"not a directory").unwrap();
    let run = run_bin(args(&[], &src, &out.join("disk.img")));
    run.assert_one_line_error(&["plain-file"]);
    assert_empty_dir(&out, &run);
}

/// Runs the binary as nobody (65534) on a source holding a readable file and `bad`, an entry that
/// `make_bad` makes unreadable for nobody; returns the run and the (empty) output directory.
fn run_as_nobody(bad: &str, make_bad: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf, Run) {
    run_as_nobody_with(&[], |src| make_bad(&src.join(bad)))
}

/// [`run_as_nobody`] with options `extra`; `make_bad` is given the source directory.
fn run_as_nobody_with(
    extra: &[&str],
    make_bad: impl FnOnce(&Path),
) -> (tempfile::TempDir, PathBuf, Run) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(src.join("readable-dir")).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(src.join("readable-dir/ok.txt"), b"anyone may read this").unwrap();
    make_bad(&src);
    for d in [tmp.path(), &src] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let run = run_cmd_timeout(
        as_nobody(),
        args(extra, &src, &out.join("disk.img")),
        Duration::from_secs(120),
    );
    (tmp, out, run)
}

#[test]
fn unreadable_source_file_exits_1_and_names_it_when_run_unprivileged() {
    let (_tmp, out, run) = run_as_nobody("secret-file", |p| {
        std::fs::write(p, b"root only").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    });
    run.assert_one_line_error(&["secret-file"]);
    assert_empty_dir(&out, &run);
}

#[test]
fn unreadable_source_directory_exits_1_and_names_it_when_run_unprivileged() {
    let (_tmp, out, run) = run_as_nobody("private-dir", |p| {
        std::fs::create_dir(p).unwrap();
        std::fs::write(p.join("inside"), b"x").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    });
    run.assert_one_line_error(&["private-dir"]);
    assert_empty_dir(&out, &run);
}

#[test]
fn skip_unreadable_leaves_out_what_cannot_be_read_with_a_warning_each() {
    let (_tmp, out, run) = run_as_nobody_with(&["--skip-unreadable"], |src| {
        let f = src.join("secret-file");
        std::fs::write(&f, b"root only").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = src.join("private-dir");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("inside"), b"x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Listable but not searchable: its entries cannot be examined.
        let n = src.join("no-search");
        std::fs::create_dir(&n).unwrap();
        std::fs::write(n.join("inside"), b"x").unwrap();
        std::fs::set_permissions(&n, std::fs::Permissions::from_mode(0o744)).unwrap();
    });
    run.assert_ok();
    for name in ["secret-file", "private-dir", "no-search"] {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains("warning") && l.contains(name) && l.contains("skipped")),
            "no warning for {name}\n{}",
            run.describe()
        );
    }
    let img = out.join("disk.img");
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    let m = mount_image(&img, PART_OFFSET);
    assert_eq!(
        dir_names(m.path()),
        ["lost+found", "readable-dir"].map(OsString::from).into()
    );
    assert_eq!(
        std::fs::read(m.path().join("readable-dir/ok.txt")).unwrap(),
        b"anyone may read this"
    );
}

#[test]
fn source_readable_by_an_unprivileged_user_builds() {
    let (_tmp, out, run) = run_as_nobody("also-readable", |p| std::fs::write(p, b"fine").unwrap());
    run.assert_ok();
    let img = out.join("disk.img");
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
}

#[test]
fn existing_output_without_force_is_an_error_and_left_untouched() {
    let (_tmp, src, out) = setup();
    let img = out.join("disk.img");
    let old = entries::Rng::new(99).bytes(100_000);
    std::fs::write(&img, &old).unwrap();
    let t = filetime(&img);
    let run = run_bin(args(&[], &src, &img));
    run.assert_one_line_error(&["disk.img"]);
    assert_eq!(
        std::fs::read(&img).unwrap(),
        old,
        "existing OUTPUT was modified\n{}",
        run.describe()
    );
    assert_eq!(filetime(&img), t, "existing OUTPUT's mtime changed");
    let left: Vec<OsString> = dir_names(&out).into_iter().collect();
    assert_eq!(
        left,
        ["disk.img"],
        "temp files left beside OUTPUT\n{}",
        run.describe()
    );
}

fn filetime(p: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

#[test]
fn force_replaces_an_existing_output() {
    let (_tmp, src, out) = setup();
    let img = out.join("disk.img");
    std::fs::write(&img, vec![0xEEu8; 3 << 20]).unwrap();
    run_bin(args(&["-f"], &src, &img)).assert_ok();
    check_gpt(&img);
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
    assert_image_holds(&img, PART_OFFSET, &src, "-f replacement");
    let left: Vec<OsString> = dir_names(&out).into_iter().collect();
    assert_eq!(left, ["disk.img"], "temp files left beside OUTPUT");
}

#[test]
fn missing_output_directory_exits_1_and_names_it() {
    let (_tmp, src, out) = setup();
    let img = out.join("no-such-subdir").join("disk.img");
    let run = run_bin(args(&[], &src, &img));
    run.assert_one_line_error(&["no-such-subdir"]);
    assert_empty_dir(&out, &run);
}

#[test]
fn output_that_is_a_directory_exits_1_and_stays() {
    let (_tmp, src, out) = setup();
    let target = out.join("a-directory");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"keep me").unwrap();
    let run = run_bin(args(&[], &src, &target));
    run.assert_one_line_error(&["a-directory"]);
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"keep me");
    let left: Vec<OsString> = dir_names(&out).into_iter().collect();
    assert_eq!(
        left,
        ["a-directory"],
        "temp files left beside OUTPUT\n{}",
        run.describe()
    );
}

#[test]
fn label_longer_than_16_bytes_is_rejected_without_output() {
    let (_tmp, src, out) = setup();
    // 17 ASCII bytes; and 9 characters that are 18 bytes (the limit is bytes, not characters).
    for label in ["abcdefghijklmnopq", "ééééééééé"] {
        let img = out.join("disk.img");
        let run = run_bin(args(&["-L", label], &src, &img));
        let what = format!("-L {label:?} ({} bytes)", label.len());
        assert_refused(&run, &[1, 2], &what, &out);
    }
}

#[test]
fn bad_option_values_and_arguments_are_usage_errors() {
    let (_tmp, src, out) = setup();
    let img = out.join("disk.img");
    let cases: &[&[&str]] = &[
        &["--type", "ext5"],
        &["-t", "xfs"],
        &["--block-size", "512"],
        &["--block-size", "8192"],
        &["--partition", "mbr"],
        &["--size", "12Q"],
        &["--size", "abc"],
        &["--size", "+"],
        &["--size", ""],
        &["--no-such-option"],
    ];
    for extra in cases {
        let run = run_bin(args(extra, &src, &img));
        assert_refused(&run, &[2], &format!("{extra:?}"), &out);
    }
    for argv in [vec![], vec![src.as_os_str()]] {
        let run = run_bin(&argv);
        assert_eq!(
            run.code(),
            Some(2),
            "missing arguments must exit 2\n{}",
            run.describe()
        );
    }
    let extra = [OsStr::new("extra-arg")];
    let run = run_bin([src.as_os_str(), img.as_os_str()].iter().chain(&extra));
    assert_eq!(
        run.code(),
        Some(2),
        "a third argument must exit 2\n{}",
        run.describe()
    );
    assert_empty_dir(&out, &run);
}

#[test]
fn disk_full_exits_1_says_no_space_and_leaves_nothing() {
    let (_tmp, src) = temp_source(|s| build_sized_tree(s, 20, 20 * MIB));
    let full = TmpfsMount::new("2M");
    let img = full.path().join("disk.img");
    let run = run_bin(args(&[], &src, &img));
    run.assert_one_line_error(&[]);
    assert!(
        run.stderr.to_lowercase().contains("space"),
        "the error does not say the disk is full (no space)\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains(&show(&img)) && !run.stderr.contains(".tmp"),
        "the error does not name OUTPUT (but a temp file)\n{}",
        run.describe()
    );
    assert_empty_dir(full.path(), &run);
}

#[test]
fn fifo_in_source_is_not_opened() {
    let (_tmp, src, out) = setup();
    let fifo = src.join("a-fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let watch = Watch::opens(&fifo);
    let img = out.join("disk.img");
    let run = run_bin(args(&[], &src, &img));
    run.assert_ok();
    assert!(
        !watch.opened(),
        "the FIFO in the source was opened during the build\n{}",
        run.describe()
    );
    // Control: the watch does see an open.
    let _r = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    assert!(watch.opened(), "the watch missed an open of the FIFO");
    let mnt = mount_image(&img, PART_OFFSET);
    let ft = std::fs::symlink_metadata(mnt.path().join("a-fifo"))
        .expect("FIFO missing from the image")
        .file_type();
    assert!(ft.is_fifo(), "a-fifo is not a FIFO in the image: {ft:?}");
}

/// How far a held build has got.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Scanning SOURCE: nothing written yet.
    Scanning,
    /// Copying into its temp file beside OUTPUT.
    Copying,
    /// OUTPUT renamed into place; its directory being synced.
    Renamed,
}

/// Where a build is held while it is sent a signal: a [`Gate`] on `path` (in the test's temp
/// dir) holding its opens, or with `reads` its reads.
struct Moment {
    what: &'static str,
    path: &'static str,
    reads: bool,
    phase: Phase,
}

const MOMENTS: &[Moment] = &[
    Moment {
        what: "as the scan opens SOURCE",
        path: "src",
        reads: false,
        phase: Phase::Scanning,
    },
    Moment {
        what: "halfway through the scan",
        path: "src/d05",
        reads: false,
        phase: Phase::Scanning,
    },
    Moment {
        what: "as the copy opens its first file",
        path: "src/d00/file0000",
        reads: false,
        phase: Phase::Copying,
    },
    Moment {
        what: "as the copy reads its last file",
        path: "src/d09/file0199",
        reads: true,
        phase: Phase::Copying,
    },
    Moment {
        what: "once OUTPUT is renamed into place",
        path: "out",
        reads: false,
        phase: Phase::Renamed,
    },
];

#[test]
fn sigint_or_sigterm_at_any_moment_leaves_the_old_output_or_the_whole_new_one() {
    use rustix::process::{kill_process, Pid, Signal};
    let (tmp, src) = temp_source(|s| build_sized_tree(s, 200, 60 * MIB));
    let out = tmp.path().join("out");
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::create_dir(&out).unwrap();
    let img = out.join("disk.img");
    let old = b"the previous image".to_vec();
    for m in MOMENTS {
        for sig in [Signal::INT, Signal::TERM] {
            let when = format!("{sig:?} {}", m.what);
            std::fs::write(&img, &old).unwrap();
            let path = tmp.path().join(m.path);
            let gate = match m.reads {
                true => Gate::reads(&path),
                false => Gate::opens(&path),
            };
            let mut child = Command::new(BIN)
                .args(args(&["-f", "-q"], &src, &img))
                .env("TMPDIR", &scratch)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = Lines::of(child.stderr.take().unwrap());
            let held = gate.wait_for(child.id());
            // Held where the moment says: a temp file beside OUTPUT only while copying, the
            // new image in place once renamed.
            let beside = dir_names(&out).len();
            let replaced = std::fs::read(&img).unwrap() != old;
            assert_eq!(
                (beside, replaced),
                (
                    1 + (m.phase == Phase::Copying) as usize,
                    m.phase == Phase::Renamed
                ),
                "{when}: held with {:?} in OUTPUT's directory",
                dir_names(&out)
            );
            kill_process(Pid::from_child(&child), sig).unwrap();
            let status = child.wait().unwrap();
            drop(held);
            drop(gate);
            assert_eq!(
                status.code(),
                Some(128 + sig.as_raw()),
                "{when}: {status}; stderr: {:?}",
                stderr.all()
            );
            let left = dir_names(&out);
            assert_eq!(
                left,
                [OsString::from("disk.img")].into(),
                "{when}: OUTPUT's directory holds {left:?}"
            );
            assert!(
                dir_names(&scratch).is_empty(),
                "{when}: TMPDIR holds {:?}",
                dir_names(&scratch)
            );
            match m.phase {
                Phase::Renamed => with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean),
                _ => assert_eq!(
                    std::fs::read(&img).unwrap(),
                    old,
                    "{when}: the old OUTPUT was changed"
                ),
            }
        }
    }
    // A second run after the interrupted ones works.
    run_bin(args(&["-f", "-q"], &src, &img)).assert_ok();
    with_fs_device(&img, PART_OFFSET, assert_e2fsck_clean);
}

#[test]
fn bad_listener_options_fail_before_building() {
    let (dir, src) = temp_source(build_small_tree);
    let sock = dir.path().join("taken.sock");
    std::fs::write(&sock, b"").unwrap();
    run_bin([
        "--serve",
        "--socket",
        sock.to_str().unwrap(),
        src.to_str().unwrap(),
    ])
    .assert_one_line_error(&["taken.sock", "exists"]);
    run_bin(["--serve", "--tcp", "::1:10809", src.to_str().unwrap()])
        .assert_one_line_error(&["--tcp"]);
}

#[test]
fn read_only_output_directory_is_one_clear_error() {
    let (_dir, src) = temp_source(build_small_tree);
    let ro = TmpfsMount::new("1M");
    tool_ok("mount", ["-o", "remount,ro", ro.path().to_str().unwrap()]);
    let out = ro.path().join("x.img");
    run_bin([src.to_str().unwrap(), out.to_str().unwrap()])
        .assert_one_line_error(&[ro.path().to_str().unwrap()]);
    assert!(dir_names(ro.path()).is_empty());
}

#[test]
fn tar_spool_follows_tmpdir_on_another_filesystem() {
    let (dir, src) = temp_source(build_small_tree);
    let tar = dir.path().join("x.tar.gz");
    tar_c(&src, &tar, &["-z"]);
    let spool = TmpfsMount::new("64M");
    let out = dir.path().join("x.img");
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("TMPDIR", spool.path());
    run_cmd_timeout(
        cmd,
        ["-q", tar.to_str().unwrap(), out.to_str().unwrap()],
        std::time::Duration::from_secs(120),
    )
    .assert_ok();
    assert!(dir_names(spool.path()).is_empty(), "spool left in TMPDIR");
    // A TMPDIR that does not exist: one line naming it, no output.
    let out2 = dir.path().join("y.img");
    let mut cmd = std::process::Command::new(BIN);
    cmd.env("TMPDIR", "/nonexistent-tmpdir");
    run_cmd_timeout(
        cmd,
        [tar.to_str().unwrap(), out2.to_str().unwrap()],
        std::time::Duration::from_secs(60),
    )
    .assert_one_line_error(&["/nonexistent-tmpdir"]);
    assert!(!out2.exists());
}
