//! What SOURCE or an `--add` SRC is, told by what it holds, and reading it into a tree: a
//! directory (scanned), an OCI image layout directory, a tar archive or tar stream (`-`, a
//! FIFO), an image archive (OCI archive, `docker save`), or — for `--add` only — one file
//! copied as it is (any regular file that is not a tar archive, a device node, a socket).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::oci::{self, ImageOptions};
use super::tar::{self, ArchiveInput};
use super::{scan, scan_one, ScanOptions, Tree};

/// How inputs are read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub scan: ScanOptions,
    pub image: ImageOptions,
}

/// Reads SOURCE: `-` (a tar stream or image archive on stdin), a directory (an OCI image
/// layout, or a tree), or any other file (a tar archive or image archive).
pub fn read_source(path: &Path, opts: &ReadOptions, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    if path.as_os_str() == "-" {
        return archive(ArchiveInput::Stdin, opts, on_entry);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => directory(path, opts, on_entry),
        Ok(_) => archive(ArchiveInput::Path(path.to_path_buf()), opts, on_entry),
        // The scanner says what is wrong, in its words.
        Err(_) => scan(path, opts.scan, on_entry),
    }
}

/// Reads an `--add` SRC: as SOURCE, except that a regular file which is not a tar archive (nor
/// a compressed one), a device node or a socket is one file, named as SRC is.
pub fn read_add(path: &Path, opts: &ReadOptions, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    if path.as_os_str() == "-" {
        return archive(ArchiveInput::Stdin, opts, on_entry);
    }
    let m = std::fs::metadata(path).with_context(|| path.display().to_string())?;
    let ft = m.file_type();
    if ft.is_dir() {
        return directory(path, opts, on_entry);
    }
    if ft.is_fifo() || (ft.is_file() && tar::is_archive(path)) {
        return archive(ArchiveInput::Path(path.to_path_buf()), opts, on_entry);
    }
    // One file: read by name in its (real) parent directory, named in the tree as SRC is.
    let real = std::fs::canonicalize(path).with_context(|| path.display().to_string())?;
    let name = path
        .file_name()
        .or(real.file_name())
        .with_context(|| format!("{}: names no file", path.display()))?;
    scan_one(&real, name.as_encoded_bytes(), opts.scan, on_entry)
}

fn directory(path: &Path, opts: &ReadOptions, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    if oci::is_layout(path) {
        oci::read_layout(path, &opts.image, on_entry)
    } else {
        scan(path, opts.scan, on_entry)
    }
}

fn archive(input: ArchiveInput, opts: &ReadOptions, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    let name = input.name();
    let tree = tar::read_archive(input, &opts.image.tmpdir, opts.image.tar, on_entry)?;
    oci::from_archive(tree, &name, &opts.image, on_entry)
}
