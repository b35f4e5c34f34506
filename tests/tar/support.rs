//! Helpers for the tar tests: archives of a tree made with GNU tar (then compressed), hostile
//! ones crafted with python3's tarfile, images built from an archive, and the comparison of
//! such an image with the tree the archive came from.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use linuxdisk_mk::disk::gpt::{Guids, PARTITION_START};
use linuxdisk_mk::disk::Disk;
use linuxdisk_mk::image::Output;
use linuxdisk_mk::mkfs::{self, fstype::FsType, Options, Target};
use linuxdisk_mk::progress::Progress;
use linuxdisk_mk::source::{read_archive, ArchiveInput};

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

/// Builds an ext4 GPT image at `out` from `archive`, spooling in `spool_dir`, through the
/// library as `linuxdisk-mk -t ext4 ARCHIVE OUT` does. Errors as the binary prints them.
pub fn build_image(archive: &Path, via: Via, spool_dir: &Path, out: &Path) -> Result<(), String> {
    let input = match via {
        Via::File => archive.to_path_buf(),
        Via::Fifo => {
            let fifo = spool_dir.with_extension("fifo");
            let _ = std::fs::remove_file(&fifo);
            tool_ok("mkfifo", [fifo.as_os_str()]);
            let (src, dst) = (archive.to_path_buf(), fifo.clone());
            std::thread::spawn(move || {
                // Fails with EPIPE when the reader stops early: fine.
                if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&dst) {
                    let _ = std::io::copy(&mut std::fs::File::open(&src).unwrap(), &mut w);
                }
            });
            fifo
        }
    };
    let res = (|| {
        let tree = read_archive(ArchiveInput::Path(input.clone()), spool_dir, &mut || {})?;
        let progress = Progress::new(false);
        let output = Output::create(out, false)?;
        let file = output.file().clone();
        let target = Target {
            file: &file,
            offset: PARTITION_START,
            name: output.temp_path(),
        };
        let opts = Options::new(FsType::Ext4);
        let built = mkfs::build(&input, &tree, &opts, &target, &progress, &|_| {})?;
        let disk = Disk::partitioned_at(file, PARTITION_START, built.size, &Guids::random());
        output.finish(&disk, &mut |_| {})
    })();
    if matches!(via, Via::Fifo) {
        let _ = std::fs::remove_file(&input);
    }
    res.map_err(|e| format!("{e:#}"))
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
