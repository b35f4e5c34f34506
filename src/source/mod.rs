//! Where entries come from: the source tree as one in-memory tree of [`Entry`] values (names as
//! bytes, full metadata, extended attributes, the layout of sparse files), read once by the
//! scanner in [`walk`], the tar reader in [`tar`] or the container-image reader in [`oci`],
//! merged with the `--add` sources by [`compose`] (what each input is: [`input`]), and consumed
//! by planning and populating. Every file records which source ([`Origin`]) its bytes are in.

pub mod bytes;
pub mod compose;
pub mod digest;
pub mod dirs;
pub mod find;
pub mod input;
pub mod live;
mod mounts;
pub mod oci;
pub mod open;
pub mod readahead;
pub mod secret;
pub mod tar;
mod walk;
mod xattr;
pub mod zeros;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use bytes::Spool;
pub use tar::{read_archive, ArchiveInput};
pub use walk::{identity, scan, scan_one, ScanOptions};

/// A time as the source gives it: seconds and nanoseconds since the epoch (seconds may be
/// negative or past 2038). `mkfs` turns it into the filesystem's encoding.
///
/// Packed to 12 bytes (no padding after `nsec`): every entry holds four of them (see [`Meta`]).
/// Its fields are read and written by value; a reference to one does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, packed(4))]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// One extended attribute: full name (`user.x`, `security.capability`, ...) and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// Metadata common to every entry.
///
/// Memory: the whole tree is held while the filesystem is made, so this is packed (80 bytes:
/// 12-byte [`Timestamp`]s, a 32-bit link count) and an [`Entry`] takes 168 bytes; 1,000,000
/// entries in one directory build within 256 MiB of peak RSS (tests/million.rs). A field added
/// here or to [`Entry`] costs a megabyte per 8 bytes at a million entries: prefer packing it
/// into what is there (as the times are), and keep `an_entry_takes_168_bytes` honest.
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
    /// Link count (statx's is 32 bits too).
    pub nlink: u32,
}

/// Where [`Meta::dev`] holds the index of the source an entry was read from (0 for SOURCE):
/// `compose` puts each `--add` source's there, keeping hard links of different sources apart.
/// Below it is the device the scan saw (statx's major and minor: 44 bits).
pub const SRC_SHIFT: u32 = 48;

/// The source index and the device the scan saw in a device number of the tree.
pub fn dev_parts(dev: u64) -> (u16, u64) {
    ((dev >> SRC_SHIFT) as u16, dev & ((1 << SRC_SHIFT) - 1))
}

impl Meta {
    /// (device, inode) as the source's filesystem has them (without the source index).
    pub fn host_id(&self) -> (u64, u64) {
        (dev_parts(self.dev).1, self.ino)
    }

    /// The index of the source the entry was read from.
    pub fn src(&self) -> u16 {
        dev_parts(self.dev).0
    }

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
    /// Sorted, disjoint byte ranges `(start, end)`: found with SEEK_DATA/SEEK_HOLE, from an
    /// archive's sparse map, or what is left once all-zero blocks are taken out ([`zeros`]).
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

    /// How many of a `size`-byte file's bytes are data.
    pub fn data_bytes(&self, size: u64) -> u64 {
        match self {
            Layout::Dense => size,
            Layout::Sparse(r) => r.iter().map(|(a, b)| b - a).sum(),
        }
    }
}

/// Where a regular file's bytes are read from while populating: `src` is the index of its
/// source in [`Tree::origins`] (0 for SOURCE, then the `--add` sources in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// From a directory (or single-file) source, opened by name relative to its parent
    /// directory there.
    InTree { src: u16 },
    /// From a spool file (an archive or a decompressed copy of one): the file's logical bytes
    /// `0..size` are at `offset..offset+size` (holes of a sparse file read as zeros there too).
    Spool { src: u16, offset: u64 },
}

impl Data {
    /// The index of the source the bytes are in.
    pub fn src(&self) -> u16 {
        match *self {
            Data::InTree { src } | Data::Spool { src, .. } => src,
        }
    }
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

/// One source of a tree's file bytes: what a file's [`Data::src`] indexes. A directory or file
/// source keeps the descriptor its scan opened: every later read goes through it (and, below
/// it, through directories checked against the scan: [`dirs`]), never through its path again.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A directory: a file at path REL in the tree (below `dest`) is REL without `dest` below
    /// `root`.
    Dir {
        /// As given, for messages.
        root: PathBuf,
        /// Where `root` lies in the tree: `""` for the tree's root, else `/a/b`.
        dest: Vec<u8>,
        /// `root` as the scan opened it.
        dir: Arc<OwnedFd>,
    },
    /// One file, at `dest` in the tree; `path` has no symlink in it (read by name in its
    /// parent directory, `dir` as the scan opened it).
    File {
        path: PathBuf,
        dest: Vec<u8>,
        dir: Arc<OwnedFd>,
    },
    /// A spool file (an archive, or what was decompressed from one), checked against what it
    /// was once read.
    Spool(Arc<Spool>),
}

