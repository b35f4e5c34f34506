//! Hash-indexed (htree) directories, laid out exactly as `e2fsck -D` rebuilds them (e2fsprogs'
//! e2fsck/rehash.c): the entries sorted by (hash, minor hash, name), packed into leaf blocks
//! that close once less than 20% of the block is free, each leaf starting a hash range (low bit
//! set when a run of equal hashes continues from the previous leaf), then the dx_root in block 0
//! and, for more leaves than the root holds, one level of dx_node blocks after the leaves.
//! Planned first ([`Index::plan`]: the order and the block count, 12 bytes a child), then made
//! one block at a time ([`Index::write`]): a directory of a million entries never has all its
//! blocks in memory. With metadata_csum each leaf reserves the 12-byte dirent tail and each dx block an 8-byte
//! dx_tail; `ext2fs_write_dir_block4` fills in both kinds of checksum.

use ext2fs::{FileType, Ino, NameHash};

use super::dirent::rec_len;

/// A child entry: name, inode, file type.
pub type Child<'a> = (&'a [u8], Ino, FileType);

/// The metadata_csum tail of a leaf block (`struct ext2_dir_entry_tail`).
const DIRENT_TAIL: usize = 12;
/// The metadata_csum tail of a dx_root or dx_node block (`struct ext2_dx_tail`).
const DX_TAIL: usize = 8;
/// e2fsck's default `indexed_dir_slack_percentage`.
const SLACK_PERCENT: usize = 20;
/// Offset of the dx_countlimit in a dx_root (after `.`, `..` and the 8-byte dx_root_info) and in
/// a dx_node (after its empty fake dirent).
const ROOT_ENTRIES: usize = 32;
const NODE_ENTRIES: usize = 8;

/// How the directory blocks of a filesystem look.
#[derive(Debug, Clone, Copy)]
pub struct IndexParams {
    pub block_size: u32,
    /// metadata_csum is on: reserve the tails.
    pub csum: bool,
    /// The dx_root_info `hash_version` (`DirHash::root_version`).
    pub hash_version: u8,
}

impl IndexParams {
    fn bs(&self) -> usize {
        self.block_size as usize
    }

    /// Bytes of a leaf block that hold records.
    fn usable(&self) -> usize {
        self.bs() - if self.csum { DIRENT_TAIL } else { 0 }
    }

    fn dx_tail(&self) -> usize {
        if self.csum {
            DX_TAIL
        } else {
            0
        }
    }

    /// dx_entries a dx_root holds.
    pub fn root_limit(&self) -> usize {
        (self.bs() - ROOT_ENTRIES - self.dx_tail()) / 8
    }

    /// dx_entries a dx_node holds.
    pub fn node_limit(&self) -> usize {
        (self.bs() - NODE_ENTRIES - self.dx_tail()) / 8
    }

    fn slack(&self) -> usize {
        (self.usable() * SLACK_PERCENT / 100).max(rec_len(1))
    }

    /// True when `.`, `..` and children whose records take `rec_bytes` fit in one linear block.
    fn fits_one_block(&self, rec_bytes: u64) -> bool {
        (2 * rec_len(2)) as u64 + rec_bytes <= self.usable() as u64
    }
}

/// A directory's children, by position: what goes in its blocks.
pub trait Children {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Child `i` (`i < len()`): name, inode, file type.
    fn get(&self, i: usize) -> Child<'_>;
}

impl Children for &[Child<'_>] {
    fn len(&self) -> usize {
        <[Child]>::len(self)
    }
    fn get(&self, i: usize) -> Child<'_> {
        self[i]
    }
}

/// Receives a directory's blocks as they are made: (logical block number, the block's bytes).
/// Each block comes once, leaves in order, the index blocks last.
pub type Sink<'s> = dyn FnMut(u64, &mut [u8]) -> anyhow::Result<()> + 's;

/// A directory's hash index, planned before its blocks are allocated: the children in index
/// order (12 bytes each) and the number of leaves. Nothing else is held: the blocks are made one
/// at a time by [`Index::write`].
pub struct Index {
    /// (hash, minor hash, child position), sorted as the leaves hold them.
    order: Vec<(NameHash, u32)>,
    leaves: u64,
    nodes: u64,
}

