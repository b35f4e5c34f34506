//! Write a [`Disk`] to OUTPUT: a sparse temp file beside it, filled region by region (file data
//! copied by [`crate::copy`] where the source has data), synced, then renamed into place.

use std::fs::File;
use std::fs::Permissions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

use crate::cleanup;
use crate::copy::{write_nonzero, RangeCopier};
use crate::disk::{Disk, Source};
use crate::source::live::LiveFile;
use crate::sparse::next_data;

/// Fails early when SOURCE and OUTPUT look typed the other way round: OUTPUT is an existing
/// directory while SOURCE is not one, or SOURCE does not exist while OUTPUT does. (Told "OUTPUT
/// already exists, use --force", a user who swapped them would overwrite their source.)
pub fn check_order(source: &Path, output: &Path) -> anyhow::Result<()> {
    if source.as_os_str() == "-" {
        return Ok(());
    }
    let (src, out) = (std::fs::metadata(source), std::fs::metadata(output));
    let (s, o) = (source.display(), output.display());
    let hint = format!(
        "are the arguments swapped? The order is SOURCE OUTPUT: linuxdisk-mk [OPTIONS] {o} {s}"
    );
    match (src, out) {
        (Ok(src), Ok(out)) if out.is_dir() && !src.is_dir() => {
            bail!("OUTPUT {o} is a directory and SOURCE {s} is not: {hint}")
        }
        (Err(e), Ok(_)) if e.kind() == io::ErrorKind::NotFound => {
            bail!("SOURCE {s} does not exist, but OUTPUT {o} does: {hint}")
        }
        _ => Ok(()),
    }
}

/// Fails early (before any expensive work) if OUTPUT exists and `!force`, or its directory is
/// missing/not writable: one clear error naming the path.
pub fn check_output(output: &Path, force: bool) -> anyhow::Result<()> {
    let shown = output.display();
    match std::fs::symlink_metadata(output) {
        Ok(_) if !force => bail!("{shown} already exists (use --force to overwrite it)"),
        Ok(meta) if meta.is_dir() => bail!("{shown} is a directory"),
        Ok(meta) if meta.file_type().is_block_device() || meta.file_type().is_char_device() => {
            bail!("{shown} is a device: OUTPUT must be a regular file")
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot write {shown}")),
    }
    let dir = parent_dir(output);
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("cannot write {shown}: {} is not a directory", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "cannot write {shown}: directory {} does not exist",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot write {shown}")),
    }
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::access(&dir, access).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {shown}: directory {} is not writable: {}",
            dir.display(),
            io::Error::from(e)
        )
    })
}

/// Writes the disk to a temp file beside OUTPUT and renames it into place: [`Output::create`]
/// then [`Output::finish`].
pub fn write_image(
    disk: &Disk,
    output: &Path,
    force: bool,
    on_bytes: &mut dyn FnMut(u64),
) -> anyhow::Result<()> {
    let mut out = Output::create(output, force, Readers::Anyone)?;
    out.write(disk, on_bytes)?;
    out.commit()
}

/// Who may read OUTPUT: an image grants no more than the tree it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Anyone, as any new file: 0666 less the umask (a replaced OUTPUT keeps its mode).
    Anyone,
    /// Its owner only, because the tree holds what others may not read: 0600 less the umask
    /// (a replaced OUTPUT loses its group and other permissions).
    Owner,
}

/// OUTPUT being made: a sparse temp file beside it (`.NAME.XXXXXX.tmp`), registered with
/// [`cleanup`] for removal on a signal and removed when dropped unfinished. The filesystem can be
/// built straight into it (at the partition offset), so file data is written once. Messages
/// name OUTPUT, never the temp file.
pub struct Output {
    output: PathBuf,
    force: bool,
    file: Arc<File>,
    tmp: TempOutput,
}