impl Origin {
    /// The path, relative to the directory this source is read from (its root, or a single
    /// file's parent), of the entry at `rel` in the tree (`/a/b`, or `""` for the root).
    pub fn host_rel(&self, rel: &[u8]) -> Vec<u8> {
        match self {
            Origin::Dir { dest, .. } => rel.strip_prefix(&dest[..]).unwrap_or(rel).to_vec(),
            Origin::File { path, .. } => {
                let mut v = b"/".to_vec();
                v.extend_from_slice(path.file_name().unwrap_or_default().as_encoded_bytes());
                v
            }
            Origin::Spool(_) => rel.to_vec(),
        }
    }

    /// The directory this source's files are read from: a directory source's root, a single
    /// file's parent (None for a spool).
    pub fn host_dir(&self) -> Option<&Path> {
        match self {
            Origin::Dir { root, .. } => Some(root),
            Origin::File { path, .. } => Some(path.parent().unwrap_or(Path::new("/"))),
            Origin::Spool(_) => None,
        }
    }

    /// The directory this source's files are read from, as the scan opened it (None for a
    /// spool).
    pub fn host_fd(&self) -> Option<&Arc<OwnedFd>> {
        match self {
            Origin::Dir { dir, .. } | Origin::File { dir, .. } => Some(dir),
            Origin::Spool(_) => None,
        }
    }

    /// The entry at `rel` in the tree as this source names it, for messages: a host path, or
    /// `ARCHIVE:/path`.
    pub fn show(&self, rel: &[u8]) -> String {
        match self {
            Origin::Spool(spool) => format!("{}:{}", spool.name, display(rel)),
            _ => {
                let dir = self.host_dir().unwrap_or(Path::new(""));
                let mut p = dir.as_os_str().as_encoded_bytes().to_vec();
                p.extend_from_slice(&self.host_rel(rel));
                display(&p)
            }
        }
    }
}

/// The scanned tree with its totals.
#[derive(Debug)]
pub struct Tree {
    pub root: Entry,
    /// Where each file's bytes are: indexed by [`Data::src`].
    pub origins: Vec<Origin>,
    /// Directories of several sources merged into one entry of the tree, which has the identity
    /// (`meta`'s dev, ino) of the last: that identity → the others' (see [`Meta::src`]), so that
    /// each source's directory there is reopened only as the one scanned ([`dirs`]).
    pub merged: HashMap<(u64, u64), Vec<(u64, u64)>>,
    /// Entries below the root (every name, hard links counted each time).
    pub entries: u64,
    /// Sum of regular files' data bytes (holes excluded, hard-linked files once).
    pub data_bytes: u64,
    /// The first host file read to make the tree that others may not read, in words (an image
    /// layout's blob, or a directory on the way to it): the tree holds its content, though no
    /// entry's mode says so. See [`secret`].
    pub unreadable: Option<String>,
}

impl Tree {
    /// A tree of one source, as read.
    pub fn new(root: Entry, origin: Origin, entries: u64, data_bytes: u64) -> Tree {
        Tree {
            root,
            origins: vec![origin],
            merged: HashMap::new(),
            entries,
            data_bytes,
            unreadable: None,
        }
    }

    /// The spool of source `src`, if it is one.
    pub fn spool(&self, src: u16) -> Option<&Arc<Spool>> {
        match self.origins.get(src as usize) {
            Some(Origin::Spool(spool)) => Some(spool),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file carries its source in [`Data`] without growing it: a million entries
    /// must stay small (the source index fits beside the enum's tag).
    #[test]
    fn data_stays_16_bytes() {
        assert_eq!(std::mem::size_of::<Data>(), 16);
    }

    /// The whole tree is in memory while the filesystem is made: at a million entries every
    /// byte of an [`Entry`] is a megabyte of peak RSS (tests/million.rs holds the bound).
    #[test]
    fn an_entry_takes_168_bytes() {
        assert_eq!(std::mem::size_of::<Timestamp>(), 12);
        assert_eq!(std::mem::size_of::<Meta>(), 80);
        assert!(
            std::mem::size_of::<Entry>() <= 168,
            "Entry grew to {} bytes: see the note at Meta",
            std::mem::size_of::<Entry>()
        );
    }
}