impl Index {
    /// The index of directory children `entries` (`hash` gives a name's (major, minor) hash,
    /// `DirHash::hash`). None when the entries fit in one linear block (write it unindexed), or
    /// when they need more leaves than one index level addresses (root_limit × node_limit:
    /// about 500,000 short names at 1 KiB blocks; a second level needs largedir): a linear
    /// directory is still valid then, only slower to search.
    pub fn plan(
        entries: &dyn Children,
        p: &IndexParams,
        hash: &dyn Fn(&[u8]) -> NameHash,
    ) -> Option<Index> {
        let n = entries.len();
        let rec_bytes: u64 = (0..n).map(|i| rec_len(entries.get(i).0.len()) as u64).sum();
        if p.fits_one_block(rec_bytes) {
            return None;
        }
        let mut order: Vec<(NameHash, u32)> =
            (0..n).map(|i| (hash(entries.get(i).0), i as u32)).collect();
        // rehash.c's hash_cmp: hash, minor hash, name (bytes, then length), higher inode first.
        order.sort_unstable_by(|a, b| {
            let (x, y) = (entries.get(a.1 as usize), entries.get(b.1 as usize));
            (a.0, x.0, y.1).cmp(&(b.0, y.0, x.1))
        });
        let mut leaves = 0;
        pack(entries, &order, p, false, &mut |_, _| {
            leaves += 1;
            Ok(())
        })
        .expect("counting cannot fail");
        let (rl, nl) = (p.root_limit() as u64, p.node_limit() as u64);
        let nodes = match leaves {
            l if l <= rl => 0,
            l if l <= rl * nl => l.div_ceil(nl),
            _ => return None,
        };
        Some(Index {
            order,
            leaves,
            nodes,
        })
    }

    /// Blocks the directory takes: the dx_root, the leaves, the dx_nodes.
    pub fn blocks(&self) -> u64 {
        1 + self.leaves + self.nodes
    }

    /// Makes the blocks of directory `ino` (whose parent is `parent`) holding `entries` (the
    /// ones planned), in logical order 0.. as `sink` numbers them: block 0 the dx_root, then the
    /// leaves, then any dx_nodes.
    pub fn write(
        &self,
        ino: Ino,
        parent: Ino,
        entries: &dyn Children,
        p: &IndexParams,
        sink: &mut Sink,
    ) -> anyhow::Result<()> {
        let mut starts = Vec::with_capacity(self.leaves as usize);
        pack(entries, &self.order, p, true, &mut |start, leaf| {
            starts.push(start);
            sink(starts.len() as u64, leaf)
        })?;
        debug_assert_eq!(starts.len() as u64, self.leaves);
        // (starting hash, block) of each leaf.
        let refs = starts.iter().zip(1u32..).map(|(&h, b)| (h, b));
        if self.nodes == 0 {
            let refs: Vec<(u32, u32)> = refs.collect();
            return sink(0, &mut root_block(ino, parent, p, 0, &refs));
        }
        let first_node = 1 + self.leaves;
        let refs: Vec<(u32, u32)> = refs.collect();
        let mut top = Vec::new();
        for (k, node) in refs.chunks(p.node_limit()).enumerate() {
            let at = first_node + k as u64;
            top.push((node[0].0, at as u32));
            sink(at, &mut dx_block(vec![0; p.bs()], NODE_ENTRIES, p, node))?;
        }
        sink(0, &mut root_block(ino, parent, p, 1, &top))
    }
}

