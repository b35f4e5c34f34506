//! The directory scanner: walks SOURCE with directory file descriptors (openat/statx relative to
//! the parent, so paths longer than PATH_MAX work), never following symlinks and never opening
//! FIFOs or devices, and builds the [`Tree`] with children sorted by name bytes.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use super::{display, xattr, zeros, Data, Entry, Kind, Layout, Meta, Origin, Tree};
use crate::source::Timestamp;

/// How to scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// A (dev, ino) to leave out: the output file when it lies inside the source.
    pub exclude: Option<(u64, u64)>,
    /// `--skip-unreadable`: leave out, with a warning, files and directories this process
    /// cannot read, instead of failing.
    pub skip_unreadable: bool,
    /// `--sparse`: the filesystem's block size, whose all-zero blocks in files become holes.
    pub sparse: Option<u32>,
}

/// Scans the tree at `root`. `on_entry` is called once per entry (for a progress display).
pub fn scan(root: &Path, opts: ScanOptions, on_entry: &mut dyn FnMut()) -> Result<Tree> {
    let root_path = root;
    let fd = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOTDIR => anyhow::anyhow!("{}: not a directory", root.display()),
        e => anyhow::anyhow!("{}: {}", root.display(), std::io::Error::from(e)),
    })?;
    let st = rfs::statx(&fd, "", AtFlags::EMPTY_PATH, wanted())
        .with_context(|| format!("{}: statx", root.display()))?;
    let mut path = root.as_os_str().as_encoded_bytes().to_vec();
    let mut s = Scanner::new(opts, on_entry);
    let xattrs = xattr::read(&xattr::proc_path(&fd, None), true)
        .with_context(|| format!("{}: reading extended attributes", root.display()))?;
    let children = s.dir(&fd, &mut path)?;
    let root = Entry {
        name: Box::new([]),
        kind: Kind::Dir { children },
        meta: meta(&st),
        xattrs,
    };
    Ok(Tree {
        root,
        origins: vec![Origin::Dir {
            root: root_path.to_path_buf(),
            dest: Vec::new(),
        }],
        entries: s.entries,
        data_bytes: s.data_bytes,
    })
}

/// Scans the one entry `path` (no symlink in it: see [`Origin::File`]) into a tree whose root is
/// that entry, named `name`.
pub fn scan_one(
    path: &Path,
    name: &[u8],
    opts: ScanOptions,
    on_entry: &mut dyn FnMut(),
) -> Result<Tree> {
    let (dir, file) = match (path.parent(), path.file_name()) {
        (Some(d), Some(f)) => (d, f.as_encoded_bytes().to_vec()),
        _ => bail!("{}: not a file", path.display()),
    };
    let fd = rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| dir.display().to_string())?;
    let mut s = Scanner::new(opts, on_entry);
    let mut shown = path.as_os_str().as_encoded_bytes().to_vec();
    let Some(mut root) = s.entry(&fd, file.into(), &mut shown)? else {
        bail!("{}: vanished or unreadable", path.display());
    };
    root.name = name.into();
    Ok(Tree {
        root,
        origins: vec![Origin::File {
            path: path.to_path_buf(),
            dest: Vec::new(),
        }],
        entries: s.entries,
        data_bytes: s.data_bytes,
    })
}

/// The (dev, ino) identity the scanner uses, of an existing file (following symlinks).
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    let st = rfs::statx(rfs::CWD, path, AtFlags::empty(), StatxFlags::BASIC_STATS).ok()?;
    Some((dev_of(&st), st.stx_ino))
}

struct Scanner<'a> {
    exclude: Option<(u64, u64)>,
    skip_unreadable: bool,
    sparse: Option<u32>,
    on_entry: &'a mut dyn FnMut(),
    entries: u64,
    data_bytes: u64,
    /// (dev, ino) of multiply-linked files already counted in data_bytes.
    seen: HashSet<(u64, u64)>,
}

fn wanted() -> StatxFlags {
    StatxFlags::BASIC_STATS | StatxFlags::BTIME
}

