//! Helpers for the tar tests: archives of a tree made with GNU tar (then compressed), hostile
//! ones crafted with python3's tarfile, images built from an archive, and the comparison of
//! such an image with the tree the archive came from.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::common::{compare_trees, tool, tool_ok};

/// GNU tar's options for an archive that carries everything it can: PAX format (nanosecond
/// times, long names, big ids), xattrs of every namespace, ACLs, numeric owners, and holes
/// (`--sparse`; without it a sparse file is stored, and so rebuilt, fully allocated).
pub const TAR_OPTIONS: &[&str] = &[
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
    "--format=posix",
    "--numeric-owner",
    "--sparse",
];

/// `tar TAR_OPTIONS -C src -cf out .`; tar's only complaint may be the socket it skips.
pub fn make_tar(src: &Path, out: &Path) {
    let mut args: Vec<&OsStr> = TAR_OPTIONS.iter().map(OsStr::new).collect();
    args.extend([
        OsStr::new("-C"),
        src.as_os_str(),
        OsStr::new("-cf"),
        out.as_os_str(),
        OsStr::new("."),
    ]);
    let t = tool("tar", &args);
    let unexpected: Vec<&str> = t
        .out
        .lines()
        .filter(|l| !l.contains("socket ignored"))
        .collect();
    assert!(
        t.code == Some(0) && unexpected.is_empty(),
        "tar {args:?} exits {:?}:\n{}",
        t.code,
        t.out
    );
}

/// `prog -c tar > tar.ext` (gzip, xz, bzip2, zstd).
pub fn compress(tar: &Path, prog: &str, ext: &str) -> PathBuf {
    let out = PathBuf::from(format!("{}.{ext}", tar.display()));
    let f = std::fs::File::create(&out).unwrap();
    let st = std::process::Command::new(prog)
        .args(["-c", "-q"])
        .arg(tar)
        .stdout(f)
        .status()
        .unwrap_or_else(|e| panic!("{prog}: {e} (is it installed?)"));
    assert!(st.success(), "{prog} -c {} failed", tar.display());
    out
}

/// How the archive reaches the reader: as a file (seekable), or through a FIFO (a stream, as
/// stdin would be).
#[derive(Clone, Copy, Debug)]
pub enum Via {
    File,
    Fifo,
}

/// Builds an ext4 GPT image at `out` from `archive` with the binary, spooling in `spool_dir`
/// (TMPDIR): `linuxdisk-mk -t ext4 ARCHIVE OUT`, or for [`Via::Fifo`] the archive's bytes
/// through a pipe on stdin (`linuxdisk-mk -t ext4 - OUT`). Err: the binary's error line (it must
/// exit 1).
pub fn build_from_archive(
    archive: &Path,
    via: Via,
    spool_dir: &Path,
    out: &Path,
) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(crate::common::BIN);
    cmd.env("TMPDIR", spool_dir).args(["-q", "-t", "ext4"]);
    match via {
        Via::File => cmd.arg(archive).stdin(Stdio::null()),
        Via::Fifo => cmd.arg("-").stdin(Stdio::piped()),
    };
    cmd.arg(out).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", crate::common::BIN))?;
    if let Some(mut stdin) = child.stdin.take() {
        let src = archive.to_path_buf();
        std::thread::spawn(move || {
            // Fails with EPIPE when the reader stops early: fine.
            let _ = std::io::copy(&mut std::fs::File::open(&src).unwrap(), &mut stdin);
            let _ = stdin.flush();
        });
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&o.stderr).trim_end().to_string();
    match o.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(err
            .strip_prefix("linuxdisk-mk: ")
            .unwrap_or(&err)
            .to_string()),
        other => Err(format!("exit {other:?} (want 0 or 1): {err}")),
    }
}

/// Differences between the source tree and the image built from its archive, less what a tar
/// archive cannot carry: GNU tar does not archive sockets ("socket ignored"), so
/// /special/socket is missing from the image. Everything else must be equal, atimes included
/// (PAX records them with nanoseconds, and the trees' atimes lie in the future so that reading
/// the files for the archive leaves them unchanged); ctime is never compared (see
/// compare_trees), and btime is not visible to it.
pub fn tar_diffs(src: &Path, mnt: &Path) -> Vec<String> {
    compare_trees(src, mnt)
        .into_iter()
        .filter(|d| d != "/special/socket: missing from the image")
        .collect()
}

/// Runs a python3 script with `out` as sys.argv[1] (to craft archives with tarfile).
pub fn python(script: &str, out: &Path) {
    tool_ok(
        "python3",
        [OsStr::new("-c"), OsStr::new(script), out.as_os_str()],
    );
}
