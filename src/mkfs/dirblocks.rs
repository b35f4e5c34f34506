//! A directory's blocks, from its children to the bytes: the layout is decided first (an htree
//! index when the children need more than one block and the filesystem has dir_index, else linear
//! blocks; lost+found stays linear, padded to mke2fs's size), so that the blocks can be allocated,
//! then the blocks are made one at a time and handed to a [`Sink`] that writes them in place.

use anyhow::Result;
use ext2fs::{DirHash, FileType, Ino};

use super::dirent::DirPacker;
use super::htree::{Child, Children, Index, IndexParams, Sink};
use super::plan::lost_found_blocks;
use super::populate::ft_of;
use crate::source::Entry;

/// A directory's children as its blocks hold them: the tree's entries with the inodes made for
/// them (4 bytes a child: the names stay in the tree), and lost+found after them in a root
/// directory that has none.
pub struct Kids<'a> {
    pub entries: &'a [Entry],
    pub inos: &'a [Ino],
    pub lost_found: Option<Ino>,
}

impl Children for Kids<'_> {
    fn len(&self) -> usize {
        self.entries.len() + usize::from(self.lost_found.is_some())
    }

    fn get(&self, i: usize) -> Child<'_> {
        match self.entries.get(i) {
            Some(e) => (&e.name, self.inos[i], ft_of(&e.kind)),
            None => (
                b"lost+found",
                self.lost_found.expect("within len()"),
                FileType::Directory,
            ),
        }
    }
}

/// How a directory's blocks are laid out.
pub enum DirLayout {
    Indexed(Index),
    /// Linear, this many blocks.
    Linear(u64),
}

impl DirLayout {
    /// The layout for `kids` of directory `ino`: indexed when `hash` is given (dir_index) and
    /// the directory is not lost+found (`is_lost_found`) and needs more than one block.
    pub fn plan(
        ino: Ino,
        kids: &Kids,
        p: &IndexParams,
        hash: Option<&DirHash>,
        is_lost_found: bool,
    ) -> DirLayout {
        if let Some(h) = hash.filter(|_| !is_lost_found) {
            if let Some(index) = Index::plan(kids, p, &|n| h.hash(n)) {
                return DirLayout::Indexed(index);
            }
        }
        let mut packer = DirPacker::start(p.block_size, p.csum, false, ino, ino);
        let mut none = |_: u64, _: &mut [u8]| -> Result<()> { unreachable!("only counting") };
        for i in 0..kids.len() {
            let (name, c_ino, ft) = kids.get(i);
            packer
                .add(name, c_ino, ft, &mut none)
                .expect("counting cannot fail");
        }
        let n = packer.block_count();
        DirLayout::Linear(match is_lost_found {
            true => n.max(lost_found_blocks(p.block_size)),
            false => n,
        })
    }

    /// Blocks the directory takes.
    pub fn blocks(&self) -> u64 {
        match self {
            DirLayout::Indexed(index) => index.blocks(),
            DirLayout::Linear(n) => *n,
        }
    }

    /// Makes the blocks of directory `ino` (in `parent`) holding `kids`, each handed to `sink`
    /// once with its logical block number.
    pub fn write(
        &self,
        ino: Ino,
        parent: Ino,
        kids: &Kids,
        p: &IndexParams,
        sink: &mut Sink,
    ) -> Result<()> {
        match self {
            DirLayout::Indexed(index) => index.write(ino, parent, kids, p, sink),
            DirLayout::Linear(n) => {
                let mut packer = DirPacker::start(p.block_size, p.csum, true, ino, parent);
                for i in 0..kids.len() {
                    let (name, c_ino, ft) = kids.get(i);
                    packer.add(name, c_ino, ft, sink)?;
                }
                packer.pad_to(*n, sink)?;
                packer.finish(sink)
            }
        }
    }
}