/// Packs the entries in `order` into leaf blocks as rehash.c's copy_dir_entries does, and hands
/// each finished leaf to `leaf` with its starting hash (low bit set when a run of equal hashes
/// continues from the previous leaf). With `write` false only the leaves are counted (`leaf` gets
/// an empty slice).
fn pack(
    entries: &dyn Children,
    order: &[(NameHash, u32)],
    p: &IndexParams,
    write: bool,
    leaf: &mut dyn FnMut(u32, &mut [u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (usable, slack) = (p.usable(), p.slack());
    let mut b = if write { new_leaf(p) } else { Vec::new() };
    let mut open = false;
    let mut start = 0u32;
    let mut off = 0; // where the next record goes in the open leaf
    let mut last = 0; // offset of the last record in the open leaf
    let mut prev_hash = 1u32; // never a real hash: those are even
    for &((h, _), i) in order {
        let (name, ino, ft) = entries.get(i as usize);
        let need = rec_len(name.len());
        if open && need > usable - off {
            // Full: its last record takes the rest.
            if write {
                set_rec_len(&mut b, last, usable - last);
            }
            leaf(start, &mut b)?;
            open = false;
        }
        if !open {
            if write {
                b = new_leaf(p);
            }
            start = if h == prev_hash { h | 1 } else { h };
            (open, off) = (true, 0);
        }
        if write {
            b[off..off + 4].copy_from_slice(&ino.to_le_bytes());
            set_rec_len(&mut b, off, need);
            b[off + 6] = name.len() as u8;
            b[off + 7] = ft.dirent_byte();
            b[off + 8..off + 8 + name.len()].copy_from_slice(name);
        }
        last = off;
        off += need;
        if usable - off < slack {
            // Close the leaf: its last record takes the rest.
            if write {
                set_rec_len(&mut b, last, usable - last);
            }
            leaf(start, &mut b)?;
            open = false;
        }
        prev_hash = h;
    }
    if open {
        if write {
            set_rec_len(&mut b, last, usable - last);
        }
        leaf(start, &mut b)?;
    }
    Ok(())
}

/// An empty leaf, with the checksum tail (inode 0, rec_len 12, name_len 0, type 0xDE) in place.
fn new_leaf(p: &IndexParams) -> Vec<u8> {
    let mut b = vec![0u8; p.bs()];
    if p.csum {
        let t = p.usable();
        set_rec_len(&mut b, t, DIRENT_TAIL);
        b[t + 7] = 0xDE;
    }
    b
}

fn set_rec_len(b: &mut [u8], off: usize, len: usize) {
    b[off + 4..off + 6].copy_from_slice(&(len as u16).to_le_bytes());
}

/// The dx_root: `.` (rec_len 12), `..` (rec_len to the end of the block), the dx_root_info, and
/// the (hash, block) entries `refs`.
fn root_block(ino: Ino, parent: Ino, p: &IndexParams, levels: u8, refs: &[(u32, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; p.bs()];
    b[0..4].copy_from_slice(&ino.to_le_bytes());
    set_rec_len(&mut b, 0, 12);
    b[6] = 1;
    b[7] = FileType::Directory.dirent_byte();
    b[8] = b'.';
    b[12..16].copy_from_slice(&parent.to_le_bytes());
    set_rec_len(&mut b, 12, p.bs() - 12);
    b[18] = 2;
    b[19] = FileType::Directory.dirent_byte();
    b[20..22].copy_from_slice(b"..");
    // dx_root_info: reserved_zero (4 bytes), hash_version, info_length, indirect_levels, flags.
    b[28] = p.hash_version;
    b[29] = 8;
    b[30] = levels;
    dx_block(b, ROOT_ENTRIES, p, refs)
}

/// Writes the dx_countlimit at `at` and the entries after it. The first entry's hash is the
/// countlimit itself (its range starts at 0, or at the parent's entry).
fn dx_block(mut b: Vec<u8>, at: usize, p: &IndexParams, refs: &[(u32, u32)]) -> Vec<u8> {
    if at == NODE_ENTRIES {
        // A dx_node's fake dirent: inode 0 and one record spanning the block.
        set_rec_len(&mut b, 0, p.bs());
    }
    let limit = (p.bs() - at - p.dx_tail()) / 8;
    assert!(
        refs.len() <= limit,
        "{} dx entries, room for {limit}",
        refs.len()
    );
    for (i, &(h, blk)) in refs.iter().enumerate() {
        let o = at + 8 * i;
        if i > 0 {
            b[o..o + 4].copy_from_slice(&h.to_le_bytes());
        }
        b[o + 4..o + 8].copy_from_slice(&blk.to_le_bytes());
    }
    b[at..at + 2].copy_from_slice(&(limit as u16).to_le_bytes());
    b[at + 2..at + 4].copy_from_slice(&(refs.len() as u16).to_le_bytes());
    b
}

/// An upper bound on a directory's blocks, for planning before the hash seed is known: add each
/// child's name length, then ask [`BlockBound::blocks`].
#[derive(Debug, Clone, Default)]
pub struct BlockBound {
    rec_bytes: u64,
    max_rec: usize,
}

impl BlockBound {
    pub fn add(&mut self, name_len: usize) {
        let r = rec_len(name_len);
        self.rec_bytes += r as u64;
        self.max_rec = self.max_rec.max(r);
    }

    /// 1 when the entries fit in one linear block; else at least what [`Index::blocks`] says
    /// (and what a linear directory of these entries needs, for the fallback). Every leaf but
    /// the last holds more than `usable - max(slack, longest record)` bytes of records.
    pub fn blocks(&self, block_size: u32, csum: bool) -> u64 {
        let p = IndexParams {
            block_size,
            csum,
            hash_version: 0,
        };
        if p.fits_one_block(self.rec_bytes) {
            return 1;
        }
        let full = (p.usable() - p.slack().max(self.max_rec) + 1) as u64;
        let leaves = self.rec_bytes / full + 1;
        let (rl, nl) = (p.root_limit() as u64, p.node_limit() as u64);
        let nodes = if leaves <= rl { 0 } else { leaves.div_ceil(nl) };
        1 + nodes + leaves
    }
}

#[cfg(test)]
mod tests;
