//! The directory scanner: walks SOURCE with directory file descriptors (openat/statx relative to
//! the parent, so paths longer than PATH_MAX work), never following symlinks and never opening
//! FIFOs or devices, and builds the [`Tree`] with children sorted by name bytes. SOURCE is
//! resolved once: the tree keeps the descriptor of its root for every later read. Mount points
//! are noticed: with `one_file_system` they are kept without their contents, else each is named
//! in a warning (and the kernel's own filesystems, such as proc, refused).

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use super::open::{dev_of, open_dir, open_file, Stamp};
use super::{display, mounts, xattr, zeros, Data, Entry, Kind, Layout, Meta, Origin, Tree};
use crate::source::Timestamp;

/// How to scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// A (dev, ino) to leave out: the output file when it lies inside the source.
    pub exclude: Option<(u64, u64)>,
    /// `--skip-unreadable`: leave out, with a warning, files and directories this process
    /// cannot read, instead of failing.
    pub skip_unreadable: bool,
    /// `--one-file-system`: keep mount points without what is mounted on them.
    pub one_file_system: bool,
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
    let children = s.dir(&fd, mounts::of(&st), &mut path)?;
    let root = Entry {
        name: Box::new([]),
        kind: Kind::Dir { children },
        meta: meta(&st),
        xattrs,
    };
    let origin = Origin::Dir {
        root: root_path.to_path_buf(),
        dest: Vec::new(),
        dir: Arc::new(fd),
    };
    Ok(Tree::new(root, origin, s.entries, s.data_bytes))
}

/// Scans the one entry `path` (no symlink in it: see [`Origin::File`]) into a tree whose root is
/// that entry, named `name`. Its parent directory is opened once: later reads go through it.
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
    let st = rfs::statx(&fd, "", AtFlags::EMPTY_PATH, wanted())
        .with_context(|| format!("{}: statx", dir.display()))?;
    let mut s = Scanner::new(opts, on_entry);
    let mut shown = path.as_os_str().as_encoded_bytes().to_vec();
    let Some(mut root) = s.entry(&fd, mounts::of(&st), file.into(), &mut shown)? else {
        bail!("{}: vanished or unreadable", path.display());
    };
    root.name = name.into();
    let origin = Origin::File {
        path: path.to_path_buf(),
        dest: Vec::new(),
        dir: Arc::new(fd),
    };
    Ok(Tree::new(root, origin, s.entries, s.data_bytes))
}

/// The (dev, ino) identity the scanner uses, of an existing file (following symlinks).
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    let st = rfs::statx(rfs::CWD, path, AtFlags::empty(), StatxFlags::BASIC_STATS).ok()?;
    Some((dev_of(&st), st.stx_ino))
}

struct Scanner<'a> {
    opts: ScanOptions,
    on_entry: &'a mut dyn FnMut(),
    entries: u64,
    data_bytes: u64,
    /// (dev, ino) of multiply-linked files already counted in data_bytes.
    seen: HashSet<(u64, u64)>,
}

