//! Where entries come from: the source tree as one in-memory tree of [`Entry`] values (names as
//! bytes, full metadata, extended attributes, the layout of sparse files), read once by the
//! scanner in [`walk`] and consumed by planning and populating.

pub mod bytes;
pub mod digest;
pub mod live;
mod mounts;
pub mod open;
pub mod readahead;
pub mod secret;
pub mod tar;
mod walk;
mod xattr;

pub use bytes::Spool;
pub use tar::{read_archive, ArchiveInput};
pub use walk::{identity, scan, ScanOptions};

/// A time as the source gives it: seconds and nanoseconds since the epoch (seconds may be
/// negative or past 2038). `mkfs` turns it into the filesystem's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// One extended attribute: full name (`user.x`, `security.capability`, ...) and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// Metadata common to every entry.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (the low 12 bits of st_mode).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Birth time when the source filesystem reports one, else the mtime.
    pub btime: Timestamp,
    /// Identity in the source, for hard links and to notice replaced files.
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

impl Meta {
    /// Root-owned, permissions `perm`, every time `t`, one link, identity (dev, ino).
    pub fn at(t: Timestamp, perm: u16, dev: u64, ino: u64) -> Meta {
        Meta {
            perm,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
            btime: t,
            dev,
            ino,
            nlink: 1,
        }
    }
}

/// Which bytes of a regular file hold data (the rest are holes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// All of `0..size`.
    Dense,
    /// Sorted, disjoint byte ranges `(start, end)` found with SEEK_DATA/SEEK_HOLE.
    Sparse(Vec<(u64, u64)>),
}

impl Layout {
    /// The byte ranges `(start, end)` holding data in a file of `size` bytes.
    pub fn data_ranges(&self, size: u64) -> Vec<(u64, u64)> {
        match self {
            Layout::Dense => vec![(0, size)],
            Layout::Sparse(r) => r.clone(),
        }
    }
}

/// Where a regular file's bytes are read from while populating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// From the source directory, opened by name relative to its parent directory.
    InTree,
    /// From the tree's spool file (an archive or a decompressed copy of one): the file's
    /// logical bytes `0..size` are at `offset..offset+size` (holes of a sparse file read as
    /// zeros there too).
    Spool { offset: u64 },
}

#[derive(Debug, Clone)]
pub enum Kind {
    File {
        size: u64,
        layout: Layout,
        data: Data,
    },
    Dir {
        children: Vec<Entry>,
    },
    Symlink {
        target: Vec<u8>,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The name in its parent directory; empty for the root.
    pub name: Box<[u8]>,
    pub kind: Kind,
    pub meta: Meta,
    pub xattrs: Vec<Xattr>,
}

impl Entry {
    pub fn children(&self) -> &[Entry] {
        match &self.kind {
            Kind::Dir { children } => children,
            _ => &[],
        }
    }

    /// A directory's children, to change; panics for anything but a directory.
    pub fn children_mut(&mut self) -> &mut Vec<Entry> {
        match &mut self.kind {
            Kind::Dir { children } => children,
            _ => panic!("children_mut of an entry that is not a directory"),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }
}

/// The scanned tree with its totals.
#[derive(Debug)]
pub struct Tree {
    pub root: Entry,
    /// SOURCE's directory as the scan opened it (None for an archive): every later read of the
    /// tree goes through it, never through SOURCE's path again.
    pub dir: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Where [`Data::Spool`] file contents live (None for a directory source).
    pub spool: Option<std::sync::Arc<Spool>>,
    /// Entries below the root (every name, hard links counted each time).
    pub entries: u64,
    /// Sum of regular files' data bytes (holes excluded, hard-linked files once).
    pub data_bytes: u64,
}

/// Renders a byte path for messages: invalid UTF-8 as U+FFFD, control characters escaped so
/// that a message stays on one line.
pub fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path)
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