impl Output {
    /// Checks OUTPUT (see [`check_output`]) and creates the temp file beside it, readable by
    /// `readers` from the start.
    pub fn create(output: &Path, force: bool, readers: Readers) -> anyhow::Result<Output> {
        check_output(output, force)?;
        let dir = parent_dir(output);
        let name = output
            .file_name()
            .with_context(|| format!("{}: OUTPUT has no file name", output.display()))?;
        // A new image gets 0666 (0600 for a secret tree) minus the umask, like any created
        // file; a replaced one keeps its mode (less group and others' bits for a secret tree).
        let (new_mode, keep) = match readers {
            Readers::Anyone => (0o666, 0o7777),
            Readers::Owner => (0o600, 0o7700),
        };
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .rand_bytes(6)
            .permissions(Permissions::from_mode(new_mode))
            .tempfile_in(&dir)
            .map_err(cleanup::without_temp_path)
            .with_context(|| {
                format!(
                    "cannot write {}: creating a file in {}",
                    output.display(),
                    dir.display()
                )
            })?;
        let (file, path) = tmp.into_parts();
        let file = Arc::new(file);
        // Field order matters: on error the file is deleted first, then unregistered.
        let tmp = TempOutput {
            guard: cleanup::register(path.to_path_buf()),
            path,
            _open: cleanup::hand_over_on_signal(&file),
        };
        if let Ok(old) = std::fs::metadata(output) {
            let mode = Permissions::from_mode(old.permissions().mode() & keep);
            file.set_permissions(mode)
                .with_context(|| format!("writing {}", output.display()))?;
        }
        Ok(Output {
            output: output.to_path_buf(),
            force,
            file,
            tmp,
        })
    }

    /// The temp file, for building the filesystem in place.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Writes `disk` into the temp file, sparse: Bytes regions with pwrite, File regions copied
    /// only where the source has data, except regions that are this very file at the same
    /// offset (already in place); Zero regions stay holes. `on_bytes(n)` reports progress; the
    /// calls add up to `disk.size()`. On an error, dropping `self` removes the temp file.
    pub fn write(&mut self, disk: &Disk, on_bytes: &mut dyn FnMut(u64)) -> anyhow::Result<()> {
        let writing = || format!("writing {}", self.output.display());
        self.file.set_len(disk.size()).with_context(writing)?;
        let mut copier = Copier::new(&self.file);
        copier.write_disk(disk, on_bytes).with_context(writing)?;
        Ok(())
    }

