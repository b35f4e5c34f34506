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
mod tests {
    use super::*;
    use ext2fs::{DirHash, HashVersion};
    use std::collections::BTreeMap;

    /// The blocks of the index of `entries`, in logical order (each made exactly once).
    fn indexed_blocks(
        ino: Ino,
        parent: Ino,
        entries: &[Child],
        p: &IndexParams,
        hash: &dyn Fn(&[u8]) -> NameHash,
    ) -> Option<Vec<Vec<u8>>> {
        let index = Index::plan(&entries, p, hash)?;
        let mut blocks: Vec<Option<Vec<u8>>> = vec![None; index.blocks() as usize];
        index
            .write(ino, parent, &entries, p, &mut |lblk, b| {
                let slot = &mut blocks[lblk as usize];
                assert!(slot.is_none(), "block {lblk} made twice");
                *slot = Some(b.to_vec());
                Ok(())
            })
            .unwrap();
        Some(
            blocks
                .into_iter()
                .map(|b| b.expect("every block made"))
                .collect(),
        )
    }

    fn u16_at(b: &[u8], o: usize) -> usize {
        u16::from_le_bytes([b[o], b[o + 1]]) as usize
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    /// The (hash, block) entries of a dx block whose countlimit is at `at`, checking its limit;
    /// the first entry's hash is `lo`.
    fn dx_entries(b: &[u8], at: usize, p: &IndexParams, lo: u32) -> Vec<(u32, u32)> {
        let (limit, count) = (u16_at(b, at), u16_at(b, at + 2));
        assert_eq!(limit, (p.bs() - at - p.dx_tail()) / 8);
        assert!(count >= 1 && count <= limit, "count {count} limit {limit}");
        let e: Vec<(u32, u32)> = (0..count)
            .map(|i| {
                (
                    if i == 0 { lo } else { u32_at(b, at + 8 * i) },
                    u32_at(b, at + 8 * i + 4),
                )
            })
            .collect();
        assert!(e.windows(2).all(|w| w[0].0 <= w[1].0), "dx hashes decrease");
        if p.csum {
            assert!(
                b[at + 8 * limit..].iter().all(|&x| x == 0),
                "dx_tail space used"
            );
        }
        e
    }

    /// A leaf's live records (name -> (inode, type)), checking that the records tile the block.
    fn leaf(b: &[u8], p: &IndexParams) -> Vec<(Vec<u8>, Ino, u8)> {
        let (mut o, mut out) = (0, Vec::new());
        while o < p.usable() {
            let (ino, rl, nl) = (u32_at(b, o), u16_at(b, o + 4), b[o + 6] as usize);
            assert!(
                rl >= rec_len(nl) && rl % 4 == 0 && nl > 0 && ino != 0,
                "bad record at {o}"
            );
            out.push((b[o + 8..o + 8 + nl].to_vec(), ino, b[o + 7]));
            o += rl;
        }
        assert_eq!(o, p.usable());
        if p.csum {
            assert_eq!(&b[o..o + 8], &[0, 0, 0, 0, 12, 0, 0, 0xDE]);
        }
        out
    }

    /// Checks the whole structure of directory 12 in directory 2, and looks every name up as the kernel's dx_probe and
    /// htree_next_block do. Returns the index depth.
    fn check(
        blocks: &[Vec<u8>],
        p: &IndexParams,
        entries: &[Child],
        h: &dyn Fn(&[u8]) -> NameHash,
    ) -> u8 {
        let r = &blocks[0];
        assert_eq!(
            (u32_at(r, 0), u16_at(r, 4), &r[6..9]),
            (12, 12, &[1, FileType::Directory.dirent_byte(), b'.'][..])
        );
        assert_eq!(
            (u32_at(r, 12), u16_at(r, 16), &r[18..22]),
            (
                2,
                p.bs() - 12,
                &[2, FileType::Directory.dirent_byte(), b'.', b'.'][..]
            )
        );
        assert_eq!(&r[24..32], &[0, 0, 0, 0, p.hash_version, 8, r[30], 0]);
        let levels = r[30];
        let top = dx_entries(r, ROOT_ENTRIES, p, 0);
        // (start hash, leaf block) over the whole index, in order.
        let mut index = Vec::new();
        let mut nodes = 0;
        for (i, &(lo, blk)) in top.iter().enumerate() {
            if levels == 0 {
                index.push((lo, blk));
                continue;
            }
            nodes += 1;
            let n = &blocks[blk as usize];
            assert_eq!((u32_at(n, 0), u16_at(n, 4), n[6]), (0, p.bs(), 0));
            let e = dx_entries(n, NODE_ENTRIES, p, lo);
            if i + 1 < top.len() {
                assert_eq!(e.len(), p.node_limit(), "only the last node is partly full");
            }
            index.extend(e);
        }
        assert!(index.windows(2).all(|w| w[0].0 <= w[1].0));
        let leaf_blocks: Vec<u32> = index.iter().map(|e| e.1).collect();
        assert_eq!(leaf_blocks, (1..=index.len() as u32).collect::<Vec<_>>());
        assert_eq!(
            blocks.len(),
            1 + index.len() + nodes,
            "every block is in the index once"
        );
        let mut seen = BTreeMap::new();
        for (j, &(lo, blk)) in index.iter().enumerate() {
            let hi = index.get(j + 1).map_or(u64::MAX, |e| (e.0 & !1) as u64);
            let mut prev = (0, 0);
            for (name, ino, ft) in leaf(&blocks[blk as usize], p) {
                let hm = h(&name);
                assert!(hm >= prev, "leaf {blk} is not sorted by hash");
                prev = hm;
                let x = hm.0 as u64;
                assert!(x >= (lo & !1) as u64 && (x < hi || (x == hi && index[j + 1].0 & 1 == 1)));
                assert!(seen.insert(name, (ino, ft, j)).is_none(), "a name twice");
            }
        }
        assert_eq!(seen.len(), entries.len());
        for &(name, ino, ft) in entries {
            let &(i, t, at) = seen.get(name).expect("every name is in a leaf");
            assert_eq!((i, t), (ino, ft.dirent_byte()));
            // dx_probe: the last entry whose stored hash is <= the name's hash.
            let x = h(name).0;
            let mut j = index.partition_point(|e| e.0 <= x) - 1;
            while j != at {
                j += 1;
                assert!(
                    j < index.len() && index[j].0 & !1 == x,
                    "lookup of {name:?} fails"
                );
            }
        }
        levels
    }

    fn names(n: usize, long: bool) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| match long {
                true => format!("{i:06}-{}", "long-name-".repeat(i % 25)).into_bytes(),
                false => format!("file-{i}").into_bytes(),
            })
            .collect()
    }

    fn children(names: &[Vec<u8>]) -> Vec<Child<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (&n[..], 100 + i as u32, FileType::Regular))
            .collect()
    }

    fn build(bs: u32, csum: bool, n: usize, long: bool) -> (u8, usize) {
        let hash = DirHash::new(HashVersion::HALF_MD4, false, [7, 8, 9, 10]).unwrap();
        let p = IndexParams {
            block_size: bs,
            csum,
            hash_version: hash.root_version(),
        };
        let names = names(n, long);
        let entries = children(&names);
        let h = |n: &[u8]| hash.hash(n);
        let blocks = indexed_blocks(12, 2, &entries, &p, &h).expect("indexed");
        assert!(blocks.iter().all(|b| b.len() == bs as usize));
        let mut bound = BlockBound::default();
        entries.iter().for_each(|e| bound.add(e.0.len()));
        assert!(
            bound.blocks(bs, csum) >= blocks.len() as u64,
            "the plan's bound is short"
        );
        assert!(
            bound.blocks(bs, csum) <= blocks.len() as u64 * 3 / 2 + 2,
            "the bound is loose"
        );
        (check(&blocks, &p, &entries, &h), blocks.len())
    }

    #[test]
    fn one_level_at_1k_and_4k_with_and_without_csum() {
        for (bs, n) in [(1024, 1000), (4096, 1000), (4096, 30_000)] {
            for csum in [false, true] {
                assert_eq!(build(bs, csum, n, false).0, 0, "bs {bs} n {n}");
                assert_eq!(build(bs, csum, n / 4, true).0, 0);
            }
        }
    }

    #[test]
    fn two_levels_at_1k_and_4k() {
        // 200,000 short names at 1 KiB: ~4,000 leaves under ~32 dx_nodes.
        let (levels, blocks) = build(1024, true, 200_000, false);
        assert_eq!(levels, 1);
        assert!(blocks > 3000, "{blocks}");
        assert_eq!(build(1024, false, 20_000, false).0, 1);
        for csum in [false, true] {
            assert_eq!(build(4096, csum, 30_000, true).0, 1);
        }
    }

    #[test]
    fn small_directories_stay_linear() {
        let hash = DirHash::new(HashVersion::HALF_MD4, false, [0; 4]).unwrap();
        let h = |n: &[u8]| hash.hash(n);
        for (bs, csum) in [(1024, false), (1024, true), (4096, true)] {
            let p = IndexParams {
                block_size: bs,
                csum,
                hash_version: 1,
            };
            let usable = p.usable();
            // Names of 8 bytes take 16-byte records: fill the block exactly, then one more.
            let fit = (usable - 24) / 16;
            let names: Vec<Vec<u8>> = (0..=fit).map(|i| format!("n{i:07}").into_bytes()).collect();
            let entries = children(&names);
            assert!(indexed_blocks(12, 2, &entries[..fit], &p, &h).is_none());
            let mut bound = BlockBound::default();
            entries[..fit].iter().for_each(|e| bound.add(e.0.len()));
            assert_eq!(bound.blocks(bs, csum), 1);
            let blocks = indexed_blocks(12, 2, &entries, &p, &h).expect("two linear blocks' worth");
            assert_eq!(check(&blocks, &p, &entries, &h), 0);
            assert_eq!(blocks.len(), 3, "root and two leaves at 80%");
        }
    }

    #[test]
    fn equal_hashes_spanning_leaves_are_marked_as_continuations() {
        // A bad hash: 600 names share each of a few values, so runs span many leaves.
        let h = |n: &[u8]| ((n.len() as u32 % 3) * 0x1000_0000, 0);
        let names = names(3000, false);
        let entries = children(&names);
        for csum in [false, true] {
            let p = IndexParams {
                block_size: 1024,
                csum,
                hash_version: 1,
            };
            let blocks = indexed_blocks(12, 2, &entries, &p, &h).unwrap();
            check(&blocks, &p, &entries, &h);
            let starts: Vec<u32> = (1..u16_at(&blocks[0], ROOT_ENTRIES + 2))
                .map(|i| u32_at(&blocks[0], ROOT_ENTRIES + 8 * i))
                .collect();
            assert!(starts.iter().filter(|&&s| s & 1 == 1).count() > 10);
        }
    }

    #[test]
    fn too_many_leaves_for_one_level_falls_back_to_linear() {
        let h = |n: &[u8]| (u32::from_le_bytes(n[..4].try_into().unwrap()) & !1, 0);
        let p = IndexParams {
            block_size: 1024,
            csum: true,
            hash_version: 1,
        };
        // 255-byte names: 3 per leaf; 123 × 126 leaves need ~46,500 names.
        let names: Vec<Vec<u8>> = (0..47_000u32)
            .map(|i| [&(i * 2).to_le_bytes()[..], &[b'x'; 251]].concat())
            .collect();
        assert!(indexed_blocks(12, 2, &children(&names), &p, &h).is_none());
        assert!(indexed_blocks(12, 2, &children(&names[..40_000]), &p, &h).is_some());
    }
}
