//! `--serve --lazy` with a SOURCE changed under it by someone else (hole 1 of issue 9): a client
//! may read only bytes that were in SOURCE when it was scanned. SOURCE is resolved once — a
//! symlink repointed to another tree whose file has the same inode number, size and mtime leads
//! nowhere new; a file rewritten in place with its mtime put back, or an archive rewritten under
//! the server, gives EIO and one warning naming it (the change time tells); a tree with many
//! more directories and files than the server keeps open is served whole with a bounded number
//! of descriptors. The same holds for a directory given with `--add`.
//!
//! Root only (tmpfs mounts, fanotify); never skips. See tests/common/nbd.rs.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::nbd::*;
use crate::common::opens::Gate;
use crate::common::*;

const EPOCH: &str = "1700000000";

/// `--serve --lazy -t ext4 SOURCE` with `--run SCRIPT` and SOURCE_DATE_EPOCH, bounded.
fn serve_lazily(source: &Path, script: &str) -> Run {
    serve_lazily_with(&[], source, script)
}

/// [`serve_lazily`] with more options.
fn serve_lazily_with(more: &[&OsStr], source: &Path, script: &str) -> Run {
    let mut cmd = Command::new(server_bin());
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    let mut args: Vec<&OsStr> = ["--serve", "--lazy", "-t", "ext4", "--run", script]
        .map(OsStr::new)
        .to_vec();
    args.extend(more);
    args.push(source.as_os_str());
    run_cmd_timeout(cmd, args, Duration::from_secs(300))
}

/// A `--run` script: copy the served disk (works), run python `change` on the file `p` then put
/// its access and modification times back, copy again: that copy must fail with EIO (exit 0
/// when it does; 10 to 13 say which step went otherwise).
fn copy_change_copy(tmp: &Path, p: &Path, change: &str) -> String {
    format!(
        "nbdcopy \"$uri\" '{first}' || exit 10
         /usr/bin/python3 -c 'import os, sys
p = sys.argv[1]; st = os.stat(p)
{change}
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))' '{p}' || exit 11
         if nbdcopy \"$uri\" '{second}' 2>'{err}'; then exit 12; fi
         grep -q 'Input/output error' '{err}' || exit 13",
        first = tmp.join("first.img").display(),
        second = tmp.join("second.img").display(),
        err = tmp.join("err").display(),
        p = p.display(),
    )
}

/// Whether `disk` holds a 4 KiB block of `byte` (file data is block-aligned on the disk).
fn holds_block_of(disk: &[u8], byte: u8) -> bool {
    disk.chunks(4096).any(|c| c.iter().all(|&b| b == byte))
}

/// The same tree in `root`: directory `d` and file `d/secret`, 8 KiB of `byte`, modified in
/// 2001. Made in the same order on fresh tmpfs mounts, the files get the same inode numbers.
fn same_shape_tree(root: &Path, byte: u8) -> PathBuf {
    std::fs::create_dir(root.join("d")).unwrap();
    let f = root.join("d/secret");
    std::fs::write(&f, vec![byte; 8192]).unwrap();
    entries::set_entry_times(&f, (1_000_000_000, 0), (1_000_000_000, 0));
    f
}

#[test]
fn a_repointed_source_symlink_never_serves_the_other_tree() {
    repointed_symlink_never_serves_the_other_tree(false);
}

#[test]
fn a_repointed_add_symlink_never_serves_the_other_tree() {
    repointed_symlink_never_serves_the_other_tree(true);
}

/// SOURCE (or, with `as_add`, an `--add` SRC beside a plain SOURCE) is a symlink to tmpfs A,
/// repointed to tmpfs B while the server reads A's file after the scan: B's bytes (a file of
/// the same inode number, size and mtime) must never be served.
fn repointed_symlink_never_serves_the_other_tree(as_add: bool) {
    require_tools(&["nbdcopy"]);
    let tmp = tempdir();
    let (a, b) = (TmpfsMount::new("16M"), TmpfsMount::new("16M"));
    let fa = same_shape_tree(a.path(), b'A');
    let fb = same_shape_tree(b.path(), b'B');
    std::fs::set_permissions(&fb, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let id = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.size(), m.mtime(), m.mtime_nsec())
    };
    assert_eq!(
        id(&fa),
        id(&fb),
        "the attack needs the same inode, size and mtime"
    );
    let source = tmp.path().join("source");
    std::os::unix::fs::symlink(a.path(), &source).unwrap();
    let copy = tmp.path().join("served.img");
    // With SOURCE_DATE_EPOCH the files are read for the digest after the scan, before the disk
    // is built: the server is held in that open of A's file while SOURCE is repointed to B.
    let gate = Gate::opens(&fa);
    let mut cmd = Command::new(server_bin());
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["--serve", "--lazy", "--run"])
        .arg(format!("nbdcopy \"$uri\" '{}'", copy.display()));
    if as_add {
        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("readme"), b"SOURCE itself").unwrap();
        cmd.arg("--add").arg(&source).arg(&plain);
    } else {
        cmd.arg(&source);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(child.stderr.take().unwrap());
    let held = gate.wait_for(child.id());
    let next = tmp.path().join("source.new");
    std::os::unix::fs::symlink(b.path(), &next).unwrap();
    std::fs::rename(&next, &source).unwrap();
    drop(held);
    drop(gate);
    let status = wait_timeout(&mut child, Duration::from_secs(300));
    let said = lines.all();
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the server did not finish: {said:#?}")
    });
    let served = std::fs::read(&copy).unwrap();
    assert!(
        !holds_block_of(&served, b'B'),
        "the served disk holds the other tree's file: {said:#?}"
    );
    assert!(status.success(), "{status}: {said:#?}");
    assert!(
        holds_block_of(&served, b'A'),
        "the scanned file's bytes are missing: {said:#?}"
    );
}