fn wanted() -> StatxFlags {
    StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::MNT_ID
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

/// Can this process read the entry: open a regular file (the one scanned), list and search a
/// directory? (Other kinds are never opened.)
fn readable(parent: &OwnedFd, name: &[u8], st: &rfs::Statx) -> Result<(), String> {
    let m = meta(st);
    match FileType::from_raw_mode(st.stx_mode as u32) {
        FileType::RegularFile => {
            open_file(parent, name, &Stamp::of(st)).map_err(|e| e.to_string())?;
        }
        FileType::Directory => {
            let fd = open_dir(parent, name, (m.dev, m.ino)).map_err(|e| e.to_string())?;
            let os = |e: Errno| std::io::Error::from(e).to_string();
            // Listing needs read permission; searching needs execute: try both.
            rfs::Dir::read_from(&fd).map_err(os)?;
            rfs::accessat(&fd, ".", rfs::Access::EXEC_OK, AtFlags::EACCESS).map_err(os)?;
        }
        _ => {}
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
            opts,
            on_entry,
            entries: 0,
            data_bytes: 0,
            seen: HashSet::new(),
        }
    }

    /// Reads one directory's entries (recursively), sorted by name. They are examined in inode
    /// number order, which on a cold cache reads the inode tables front to back instead of
    /// jumping about (names are hashed or in creation order, not laid out by name). `mount` is
    /// the directory's mount (see [`mounts::of`]).
    fn dir(&mut self, fd: &OwnedFd, mount: u64, path: &mut Vec<u8>) -> Result<Vec<Entry>> {
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
            let e = self.entry(fd, mount, name, path);
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
        parent_mount: u64,
        name: Box<[u8]>,
        path: &mut Vec<u8>,
    ) -> Result<Option<Entry>> {
        let st = match rfs::statx(parent, &*name, AtFlags::SYMLINK_NOFOLLOW, wanted()) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None), // vanished since readdir
            Err(e) => return Err(os_err(path, "", e)),
        };
        let mut m = meta(&st);
        if self.opts.exclude == Some((m.dev, m.ino)) {
            return Ok(None);
        }
        let mount = mounts::of(&st);
        // A mount point: with -x kept without what is mounted there, else crossed (named).
        let hollow = mount != parent_mount && self.crossing(parent, &name, path)?;
        if hollow {
            m.nlink = 1; // its contents left out, it is no other name's hard link
        }
        if self.opts.skip_unreadable && !hollow {
            if let Err(e) = readable(parent, &name, &st) {
                crate::progress::warn(&format!("{}: skipped, {e}", display(path)));
                return Ok(None);
            }
        }
        self.entries += 1;
        (self.on_entry)();
        let xattrs = xattr::read(&xattr::proc_path(parent, Some(&name)), false)
            .with_context(|| format!("{}: reading extended attributes", display(path)))?;
        let kind = match FileType::from_raw_mode(st.stx_mode as u32) {
            FileType::Directory if hollow => Kind::Dir {
                children: Vec::new(),
            },
            FileType::Directory => {
                let fd = open_dir(parent, &name, (m.dev, m.ino))
                    .map_err(|e| anyhow::anyhow!("{}: {e}", display(path)))?;
                let children = self.dir(&fd, mount, path)?;
                Kind::Dir { children }
            }
            FileType::RegularFile if hollow => Kind::File {
                size: 0,
                layout: Layout::Dense,
                data: Data::InTree { src: 0 },
            },
            FileType::RegularFile => {
                let size = st.stx_size;
                let holes = st.stx_blocks * 512 < size && size > 0;
                let zeros = self.opts.sparse.filter(|_| size > 0);
                // Opened only to look at its data (never anything but the file scanned).
                let f = match holes || zeros.is_some() {
                    true => Some(open_file(parent, &name, &Stamp::of(&st)).map_err(|e| {
                        anyhow::anyhow!("{}: {e} (while it was scanned)", display(path))
                    })?),
                    false => None,
                };
                let mut layout = match (&f, holes) {
                    (Some(f), true) => data_ranges(f, size)
                        .with_context(|| format!("{}: finding holes", display(path)))?,
                    _ => Layout::Dense,
                };
                if let (Some(f), Some(block)) = (&f, zeros) {
                    layout = zeros::scan_file(f, size, &layout, block)
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

    /// At a mount point (`name` in `parent`): true when it is to be kept without contents
    /// (`--one-file-system`); else says so in a warning, or fails for a filesystem of the
    /// kernel's state (proc, sysfs...) that no image should hold.
    fn crossing(&self, parent: &OwnedFd, name: &[u8], path: &[u8]) -> Result<bool> {
        if self.opts.one_file_system {
            return Ok(true);
        }
        let fs = mounts::fs_type(parent, name);
        if let Some(kernel) = fs.and_then(mounts::kernel_state) {
            bail!(
                "{}: a {kernel} filesystem is mounted here (the kernel's state, not files); use -x (--one-file-system) to leave mounted filesystems out",
                display(path)
            );
        }
        crate::progress::warn(&format!(
            "{}: another filesystem is mounted here; its contents are included (-x, --one-file-system, leaves them out)",
            display(path)
        ));
        Ok(false)
    }
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