    /// Syncs the written temp file and renames it into place: without `force` with
    /// RENAME_NOREPLACE (an error if OUTPUT appeared meanwhile), with `force` replacing OUTPUT.
    /// On any error the temp file is removed.
    pub fn commit(self) -> anyhow::Result<()> {
        let Output {
            output,
            force,
            file,
            tmp,
        } = self;
        file.sync_all()
            .with_context(|| format!("writing {}", output.display()))?;
        drop(file);

        let TempOutput { path, guard, .. } = tmp;
        guard
            .commit(|| rename_into_place(&path, &output, force))
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                    "cannot write {}: it appeared while the image was being made (use --force \
                     to replace it)",
                    output.display()
                ),
                _ => anyhow::anyhow!(
                    "cannot write {}: moving the finished image into place: {e}",
                    output.display()
                ),
            })?;
        // Renamed: nothing left to delete.
        let _ = path.keep();
        if let Ok(d) = File::open(parent_dir(&output)) {
            // Make the rename durable; failure here does not undo a complete image.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// A temp file being written: deleted when dropped (path first), unregistered after.
struct TempOutput {
    path: tempfile::TempPath,
    guard: cleanup::TempPathGuard,
    /// Handed to a helper on a signal, so that exiting does not wait for its release.
    _open: cleanup::OpenFileGuard,
}

/// The directory OUTPUT goes in.
fn parent_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Renames `tmp` to `output`; without `force`, fails with AlreadyExists if `output` exists.
fn rename_into_place(tmp: &Path, output: &Path, force: bool) -> io::Result<()> {
    if force {
        return std::fs::rename(tmp, output);
    }
    match rustix::fs::renameat_with(CWD, tmp, CWD, output, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: a hard link also refuses to replace.
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            std::fs::hard_link(tmp, output)?;
            std::fs::remove_file(tmp)
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies disk regions into the output file.
struct Copier<'a> {
    out: &'a File,
    ranges: RangeCopier<'a>,
}

impl<'a> Copier<'a> {
    fn new(out: &'a File) -> Copier<'a> {
        Copier {
            out,
            ranges: RangeCopier::new(out),
        }
    }

    fn write_disk(&mut self, disk: &Disk, on_bytes: &mut dyn FnMut(u64)) -> io::Result<()> {
        for region in disk.regions() {
            match &region.source {
                Source::Bytes(bytes, start) => {
                    let data = &bytes[*start..*start + region.len as usize];
                    write_nonzero(self.out, data, region.start)?;
                    on_bytes(region.len);
                }
                Source::File { file, offset }
                    if file.as_raw_fd() == self.out.as_raw_fd() && *offset == region.start =>
                {
                    on_bytes(region.len) // built in place
                }
                Source::File { file, offset } => {
                    self.copy_file(file, *offset, region.start, region.len, on_bytes)?
                }
                Source::Zero => on_bytes(region.len),
                Source::Live { file, offset } => {
                    self.copy_live(file, *offset, region.start, region.len)?;
                    on_bytes(region.len);
                }
            }
        }
        Ok(())
    }

    /// Copies a source file's range (only lazily served disks have these; kept for
    /// completeness, so that any disk can be written).
    fn copy_live(
        &mut self,
        src: &LiveFile,
        src_off: u64,
        dst_off: u64,
        len: u64,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; len.min(4 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            src.read_at(&mut buf[..n], src_off + done)?;
            write_nonzero(self.out, &buf[..n], dst_off + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Copies `len` bytes of `src` at `src_off` to the output at `dst_off`, only where `src`
    /// has data.
    fn copy_file(
        &mut self,
        src: &File,
        src_off: u64,
        dst_off: u64,
        len: u64,
        on_bytes: &mut dyn FnMut(u64),
    ) -> io::Result<()> {
        let end = src_off + len;
        let mut pos = src_off;
        while let Some((data, hole)) = next_data(src, pos, end)? {
            on_bytes(data - pos);
            self.copy_run(src, data, dst_off + (data - src_off), hole - data, on_bytes)?;
            pos = hole;
        }
        on_bytes(end - pos);
        Ok(())
    }

    /// Copies one data run, reporting its length through `on_bytes` as it goes. A source that
    /// ends early reads as zeros: the rest is already a hole.
    fn copy_run(
        &mut self,
        src: &File,
        src_off: u64,
        dst_off: u64,
        len: u64,
        on_bytes: &mut dyn FnMut(u64),
    ) -> io::Result<()> {
        let done = self.ranges.copy(src, src_off, dst_off, len, on_bytes)?;
        on_bytes(len - done);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt::Guids;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;

    /// A sparse 16 MiB filesystem stand-in with data at 0 and at 5 MiB (plus a zero-filled
    /// written block that may be skipped).
    fn fs_file() -> (Arc<File>, u64) {
        let size = 16 * MIB;
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        let a: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 253) as u8).collect();
        f.write_all_at(&a, 0).unwrap();
        f.write_all_at(&[0xC3u8; 5000], 5 * MIB + 123).unwrap();
        f.write_all_at(&[0u8; 65536], 9 * MIB).unwrap();
        (Arc::new(f), size)
    }

    /// The process umask (read from /proc; this process does not change it).
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line[6..].trim(), 8).unwrap()
    }

    fn read_disk(disk: &Disk) -> Vec<u8> {
        let mut v = vec![0u8; disk.size() as usize];
        disk.read_at(&mut v, 0).unwrap();
        v
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn check_written(disk: &Disk, out: &Path) {
        let got = std::fs::read(out).unwrap();
        assert_eq!(got.len() as u64, disk.size());
        assert!(got == read_disk(disk), "content differs from Disk::read_at");
        let meta = std::fs::metadata(out).unwrap();
        assert!(
            meta.blocks() * 512 < disk.size() / 8,
            "not sparse: {} blocks for {} bytes",
            meta.blocks(),
            disk.size()
        );
        assert_eq!(
            cleanup::registered()
                .iter()
                .filter(|p| p.starts_with(out.parent().unwrap()))
                .count(),
            0
        );
    }

    #[test]
    fn writes_bare_and_partitioned_disks() {
        let dir = tempfile::tempdir().unwrap();
        let (fs, size) = fs_file();
        for (name, disk) in [
            ("bare.img", Disk::bare(fs.clone(), size)),
            (
                "gpt.img",
                Disk::partitioned(fs.clone(), size, &Guids::random()),
            ),
        ] {
            let out = dir.path().join(name);
            let mut total = 0;
            write_image(&disk, &out, false, &mut |n| total += n).unwrap();
            assert_eq!(total, disk.size());
            check_written(&disk, &out);
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o666 & !umask());
        }
        assert_eq!(dir_names(dir.path()), ["bare.img", "gpt.img"]);
    }

    #[test]
    fn a_secret_tree_s_image_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::bare(fs_file().0, 16 * MIB);
        let out = dir.path().join("new.img");
        let mut new = Output::create(&out, false, Readers::Owner).unwrap();
        let mode = new.file().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600 & !umask(), "while it is written");
        new.write(&disk, &mut |_| {}).unwrap();
        new.commit().unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600 & !umask());
        // Replacing a 0644 image: group and others lose their access.
        let old = dir.path().join("old.img");
        std::fs::write(&old, b"old").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        let mut replaced = Output::create(&old, true, Readers::Owner).unwrap();
        replaced.write(&disk, &mut |_| {}).unwrap();
        replaced.commit().unwrap();
        let mode = std::fs::metadata(&old).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn fallback_copy_matches() {
        let dir = tempfile::tempdir().unwrap();
        let (fs, size) = fs_file();
        let disk = Disk::partitioned(fs, size, &Guids::random());
        let out_path = dir.path().join("fallback.img");
        let out = File::create(&out_path).unwrap();
        out.set_len(disk.size()).unwrap();
        let mut c = Copier::new(&out);
        c.ranges = RangeCopier::new(&out).without_clone().without_kernel_copy();
        let mut total = 0;
        c.write_disk(&disk, &mut |n| total += n).unwrap();
        assert_eq!(total, disk.size());
        drop(out);
        check_written(&disk, &out_path);
    }

    #[test]
    fn existing_output_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.img");
        std::fs::write(&out, b"precious").unwrap();
        std::fs::set_permissions(&out, Permissions::from_mode(0o640)).unwrap();
        let disk = Disk::bare(fs_file().0, 16 * MIB);
        let err = write_image(&disk, &out, false, &mut |_| {}).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&out.display().to_string()) && msg.contains("exists"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"precious");
        assert_eq!(dir_names(dir.path()), ["out.img"]);

        write_image(&disk, &out, true, &mut |_| {}).unwrap();
        check_written(&disk, &out);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(dir_names(dir.path()), ["out.img"]);
    }

    #[test]
    fn noreplace_rename_refuses_late_output() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let out = dir.path().join("out");
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::write(&out, b"old").unwrap();
        let err = rename_into_place(&tmp, &out, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        rename_into_place(&tmp, &out, true).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert!(!tmp.exists());
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nope").join("out.img");
        let disk = Disk::bare(fs_file().0, 16 * MIB);
        let msg = format!(
            "{:#}",
            write_image(&disk, &out, false, &mut |_| {}).unwrap_err()
        );
        assert!(msg.contains(&out.display().to_string()), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        let msg = format!("{:#}", check_output(dir.path(), true).unwrap_err());
        assert!(msg.contains("is a directory"), "{msg}");
        check_output(&dir.path().join("fresh.img"), false).unwrap();
        check_output(Path::new("relative-name.img"), false).unwrap();
    }
}