#[test]
fn a_file_rewritten_in_place_with_its_mtime_put_back_gives_eio() {
    require_tools(&["nbdcopy"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), entries::Rng::new(9).bytes(1 << 20)).unwrap();
    std::fs::write(src.join("other"), b"unchanged").unwrap();
    // Overwrite 4 KiB of `big` in place and put its times back (same inode, size and mtime).
    let script = copy_change_copy(tmp.path(), &src.join("big"), REWRITE_4K);
    let r = serve_lazily(&src, &script);
    assert_eio_and_one_warning_naming(&r, &src.join("big"));
}

/// Python for [`copy_change_copy`]: overwrite the first 4 KiB of file `p` in place.
const REWRITE_4K: &str = "with open(p, \"r+b\") as f: f.write(b\"X\" * 4096)";

/// The `--run` script of [`copy_change_copy`] saw EIO, and the server named `file` in one
/// warning.
fn assert_eio_and_one_warning_naming(r: &Run, file: &Path) {
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("changed since the disk was built"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains(&file.display().to_string()),
        "want one warning naming the file: {}",
        r.describe()
    );
}

#[test]
fn a_file_of_an_added_directory_rewritten_in_place_gives_eio() {
    require_tools(&["nbdcopy"]);
    let tmp = tempdir();
    let (src, add) = (tmp.path().join("src"), tmp.path().join("add"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&add).unwrap();
    std::fs::write(src.join("other"), b"unchanged").unwrap();
    std::fs::write(add.join("big"), entries::Rng::new(9).bytes(1 << 20)).unwrap();
    let script = copy_change_copy(tmp.path(), &add.join("big"), REWRITE_4K);
    let dest = format!("{}:/opt/added", add.display());
    let r = serve_lazily_with(&["--add".as_ref(), dest.as_ref()], &src, &script);
    assert_eio_and_one_warning_naming(&r, &add.join("big"));
}

#[test]
fn an_archive_rewritten_in_place_while_served_gives_eio() {
    require_tools(&["nbdcopy", "tar"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![b'a'; 256 << 10]).unwrap();
    let tar = tmp.path().join("src.tar");
    let t = tar.to_str().unwrap();
    tool_ok("tar", ["-C", src.to_str().unwrap(), "-cf", t, "."]);
    // An uncompressed archive is served from where its files' bytes lie in it: overwrite 4 KiB
    // of them in place and put the archive's times back.
    let script = copy_change_copy(
        tmp.path(),
        &tar,
        "with open(p, \"r+b\") as f:
    at = f.read().find(b\"a\" * 4096); f.seek(at); f.write(b\"X\" * 4096)",
    );
    let r = serve_lazily(&tar, &script);
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("changed since the disk was built") && l.contains(t)),
        "no warning naming the archive: {}",
        r.describe()
    );
}

#[test]
fn a_tree_of_many_directories_is_served_whole_with_few_descriptors() {
    require_tools(&["nbdcopy", "cmp"]);
    let tmp = tempdir();
    let src = tmp.path().join("src");
    // 300 directories side by side and a chain 300 deep, a file in each: more than the server
    // keeps open (64 directories, 256 files), so directories are reopened from the root.
    for i in 0..300 {
        let d = src.join(format!("wide/{i:03}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), format!("wide {i}\n").repeat(500)).unwrap();
    }
    let mut d = src.join("deep");
    for i in 0..300 {
        d = d.join("d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), format!("deep {i}\n").repeat(500)).unwrap();
    }
    let written = tmp.path().join("written.img");
    let mut cmd = Command::new(BIN);
    cmd.env("SOURCE_DATE_EPOCH", EPOCH);
    let args = [
        "-q".as_ref(),
        "-t".as_ref(),
        "ext4".as_ref(),
        src.as_os_str(),
        written.as_os_str(),
    ];
    run_cmd_timeout(cmd, args, Duration::from_secs(300)).assert_ok();
    let (served, count) = (tmp.path().join("served.img"), tmp.path().join("fds"));
    // Twice, so that the second pass finds every directory closed again; then the server's
    // descriptors are counted ($PPID: the server runs `sh -c SCRIPT`).
    let script = format!(
        "nbdcopy \"$uri\" '{served}' && nbdcopy \"$uri\" '{served}' &&
         ls /proc/$PPID/fd | wc -l > '{count}'",
        served = served.display(),
        count = count.display(),
    );
    serve_lazily(&src, &script).assert_ok();
    let same = tool("cmp", [written.as_os_str(), served.as_os_str()]);
    assert_eq!(same.code, Some(0), "the served disk differs: {}", same.out);
    let fds: usize = std::fs::read_to_string(&count)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(fds < 64 + 256 + 32, "the server holds {fds} descriptors");
}
