//! File data left in its sources (`--serve --lazy`): while populating, each data range of each
//! file is recorded with where its bytes lie in the filesystem and where they are read from when
//! a client asks — a [`LiveFile`] of whichever source the file came from (a directory reached
//! as the walk reached it, or a spool), checked against the scan on every read.

use std::sync::Arc;

use anyhow::Result;

use crate::source::dirs::Dirs;
use crate::source::live::{LiveFile, LiveTree};
use crate::source::{Data, Entry, Tree};

/// Where a lazily served piece of file data is read from: a file of a source (or a spool),
/// from byte `offset`, checked on every read.
#[derive(Clone)]
pub enum LazyData {
    Live { file: Arc<LiveFile>, offset: u64 },
}

impl LazyData {
    /// The same data, `by` bytes further on.
    pub fn advanced(&self, by: u64) -> LazyData {
        match self {
            LazyData::Live { file, offset } => LazyData::Live {
                file: file.clone(),
                offset: offset + by,
            },
        }
    }
}

/// `len` bytes of file data at byte `at` of the filesystem, left in the source.
pub struct LazyPart {
    pub at: u64,
    pub len: u64,
    pub data: LazyData,
}

/// File data left in the sources: where each data range of each file lies in the filesystem,
/// and where its bytes are read from.
pub struct Lazy {
    /// The tree's sources, as the scans left them.
    pub tree: Arc<LiveTree>,
    /// Where each piece of file data goes and where it is read from, in the order placed.
    pub parts: Vec<LazyPart>,
    files: usize,
}

impl Lazy {
    pub fn new(tree: &Tree) -> Lazy {
        Lazy {
            tree: LiveTree::new(&tree.origins),
            parts: Vec::new(),
            files: 0,
        }
    }

    /// Where file `e`'s bytes are read, at its byte 0: `rel` is its path in the tree, `dirs`
    /// its sources' directories as the walk reached them.
    pub fn source(
        &mut self,
        e: &Entry,
        data: Data,
        size: u64,
        dirs: &Dirs,
        rel: &[u8],
    ) -> Result<LazyData> {
        self.files += 1;
        let file = self.tree.entry(e, data, size, dirs, rel, self.files)?;
        Ok(LazyData::Live {
            file: Arc::new(file),
            offset: 0,
        })
    }
}