fn ts(t: rfs::StatxTimestamp) -> Timestamp {
    Timestamp {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

fn meta(st: &rfs::Statx) -> Meta {
    let btime = if st.stx_mask & StatxFlags::BTIME.bits() != 0 {
        ts(st.stx_btime)
    } else {
        ts(st.stx_mtime)
    };
    Meta {
        perm: st.stx_mode & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        atime: ts(st.stx_atime),
        mtime: ts(st.stx_mtime),
        ctime: ts(st.stx_ctime),
        btime,
        dev: dev_of(st),
        ino: st.stx_ino,
        nlink: st.stx_nlink,
    }
}

fn dev_of(st: &rfs::Statx) -> u64 {
    (st.stx_dev_major as u64) << 32 | st.stx_dev_minor as u64
}

/// Can this process read the entry: open a regular file, list a directory? (Other kinds are
/// never opened.)
fn readable(parent: &OwnedFd, name: &[u8], st: &rfs::Statx) -> rustix::io::Result<()> {
    let flags = match FileType::from_raw_mode(st.stx_mode as u32) {
        FileType::RegularFile => OFlags::NONBLOCK | OFlags::NOCTTY,
        FileType::Directory => OFlags::DIRECTORY,
        _ => return Ok(()),
    };
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
        Mode::empty(),
    )?;
    if flags.contains(OFlags::DIRECTORY) {
        // Listing needs read permission; searching needs execute: try both.
        rfs::Dir::read_from(&fd)?;
        rfs::accessat(&fd, ".", rfs::Access::EXEC_OK, AtFlags::EACCESS)?;
    }
    Ok(())
}

/// Error for `path` with the OS's words for `e`.
fn os_err(path: &[u8], what: &str, e: Errno) -> anyhow::Error {
    anyhow::anyhow!("{}: {what}{}", display(path), std::io::Error::from(e))
}

impl<'a> Scanner<'a> {
    fn new(opts: ScanOptions, on_entry: &'a mut dyn FnMut()) -> Scanner<'a> {
        Scanner {
            exclude: opts.exclude,
            skip_unreadable: opts.skip_unreadable,
            sparse: opts.sparse,
            on_entry,
            entries: 0,
            data_bytes: 0,
            seen: HashSet::new(),
        }
    }

    /// Reads one directory's entries (recursively), sorted by name. They are examined in inode
    /// number order, which on a cold cache reads the inode tables front to back instead of
    /// jumping about (names are hashed or in creation order, not laid out by name).
    fn dir(&mut self, fd: &OwnedFd, path: &mut Vec<u8>) -> Result<Vec<Entry>> {
        let mut names = Vec::new();
        let mut dir = rfs::Dir::read_from(fd).map_err(|e| os_err(path, "", e))?;
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(|e| os_err(path, "reading directory: ", e))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push((ent.ino(), Box::<[u8]>::from(name)));
            }
        }
        drop(dir);
        names.sort_unstable();
        let mut out = Vec::with_capacity(names.len());
        for (_, name) in names {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(&name);
            let e = self.entry(fd, name, path);
            path.truncate(len);
            if let Some(e) = e? {
                out.push(e);
            }
        }
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn entry(
        &mut self,
        parent: &OwnedFd,
        name: Box<[u8]>,
        path: &mut Vec<u8>,
    ) -> Result<Option<Entry>> {
        let st = match rfs::statx(parent, &*name, AtFlags::SYMLINK_NOFOLLOW, wanted()) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None), // vanished since readdir
            Err(e) => return Err(os_err(path, "", e)),
        };
        let m = meta(&st);
        if self.exclude == Some((m.dev, m.ino)) {
            return Ok(None);
        }
        if self.skip_unreadable {
            if let Err(e) = readable(parent, &name, &st) {
                crate::progress::warn(&format!(
                    "{}: skipped, {}",
                    display(path),
                    std::io::Error::from(e)
                ));
                return Ok(None);
            }
        }
        self.entries += 1;
        (self.on_entry)();
        let xattrs = xattr::read(&xattr::proc_path(parent, Some(&name)), false)
            .with_context(|| format!("{}: reading extended attributes", display(path)))?;
        let kind = match FileType::from_raw_mode(st.stx_mode as u32) {
            FileType::Directory => {
                let fd = open_child_dir(parent, &name, path)?;
                let children = self.dir(&fd, path)?;
                Kind::Dir { children }
            }
            FileType::RegularFile => {
                let size = st.stx_size;
                let mut layout = if st.stx_blocks * 512 >= size || size == 0 {
                    Layout::Dense
                } else {
                    let f = open_child_file(parent, &name, path)?;
                    data_ranges(&f, size)
                        .with_context(|| format!("{}: finding holes", display(path)))?
                };
                if let Some(block) = self.sparse.filter(|_| size > 0) {
                    let f = open_child_file(parent, &name, path)?;
                    layout = zeros::scan_file(&f, size, &layout, block)
                        .with_context(|| format!("{}: finding zero blocks", display(path)))?;
                }
                if m.nlink < 2 || self.seen.insert((m.dev, m.ino)) {
                    self.data_bytes += match &layout {
                        Layout::Dense => size,
                        Layout::Sparse(r) => r.iter().map(|(a, b)| b - a).sum(),
                    };
                }
                Kind::File {
                    size,
                    layout,
                    data: Data::InTree { src: 0 },
                }
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(parent, &*name, Vec::new())
                    .map_err(|e| os_err(path, "reading symlink: ", e))?;
                Kind::Symlink {
                    target: target.into_bytes(),
                }
            }
            FileType::CharacterDevice => Kind::CharDev {
                major: st.stx_rdev_major,
                minor: st.stx_rdev_minor,
            },
            FileType::BlockDevice => Kind::BlockDev {
                major: st.stx_rdev_major,
                minor: st.stx_rdev_minor,
            },
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::Unknown => bail!(
                "{}: unknown file type (mode {:o})",
                display(path),
                st.stx_mode
            ),
        };
        Ok(Some(Entry {
            name,
            kind,
            meta: m,
            xattrs,
        }))
    }
}

/// Opens a subdirectory relative to its parent without following symlinks.
pub fn open_child_dir(parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<OwnedFd> {
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err(path, "", e))
}

/// Opens a regular file for reading, relative to its parent: no symlink following, and
/// O_NONBLOCK so that a FIFO swapped in since the scan cannot block; anything but a regular file
/// is refused.
pub fn open_child_file(parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<OwnedFd> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| os_err(path, "", e))?;
    let st = rfs::fstat(fd.as_fd()).map_err(|e| os_err(path, "", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        bail!(
            "{}: changed into something other than a regular file during the build",
            display(path)
        );
    }
    Ok(fd)
}

/// The byte ranges of `f` (of `size` bytes) that hold data.
fn data_ranges(f: &OwnedFd, size: u64) -> std::io::Result<Layout> {
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while let Some((start, end)) = crate::sparse::next_data(f, pos, size)? {
        ranges.push((start, end));
        pos = end;
    }
    Ok(Layout::Sparse(ranges))
}
