//! Exiting without waiting for the temp files' deletion.
//!
//! The disk image served (and the copy-on-write overlay, and a tar stream's spool) are unlinked
//! files in TMPDIR; the kernel deletes each when its last descriptor closes, at our exit.
//! Deleting a 2 GiB file that the kernel has written back takes seconds: the close waits for
//! pages still under writeback and frees every extent, and on a filesystem mounted with
//! `discard` (as this project's machines are) each freed extent is discarded synchronously
//! (`strace -T` showed the last `close` taking 1.3 s; `/proc/PID/stack`:
//! `ext4_evict_inode → ext4_truncate → ext4_free_blocks → blkdev_issue_discard`, and
//! `truncate_inode_pages_range` waiting on writeback). None of it needs to happen before we
//! exit. So, once the server has stopped, each such file gets one more descriptor held by a
//! helper process (`cat`, reading a socket whose other end only we hold, so it ends when we do): our
//! own closes at exit are then not the last ones, and the deletion happens in the helper,
//! after our exit. If the helper cannot start, the files are closed as before, only slower.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

/// Hands every unlinked regular file this process has open to a helper that holds it until
/// after we exit.
pub fn temp_files_after_exit() {
    let files = unlinked_open_files();
    if files.is_empty() {
        return;
    }
    // A socket pair rather than a pipe: the same end of file when we exit.
    let Ok((reader, writer)) = UnixStream::pair() else {
        return;
    };
    // Two files a helper: its stdout and stderr (it writes to neither: its input stays empty).
    for pair in files.chunks(2) {
        let mut pair = pair.iter();
        let (Some(first), Ok(input)) = (pair.next(), reader.try_clone()) else {
            continue;
        };
        let (Ok(out), second) = (first.try_clone(), pair.next().map(File::try_clone)) else {
            continue;
        };
        let err = match second {
            Some(Ok(f)) => Stdio::from(f),
            _ => Stdio::null(),
        };
        let _ = Command::new("cat")
            .stdin(std::os::fd::OwnedFd::from(input))
            .stdout(out)
            .stderr(err)
            .spawn();
    }
    // Our end of the socket stays open until the process exits; then the helpers see end of
    // file and exit, closing the last descriptors.
    std::mem::forget(writer);
}

/// The unlinked regular files among our open descriptors, each opened again (through
/// /proc/self/fd, which reaches the file even though it has no name).
fn unlinked_open_files() -> Vec<File> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    dir.flatten()
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::metadata(&path).ok()?;
            if !meta.is_file() || meta.nlink() != 0 || !seen.insert((meta.dev(), meta.ino())) {
                return None;
            }
            File::open(&path).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unlinked_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let named = File::create(dir.path().join("named")).unwrap();
        let unlinked = tempfile::tempfile_in(dir.path()).unwrap();
        let ino = |f: &File| f.metadata().unwrap().ino();
        let found: Vec<u64> = unlinked_open_files().iter().map(ino).collect();
        assert!(found.contains(&ino(&unlinked)), "{found:?}");
        assert!(!found.contains(&ino(&named)));
    }
}
